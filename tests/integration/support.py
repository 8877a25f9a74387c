"""Drive the real daemon as a client would: a subprocess, HTTP, SSE, contract checks.

- :class:`Daemon` starts ``orchestratord serve --config FILE`` as a subprocess (stdout and
  stderr to files), waits for ``/readyz`` (recording every answer it saw on the way), and
  stops it with SIGTERM (SIGKILL only as a last resort), checking that the llama.cpp
  engine it launched is gone too.
- :class:`Client` is an ``httpx.Client`` whose every response is validated against the
  contracts with openapi-core (lifted from ``tests/server/conftest.py``), plus helpers for
  tasks, streams, health and metrics.
- :func:`parse_frames` / :func:`check_transcript` read ``id: N\\nevent: X\\ndata: {json}\\n\\n``
  frames and validate each event's data with the generated pydantic models.

Nothing here sleeps for a fixed time to wait for the daemon: :func:`wait_until` polls with a
bounded timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from orchestratord_server.generated.models import (
    EmbeddingEvent,
    EndEvent,
    ErrorEvent,
    MetricsEvent,
    StartedEvent,
    TokenEvent,
)
from tests.support.contract import assert_conforms

DATA_KEY = "integration-data-key-7f3a"
POOL_ID = "tiny"
MODEL_REF = "tiny-random"
ENGINE = "llamacpp"
#: Context of the pool and of each engine slot in the standard test daemons. The tiny
#: model decodes thousands of tokens a second at short contexts; a long context keeps a
#: 16k-token task running for tens of seconds, long enough to cancel or abandon it.
LONG_CTX = 16_384
LONG_MAX_TOKENS = 16_000
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
#: The ORCH-3027 fields every task log record carries (null where not applicable).
ORCH_3027_FIELDS = (
    "job_id",
    "session_id",
    "client_id",
    "engine",
    "pool_id",
    "replica_id",
    "model_id",
    "quant",
    "ctx",
    "tensor_split",
    "engine_version",
    "sampler_profile_version",
    "kv_warmth",
    "queue_time_ms",
    "decode_time_ms",
    "tokens_in",
    "tokens_out",
    "eviction_events",
    "oom_events",
    "driver_reset_events",
)
EVENT_MODELS: dict[str, type[BaseModel]] = {
    "started": StartedEvent,
    "token": TokenEvent,
    "embedding": EmbeddingEvent,
    "metrics": MetricsEvent,
    "end": EndEvent,
    "error": ErrorEvent,
}
TERMINAL_EVENTS = ("end", "error")


# -- small helpers ---------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free right now (the daemon binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(interval)


def derived_seed(task_id: str) -> int:
    """ORCH-3045's stable seed of a task id, computed independently of the daemon."""
    digest = hashlib.sha256(str(task_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def new_id() -> str:
    return str(uuid.uuid4())


def task_body(**overrides: Any) -> dict[str, Any]:
    """A valid completion TaskRequest for the tiny pool; fields overridable."""
    body: dict[str, Any] = {
        "task_id": new_id(),
        "session_id": new_id(),
        "workload": "completion",
        "model_ref": MODEL_REF,
        "engine": ENGINE,
        "ctx": 1024,
        "priority": "interactive",
        "prompt": "Once upon a time",
        "max_tokens": 16,
        "deadline_ms": 120_000,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def long_task_body(**overrides: Any) -> dict[str, Any]:
    """A task that runs for tens of seconds on the tiny model unless stopped."""
    return task_body(**{"ctx": LONG_CTX, "max_tokens": LONG_MAX_TOKENS, **overrides})


def tiny_pool_config(
    model_path: Path,
    *,
    pool_ctx: int = LONG_CTX,
    slots: int = 2,
    ctx_per_slot: int = LONG_CTX,
    capacity: int = 4,
    model: str = MODEL_REF,
    launch_model: bool = True,
) -> dict[str, Any]:
    """One CPU pool of llama.cpp on ``model_path``, launched by the daemon itself."""
    launch: dict[str, Any] = {"slots": slots, "ctx_per_slot": ctx_per_slot, "threads": 1}
    if launch_model:
        launch["model_path"] = str(model_path)
    return {
        "id": POOL_ID,
        "engine": ENGINE,
        "model": model,
        "ctx": pool_ctx,
        "device_kind": "cpu",
        "devices": [0],
        "queue": {"capacity": capacity, "full_policy": "reject"},
        "timeouts": {"wall_ms": 180_000, "idle_ms": 60_000},
        "replicas": [{"id": "r0", "launch": launch}],
    }


def daemon_config(pool: dict[str, Any], port: int | None = None) -> dict[str, Any]:
    return {
        "allow_cpu_pools": True,
        "server": {"port": port or free_port(), "log_format": "json", "log_level": "info"},
        "auth": {"api_keys": [DATA_KEY]},
        "pools": [pool],
    }


# -- SSE -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    id: int
    event: str
    data: dict[str, Any]
    raw: bytes

    @property
    def event_bytes(self) -> bytes:
        """The frame as sent, but for its `id:` line: the id is the event's place in its
        own task's transcript, so only this part can match another task's frame."""
        return self.raw.split(b"\n", 1)[1]


def parse_frame(raw: bytes) -> Frame:
    """One ``id: N\\nevent: X\\ndata: {json}`` frame (the blank line already split off).

    The contract allows exactly these three lines per frame: the id a decimal number
    without leading zeros, the data a one-line JSON object valid against the event's
    schema.
    """
    lines = raw.decode("utf-8").split("\n")
    assert len(lines) == 3, f"a frame is one id, one event and one data line: {raw!r}"
    id_line, event_line, data_line = lines
    assert id_line.startswith("id: "), raw
    event_id = id_line.removeprefix("id: ")
    assert re.fullmatch("0|[1-9][0-9]*", event_id), raw
    assert event_line.startswith("event: "), raw
    assert data_line.startswith("data: "), raw
    event = event_line.removeprefix("event: ")
    assert event in EVENT_MODELS, f"unknown event {event!r}"
    payload = data_line.removeprefix("data: ")
    EVENT_MODELS[event].model_validate_json(payload)
    data = json.loads(payload)
    assert isinstance(data, dict), raw
    return Frame(int(event_id), event, data, raw + b"\n\n")


class FrameReader:
    """Incremental SSE parser over byte chunks as they arrive."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""
        self.received = b""

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        while b"\n\n" not in self._buffer:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                assert self._buffer == b"", f"stream ended inside a frame: {self._buffer!r}"
                raise
            self._buffer += chunk
            self.received += chunk
        raw, self._buffer = self._buffer.split(b"\n\n", 1)
        return parse_frame(raw)


def parse_frames(data: bytes) -> list[Frame]:
    return list(FrameReader([data]))


@dataclass
class Transcript:
    """A whole stream of one task, checked for the ORCH-2002 invariants."""

    frames: list[Frame]

    @property
    def events(self) -> list[str]:
        return [f.event for f in self.frames]

    @property
    def started(self) -> dict[str, Any] | None:
        return self.frames[0].data if self.frames and self.frames[0].event == "started" else None

    @property
    def tokens(self) -> list[dict[str, Any]]:
        return [f.data for f in self.frames if f.event == "token"]

    @property
    def text(self) -> str:
        return "".join(t["t"] for t in self.tokens)

    @property
    def terminal(self) -> Frame:
        return self.frames[-1]

    @property
    def raw(self) -> bytes:
        return b"".join(f.raw for f in self.frames)


def _check_metrics(transcript: Transcript) -> None:
    """`metrics` events: one right after the first token, one right before the terminal
    event of a task that started, none for one that never did; `tokens_out` never falls
    and counts the tokens sent before it."""
    events = transcript.events
    if "started" not in events:
        assert "metrics" not in events, events
        return
    assert events[-2] == "metrics", f"a metrics event must precede the terminal one: {events}"
    if "token" in events:
        first = events.index("token")
        assert events[first + 1] == "metrics", f"metrics must follow the first token: {events}"
    sent = 0
    counts = []
    for frame in transcript.frames:
        if frame.event == "token":
            sent += 1
        elif frame.event == "metrics":
            assert frame.data["tokens_out"] == sent, (frame.data, sent)
            counts.append(frame.data["tokens_out"])
    assert counts == sorted(counts), counts


def check_transcript(frames: list[Frame], *, task_id: str | None = None) -> Transcript:
    """Assert the event order of ORCH-2002 and return the transcript.

    Frame ids 0, 1, 2... in order, ``started`` first (a task canceled or failed while
    still queued has none, ORCH-3017), tokens indexed 0, 1, 2... with no gap, the
    ``metrics`` events where they belong, exactly one terminal event and it is last, and
    an ``end``'s ``tokens_out`` equal to the number of token events.
    """
    assert frames, "empty stream"
    assert [f.id for f in frames] == list(range(len(frames))), "ids must be 0, 1, 2... in order"
    transcript = Transcript(frames)
    events = transcript.events
    terminals = [i for i, e in enumerate(events) if e in TERMINAL_EVENTS]
    assert terminals == [len(events) - 1], f"exactly one terminal event, last: {events}"
    assert events.count("started") <= 1, events
    if "started" in events:
        assert events[0] == "started", f"started must come first: {events[:3]}"
        if task_id is not None:
            assert transcript.started is not None
            assert transcript.started["task_id"] == task_id
    else:
        assert not transcript.tokens, "tokens without a started event"
    indexes = [t["i"] for t in transcript.tokens]
    assert indexes == list(range(len(indexes))), "token indexes must be 0, 1, 2... no gaps"
    _check_metrics(transcript)
    terminal = transcript.terminal
    if terminal.event == "end":
        assert terminal.data["tokens_out"] == len(indexes), (
            f"end.tokens_out {terminal.data['tokens_out']} != {len(indexes)} token events"
        )
    return transcript


# -- the client ------------------------------------------------------------------------

_DEFAULT = object()


class Stream:
    """An open SSE response, read frame by frame; leaving ``open_stream`` drops it."""

    def __init__(self, response: httpx.Response, task_id: str) -> None:
        self.response = response
        self.task_id = task_id
        self.reader = FrameReader(response.iter_raw())
        self.frames: list[Frame] = []

    def next_frame(self) -> Frame:
        frame = next(self.reader)
        self.frames.append(frame)
        return frame

    def read_until(self, predicate: Callable[[Frame], bool]) -> Frame:
        while True:
            frame = self.next_frame()
            if predicate(frame):
                return frame

    def read_rest(self) -> list[Frame]:
        """Read to the end of the response and check it against the contract; every frame
        read on this stream (of a resumed stream: the transcript's rest, not all of it)."""
        for frame in self.reader:
            self.frames.append(frame)
        assert_conforms(self.response, self.reader.received)
        return self.frames

    def read_all(self) -> Transcript:
        """Read to the end of the response; check the whole transcript and the contract."""
        return check_transcript(self.read_rest(), task_id=self.task_id)


class Client:
    """A client of one daemon; every response is checked against the contracts."""

    def __init__(self, base_url: str, key: str | None = DATA_KEY) -> None:
        self.base_url = base_url
        self.key = key
        self.http = httpx.Client(base_url=base_url, timeout=httpx.Timeout(30.0, read=90.0))
        self.submitted: list[str] = []

    def close(self) -> None:
        self.http.close()

    def _headers(self, key: Any, headers: dict[str, str] | None) -> dict[str, str]:
        merged = dict(headers or {})
        use = self.key if key is _DEFAULT else key
        if use is not None:
            merged.setdefault("Authorization", f"Bearer {use}")
        return merged

    def request(
        self, method: str, path: str, *, key: Any = _DEFAULT, check: bool = True, **kwargs: Any
    ) -> httpx.Response:
        headers = self._headers(key, kwargs.pop("headers", None))
        response = self.http.request(method, path, headers=headers, **kwargs)
        if check:
            assert_conforms(response)
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    # -- tasks

    def submit(self, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        response = self.post("/v1/tasks", json=body, **kwargs)
        if response.status_code == 202:
            self.submitted.append(str(body["task_id"]))
        return response

    def admit(self, body: dict[str, Any]) -> dict[str, Any]:
        """Submit and insist on 202; return the admission body."""
        response = self.submit(body)
        assert response.status_code == 202, response.text
        admission: dict[str, Any] = response.json()
        return admission

    def cancel(self, task_id: str) -> httpx.Response:
        return self.post(f"/v1/tasks/{task_id}/cancel")

    @contextlib.contextmanager
    def open_stream(
        self, task_id: str, http: httpx.Client | None = None, *, last_event_id: int | None = None
    ) -> Iterator[Stream]:
        """The task's stream; with ``last_event_id``, resumed after that event."""
        client = http or self.http
        resume = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        headers = self._headers(_DEFAULT, resume)
        with client.stream("GET", f"/v1/tasks/{task_id}/stream", headers=headers) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = Stream(response, task_id)
            yield stream
            # Status, headers and what was read (all of it, or up to a deliberate close).
            if stream.reader.received:
                assert_conforms(response, stream.reader.received)

    def transcript(self, task_id: str) -> Transcript:
        """The task's whole stream, read to its end (blocks while the task runs)."""
        with self.open_stream(task_id) as stream:
            return stream.read_all()

    def run(self, body: dict[str, Any]) -> Transcript:
        """Submit, then read the stream to its end."""
        self.admit(body)
        return self.transcript(str(body["task_id"]))

    # -- pools and metrics

    def health(self, pool_id: str = POOL_ID) -> dict[str, Any]:
        response = self.get(f"/v1/pools/{pool_id}/health")
        assert response.status_code == 200, response.text
        health: dict[str, Any] = response.json()
        return health

    def idle(self, pool_id: str = POOL_ID) -> bool:
        metrics = self.health(pool_id)["metrics"]
        return bool(
            metrics["running"] == 0
            and metrics["queue_depth"] == 0
            and metrics["slots_free"] == metrics["slots_total"]
        )

    def wait_idle(self, timeout: float = 15.0) -> None:
        wait_until(self.idle, timeout=timeout, interval=0.1, what="the pool to be idle")

    def metrics(self) -> Metrics:
        response = self.get("/metrics", key=None)
        assert response.status_code == 200, response.text
        return Metrics.parse(response.text)

    def cancel_all(self) -> None:
        """Cancel every task this client had admitted (204 for finished ones too)."""
        for task_id in self.submitted:
            response = self.cancel(task_id)
            assert response.status_code in (204, 404), response.text


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Metrics:
    """A parsed /metrics scrape."""

    samples: list[Sample]
    text: str

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = [
            Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
        return cls(samples, text)

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )


# -- the daemon process ----------------------------------------------------------------


def orchestratord_command() -> list[str]:
    script = Path(sys.executable).parent / "orchestratord"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "orchestratord_server"]


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_alive(pid: int, marker: str) -> bool:
    """True while ``pid`` runs (not a zombie) and its command line holds ``marker``."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X") and marker in command_line(pid)


ENGINE_MARKER = "xllamacpp_runner"
#: Variables of the test's environment a daemon does not inherit: its keys and log
#: settings come from its config (and the ``env`` a test gives it).
DAEMON_ENV_UNSET = frozenset({"ORCHD_API_KEY", "ORCHD_LOG_FORMAT", "ORCHD_LOG_LEVEL"})


class Daemon:
    """One ``orchestratord serve --config FILE`` subprocess, with ``args`` after it and
    ``env`` added to the test's environment."""

    def __init__(
        self,
        workdir: Path,
        config: dict[str, Any],
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.config = config
        self.args = tuple(args)
        self.env = dict(env or {})
        self.port = int(config["server"]["port"])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "config.yaml"
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.engine_pids: list[int] = []
        #: (seconds since spawn, response or None when not listening) of each /readyz poll.
        self.readyz_history: list[tuple[float, httpx.Response | None]] = []
        self.exit_code: int | None = None
        self.killed = False
        self._clients: list[Client] = []

    # -- life cycle

    def start(self, ready_timeout: float = READY_TIMEOUT_S, *, wait_ready: bool = True) -> Daemon:
        """Spawn the daemon; wait for /readyz 200 (or only /livez with ``wait_ready=False``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config), encoding="utf-8")
        inherited = {k: v for k, v in os.environ.items() if k not in DAEMON_ENV_UNSET}
        env = inherited | self.env
        began = time.monotonic()
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                [
                    *orchestratord_command(),
                    "serve",
                    "--config",
                    str(self.config_path),
                    *self.args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
            )
        launches = any(
            replica.get("launch") is not None
            for pool in self.config["pools"]
            for replica in pool["replicas"]
        )
        try:
            self._wait_ready(began, ready_timeout, "/readyz" if wait_ready else "/livez")
            if launches and wait_ready:
                self.engine_pids = wait_until(
                    lambda: [p for p in child_pids(self.pid) if ENGINE_MARKER in command_line(p)],
                    timeout=10,
                    what="the launched engine process",
                )
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _wait_ready(self, began: float, timeout: float, route: str) -> None:
        """Poll ``route`` every 20 ms until 200, recording each /readyz answer."""
        assert self.process is not None
        deadline = began + timeout
        with httpx.Client(base_url=self.base_url, timeout=2.0) as http:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"the daemon exited with {self.process.returncode} before it was "
                        f"ready:\n{self.stderr_tail()}"
                    )
                try:
                    response: httpx.Response | None = http.get(route)
                except httpx.TransportError:
                    response = None
                if route == "/readyz":
                    self.readyz_history.append((time.monotonic() - began, response))
                if response is not None and response.status_code == 200:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{route} was not 200 within {timeout:g}s:\n{self.stderr_tail()}"
                    )
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, wait; SIGKILL only if it will not stop. Engines are waited for too."""
        for client in self._clients:
            client.close()
        process = self.process
        if process is None or self.exit_code is not None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.killed = True
                process.kill()
                process.wait(STOP_TIMEOUT_S)
        self.exit_code = process.returncode
        # A launched engine dies with its daemon; give it a bounded moment to go.
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not self.live_engines(), timeout=10, interval=0.05)

    def live_engines(self) -> list[int]:
        return [pid for pid in self.engine_pids if process_alive(pid, ENGINE_MARKER)]

    def kill_orphans(self) -> list[int]:
        """SIGKILL engines that outlived the daemon (never leave one on the machine)."""
        leftovers = self.live_engines()
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return leftovers

    def assert_stopped_cleanly(self) -> None:
        """The daemon obeyed SIGTERM and left no engine process behind."""
        leftovers = self.kill_orphans()
        assert not leftovers, f"orphaned engine processes after shutdown: {leftovers}"
        assert not self.killed, f"the daemon ignored SIGTERM for {STOP_TIMEOUT_S:g}s"
        # uvicorn re-raises a captured SIGTERM after its graceful shutdown, so the process
        # ends by that signal (-15); 0 is fine too. Anything else is a crash.
        assert self.exit_code in (0, -signal.SIGTERM), (
            f"exit status {self.exit_code}:\n{self.stderr_tail()}"
        )

    # -- access

    def client(self, key: str | None = DATA_KEY) -> Client:
        client = Client(self.base_url, key)
        self._clients.append(client)
        return client

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr_tail(self, lines: int = 40) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def log_records(self) -> list[dict[str, Any]]:
        """Every JSON log line of stderr (json log format)."""
        records = []
        for line in self.stderr_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def engine_url(self) -> str:
        """The base URL of the launched engine, as the daemon logged it."""
        for record in self.log_records():
            if record.get("event") == "replica.start":
                return str(record["url"])
        raise AssertionError("the daemon did not log its engine's URL")


def engine_busy_slots(daemon: Daemon) -> int:
    """Slots of the launched llama.cpp server that are processing, asked of the engine."""
    response = httpx.get(daemon.engine_url() + "/slots", timeout=10)
    assert response.status_code == 200, response.text
    return sum(1 for slot in response.json() if slot.get("is_processing"))


def wait_engine_idle(daemon: Daemon, timeout: float = 15.0) -> None:
    """The engine itself has stopped generating (its request was really closed)."""
    wait_until(
        lambda: engine_busy_slots(daemon) == 0,
        timeout=timeout,
        interval=0.1,
        what="the engine's slots to be free",
    )


@contextlib.contextmanager
def running_daemon(
    workdir: Path,
    config: dict[str, Any],
    *,
    wait_ready: bool = True,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[Daemon]:
    """A started daemon; on exit it is stopped and checked to leave nothing behind."""
    daemon = Daemon(workdir, config, args=args, env=env)
    daemon.start(wait_ready=wait_ready)
    try:
        yield daemon
    finally:
        daemon.stop()
    daemon.assert_stopped_cleanly()
