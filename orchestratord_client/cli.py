"""The client subcommands of `orchestratord`: submit, task, cancel, session, pools, drain, reload,
events, status and metrics, next to the daemon's own `serve`. The light distribution
(`orchestratord-client`, without the daemon) runs them through `main`.

The daemon's URL comes from `--url` or `$ORCHD_URL` (default http://127.0.0.1:8080), the
key from `--key` or `$ORCHD_API_KEY`. Exit codes: 0 success; 2 usage or client error (a
4xx other than 429); 3 backpressure (429 or 503, after the retries asked for, or a task
evicted from a full queue); 4 server or engine failure (5xx, including 501 for a
workload this deployment does not provide, a stream that ends with `error`, a daemon
that cannot be reached); 1 anything unexpected; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import httpx
from pydantic import ValidationError

from orchestratord_client import render
from orchestratord_client.client import Client
from orchestratord_client.errors import (
    Backpressure,
    ClientError,
    OrchestratordError,
    ServerError,
    StreamInterrupted,
)
from orchestratord_client.generated.models import (
    EndEvent,
    Engine,
    ErrorEvent,
    ErrorKind,
    FinishReason,
    MetricsEvent,
    PoolStats,
    Priority,
    ReplicaSet,
    TokenEvent,
)
from orchestratord_client.protocol import DEFAULT_URL, KEY_ENV, URL_ENV, base_url
from orchestratord_client.retry import retrying
from orchestratord_client.sse import TERMINAL, StreamEvent
from orchestratord_client.tasks import (
    DEFAULT_CTX,
    DEFAULT_DEADLINE_MS,
    DEFAULT_MAX_TOKENS,
    completion,
)

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_CLIENT = 2
EXIT_BACKPRESSURE = 3
EXIT_SERVER = 4
EXIT_INTERRUPTED = 130

#: Stream error codes that mean "no room, try later" rather than a failure.
EVICTED = frozenset({ErrorKind.ADMISSION_REJECT, ErrorKind.QUEUE_FULL_DROP_LRU})
DEFAULT_DRAIN_DEADLINE_MS = 30_000

Command = Callable[[Client, argparse.Namespace], int]


class UsageError(Exception):
    """A request the CLI cannot build from its arguments."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client subcommands to the `orchestratord` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the daemon's URL (default: ${URL_ENV}, else {DEFAULT_URL})")
    common.add_argument("--key", help=f"API key (default: ${KEY_ENV})")
    common.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default 30)"
    )

    def add(name: str, command: Command, help: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(client_command=command)
        return parser

    submit = add("submit", _submit, "submit a completion and stream its tokens to stdout")
    submit.add_argument("prompt", nargs="?", help="the prompt (default: read stdin; - too)")
    submit.add_argument("--model", help="model_ref (default: the first replica set's)")
    submit.add_argument(
        "--engine", choices=[e.value for e in Engine], help="default: the replica set's"
    )
    submit.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    submit.add_argument("--ctx", type=int, default=DEFAULT_CTX, help="context length, tokens")
    submit.add_argument(
        "--priority", choices=[p.value for p in Priority], default=Priority.INTERACTIVE.value
    )
    submit.add_argument("--seed", type=int)
    submit.add_argument("--session", type=uuid.UUID, help="session id (default: a new one)")
    submit.add_argument("--task-id", type=uuid.UUID, help="task id (default: a new one)")
    submit.add_argument("--deadline-ms", type=int, default=DEFAULT_DEADLINE_MS)
    submit.add_argument(
        "--retries", type=int, default=0, help="resubmit after 429/503 this many times"
    )
    submit.add_argument("--json", action="store_true", help="print each event as a JSON line")
    submit.add_argument(
        "--detach", action="store_true", help="print the task id and exit; do not stream"
    )

    task = add("task", _task, "show where a task is; a queued one's predicted start now")
    task.add_argument("task_id", type=uuid.UUID)
    task.add_argument("--json", action="store_true")

    cancel = add("cancel", _cancel, "cancel a queued or running task")
    cancel.add_argument("task_id", type=uuid.UUID)

    session = add("session", _session, "show a session, or delete it")
    session.add_argument("session_id", type=uuid.UUID)
    session.add_argument("--delete", action="store_true", help="forget the session")
    session.add_argument("--json", action="store_true")

    pools = add("pools", _pools, "show replica sets and pool health")
    pools.add_argument("--json", action="store_true")

    drain = add("drain", _drain, "drain a pool")
    drain.add_argument("pool_id")
    drain.add_argument("--deadline-ms", type=int, default=DEFAULT_DRAIN_DEADLINE_MS)

    reload = add("reload", _reload, "reload a pool with another model")
    reload.add_argument("pool_id")
    reload.add_argument("model_ref")

    events = add("events", _events, "follow pools and tasks as they change (Ctrl-C stops)")
    events.add_argument("--json", action="store_true", help="print each event as a JSON line")
    events.add_argument(
        "--stats", action="store_true", help="also print each pool's figures every second"
    )

    status = add("status", _status, "show liveness and readiness (exit 3 when not ready)")
    status.add_argument("--json", action="store_true")

    add("metrics", _metrics, "print the Prometheus metrics")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the light distribution's `orchestratord` command (no `serve`)."""
    parser = argparse.ArgumentParser(
        prog="orchestratord",
        description="Talk to an orchestratord daemon (this install has the client only).",
    )
    parser.add_argument("--version", action="version", version=_version())
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    if not is_client_command(args):
        parser.print_help()
        return EXIT_CLIENT
    return run(args)


def _version() -> str:
    for distribution in ("orchestratord-client", "orchestratord"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return f"orchestratord client {metadata.version(distribution)}"
    return "orchestratord client (version unknown)"


def is_client_command(args: argparse.Namespace) -> bool:
    return getattr(args, "client_command", None) is not None


def run(args: argparse.Namespace) -> int:
    """Run the parsed client subcommand; its exit code."""
    command: Command = args.client_command
    try:
        with Client(args.url, args.key, timeout=args.timeout) as client:
            return command(client, args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as Unix tools do; closing
        # the stream cancels a task nobody reads any more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except UsageError as exc:
        return _fail(EXIT_CLIENT, str(exc))
    except Backpressure as exc:
        hint = f" (retry in {exc.backoff_ms} ms)" if exc.backoff_ms is not None else ""
        return _fail(EXIT_BACKPRESSURE, exc.describe() + hint)
    except ClientError as exc:
        return _fail(EXIT_CLIENT, exc.describe())
    except ServerError as exc:
        return _fail(EXIT_SERVER, exc.describe())
    except OrchestratordError as exc:
        return _fail(EXIT_UNEXPECTED, exc.describe())
    except StreamInterrupted as exc:
        return _fail(EXIT_SERVER, str(exc))
    except httpx.TransportError as exc:
        return _fail(EXIT_SERVER, f"cannot reach the daemon at {base_url(args.url)}: {exc}")


def _fail(code: int, message: str) -> int:
    print(f"orchestratord: error: {message}", file=sys.stderr)
    return code


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# -- submit


def _prompt(args: argparse.Namespace) -> str:
    prompt = sys.stdin.read() if args.prompt in (None, "-") else args.prompt
    if not prompt:
        raise UsageError("no prompt: pass it as an argument or on stdin")
    return str(prompt)


def _target(client: Client, args: argparse.Namespace) -> tuple[str, str]:
    """model_ref and engine: as given, else those of the first replica set that fits."""
    if args.model is not None and args.engine is not None:
        return args.model, args.engine

    def fits(s: ReplicaSet) -> bool:
        return args.engine in (None, s.engine.value) and args.model in (None, s.model_ref)

    for replica_set in client.replica_sets():
        if fits(replica_set) and replica_set.model_ref is not None:
            return replica_set.model_ref, replica_set.engine.value
    raise UsageError("no replica set serves that model and engine; pass --model and --engine")


def _submit(client: Client, args: argparse.Namespace) -> int:
    prompt = _prompt(args)
    model_ref, engine = _target(client, args)
    try:
        request = completion(
            prompt,
            model_ref=model_ref,
            engine=engine,
            max_tokens=args.max_tokens,
            ctx=args.ctx,
            priority=args.priority,
            deadline_ms=args.deadline_ms,
            session_id=args.session,
            task_id=args.task_id,
            seed=args.seed,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"invalid task: {problems}") from exc

    def told(refusal: Backpressure, wait_s: float) -> None:
        print(f"orchestratord: {refusal.describe()}; retrying in {wait_s:.2f} s", file=sys.stderr)

    admission = retrying(
        lambda: client.submit(request), attempts=max(args.retries, 0) + 1, on_retry=told
    )
    if args.detach:
        _emit(
            (render.json_line(render.plain(admission)) if args.json else str(admission.task_id))
            + "\n"
        )
        return EXIT_OK
    print(
        f"orchestratord: task {admission.task_id} admitted at queue position "
        f"{admission.queue_position}",
        file=sys.stderr,
    )
    try:
        return _follow(client, str(request.task_id), json_lines=args.json)
    except KeyboardInterrupt:
        with contextlib.suppress(OrchestratordError, httpx.TransportError):
            client.cancel(request.task_id)
        raise


def _follow(client: Client, task_id: str, *, json_lines: bool) -> int:
    """Print the stream as it arrives; the exit code its terminal event means.

    A TaskStream ends only after its terminal event (else it raises StreamInterrupted).
    """
    wrote_text = False
    last: StreamEvent | None = None
    # People are told how the wait goes; JSON lines stay the transcript's events.
    with client.stream(task_id, queue_updates=not json_lines) as stream:
        for last in stream:
            if json_lines:
                _emit(render.event_line(last) + "\n")
            elif isinstance(last, TokenEvent):
                _emit(last.t)
                wrote_text = True
            elif isinstance(last, MetricsEvent) and (line := render.queue_line(last)):
                print(f"orchestratord: {line}", file=sys.stderr)
    if wrote_text:
        _emit("\n")
    assert isinstance(last, TERMINAL)
    return _ended(last)


def _ended(event: EndEvent | ErrorEvent) -> int:
    if isinstance(event, ErrorEvent):
        code = EXIT_BACKPRESSURE if event.code in EVICTED else EXIT_SERVER
        return _fail(code, f"the task failed: {event.code.value}: {event.message}")
    if event.finish_reason is FinishReason.CANCELED:
        print(
            f"orchestratord: the task was canceled after {event.tokens_out} tokens", file=sys.stderr
        )
    return EXIT_OK


# -- the other commands


def _task(client: Client, args: argparse.Namespace) -> int:
    status = client.task(args.task_id)
    print(render.json_line(render.plain(status)) if args.json else render.task_line(status))
    return EXIT_OK


def _cancel(client: Client, args: argparse.Namespace) -> int:
    client.cancel(args.task_id)
    print(f"canceled {args.task_id}")
    return EXIT_OK


def _session(client: Client, args: argparse.Namespace) -> int:
    if args.delete:
        client.delete_session(args.session_id)
        print(f"deleted session {args.session_id}")
        return EXIT_OK
    info = client.session(args.session_id)
    print(render.json_line(render.plain(info)) if args.json else render.session_table(info))
    return EXIT_OK


def _pools(client: Client, args: argparse.Namespace) -> int:
    sets = client.replica_sets()
    healths = [client.pool_health(p.pool_id) for p in client.readyz().pools]
    if args.json:
        data: dict[str, Any] = {
            "replica_sets": [render.plain(s) for s in sets],
            "pools": [render.plain(h) for h in healths],
        }
        print(json.dumps(data, indent=2))
    else:
        print(render.replica_sets_table(sets))
        print()
        print(render.pools_table(healths))
    return EXIT_OK


def _drain(client: Client, args: argparse.Namespace) -> int:
    accepted = client.drain(args.pool_id, args.deadline_ms)
    print(f"draining {accepted.pool_id} (deadline {accepted.deadline_ms} ms)")
    return EXIT_OK


def _reload(client: Client, args: argparse.Namespace) -> int:
    accepted = client.reload(args.pool_id, args.model_ref)
    print(f"reloading {accepted.pool_id} with {accepted.new_model_ref}")
    return EXIT_OK


def _events(client: Client, args: argparse.Namespace) -> int:
    """Print the control-plane event stream until interrupted (or the daemon ends it)."""
    for event in client.events():
        if args.json:
            _emit(render.event_line(event) + "\n")
        elif args.stats or not isinstance(event, PoolStats):
            _emit("".join(line + "\n" for line in render.control_lines(event)))
    return EXIT_OK


def _status(client: Client, args: argparse.Namespace) -> int:
    live = client.livez()
    readiness = client.readyz()
    if args.json:
        print(render.json_line({"live": render.plain(live), "ready": render.plain(readiness)}))
    else:
        print(f"live: {live.status.value}\nready: {'yes' if readiness.ready else 'no'}\n")
        print(render.readiness_table(readiness))
    return EXIT_OK if readiness.ready else EXIT_BACKPRESSURE


def _metrics(client: Client, args: argparse.Namespace) -> int:
    _emit(client.metrics())
    return EXIT_OK
