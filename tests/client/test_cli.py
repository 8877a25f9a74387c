"""The `orchestratord` client commands, run as a user would (subprocesses), against a real
daemon and llama.cpp engine: output on stdout, messages on stderr, and exit codes that
tell a client error (2), backpressure (3) and a server failure (4) apart.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from orchestratord_client.cli import (
    DEFAULT_DRAIN_DEADLINE_MS,
    EXIT_BACKPRESSURE,
    EXIT_CLIENT,
    EXIT_OK,
    EXIT_SERVER,
)
from tests.client.conftest import CAPACITY, SLOTS, wait_serving
from tests.integration.support import (
    DATA_KEY,
    LONG_CTX,
    LONG_MAX_TOKENS,
    MODEL_REF,
    POOL_ID,
    Daemon,
    free_port,
    long_task_body,
    orchestratord_command,
    wait_until,
)
from tests.integration.support import Client as CheckedClient

pytestmark = pytest.mark.integration

TIMEOUT_S = 60


@pytest.fixture
def env(daemon: Daemon, tracker: CheckedClient) -> Iterator[dict[str, str]]:
    """The environment of a shell where the daemon's URL and key are exported."""
    yield {**os.environ, "ORCHD_URL": daemon.base_url, "ORCHD_API_KEY": DATA_KEY}


def orchestratord(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*orchestratord_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )


def submit_args(tracker: CheckedClient, *extra: str) -> list[str]:
    """`submit` with a fresh task id the tracker will cancel after the test."""
    task_id = str(uuid.uuid4())
    tracker.submitted.append(task_id)
    return ["submit", "--task-id", task_id, "--max-tokens", "16", *extra]


def test_submit_streams_the_text_to_stdout(env: dict[str, str], tracker: CheckedClient) -> None:
    """ORCH-2001, ORCH-2002: `submit PROMPT` (model and engine found from the replica
    sets) prints the generated text, the same as the task's transcript, and exits 0."""
    args = submit_args(tracker, "Once upon a time")
    done = orchestratord(env, *args)
    assert done.returncode == EXIT_OK, done.stderr
    transcript = tracker.transcript(tracker.submitted[-1])
    assert transcript.text
    assert done.stdout == transcript.text + "\n"
    assert tracker.submitted[-1] in done.stderr


def test_submit_json_prints_one_event_per_line(env: dict[str, str], tracker: CheckedClient) -> None:
    """ORCH-2002: `--json` prints each event as a JSON line, in the stream's order."""
    done = orchestratord(env, *submit_args(tracker, "--json", "Once upon a time"))
    assert done.returncode == EXIT_OK, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    events = [line["event"] for line in lines]
    assert events[0] == "started"
    assert lines[0]["data"]["task_id"] == tracker.submitted[-1]
    assert events[-1] == "end"
    tokens = [line["data"] for line in lines if line["event"] == "token"]
    assert [t["i"] for t in tokens] == list(range(len(tokens)))
    assert lines[-1]["data"]["tokens_out"] == len(tokens)
    assert set(events) <= {"started", "token", "metrics", "end"}


def test_a_reader_that_stops_early_ends_the_cli_quietly(
    env: dict[str, str], tracker: CheckedClient
) -> None:
    """`submit --json | head -1`: the CLI stops without a traceback when its reader goes
    away, and exits 0 (as Unix tools do)."""
    args = [*orchestratord_command(), *submit_args(tracker, "--json", "Once upon a time")]
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()
        code = process.wait(timeout=TIMEOUT_S)
        errors = process.stderr.read()
    assert json.loads(first)["event"] == "started"
    assert code == EXIT_OK, errors
    assert "Traceback" not in errors


def test_submit_reads_the_prompt_from_stdin(env: dict[str, str], tracker: CheckedClient) -> None:
    """ORCH-3045: the prompt read from stdin is the same task as the prompt given as an
    argument: with the same seed, the same text."""
    prompt = "The quick brown fox"
    from_arg = orchestratord(env, *submit_args(tracker, "--seed", "7", prompt))
    from_stdin = orchestratord(env, *submit_args(tracker, "--seed", "7"), stdin=prompt)
    assert (from_arg.returncode, from_stdin.returncode) == (EXIT_OK, EXIT_OK), from_stdin.stderr
    assert from_stdin.stdout == from_arg.stdout
    assert from_stdin.stdout.strip()


def test_submit_streams_as_tokens_arrive_and_cancel_stops_it(
    env: dict[str, str], tracker: CheckedClient
) -> None:
    """ORCH-2002, ORCH-2003: text shows up while the task runs; `cancel` from another
    shell ends it and `submit` exits 0 saying it was canceled."""
    task_id = str(uuid.uuid4())
    tracker.submitted.append(task_id)
    args = ["submit", "--task-id", task_id, "--ctx", str(LONG_CTX)]
    args += ["--max-tokens", str(LONG_MAX_TOKENS), "Once upon a time"]
    with subprocess.Popen(
        [*orchestratord_command(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as submit:
        assert submit.stdout is not None
        first = submit.stdout.read1(1)  # type: ignore[attr-defined]
        assert first, "no text while the task runs"
        canceled = orchestratord(env, "cancel", task_id)
        assert canceled.returncode == EXIT_OK, canceled.stderr
        out, err = submit.communicate(timeout=TIMEOUT_S)
    assert submit.returncode == EXIT_OK, err
    assert "canceled" in err.decode()
    transcript = tracker.transcript(task_id)
    assert (first + out).decode() == transcript.text + "\n"
    assert transcript.terminal.data["finish_reason"] == "canceled"


def test_exit_codes_tell_client_errors_backpressure_and_failures_apart(
    env: dict[str, str], tracker: CheckedClient
) -> None:
    """ORCH-2006, ORCH-2007: 400 and 404 exit 2, a full queue (429) exits 3 naming
    ADMISSION_REJECT, a bad key exits 2, and a daemon that cannot be reached exits 4."""
    too_long = orchestratord(env, *submit_args(tracker, "--ctx", str(LONG_CTX * 64), "hi"))
    assert too_long.returncode == EXIT_CLIENT
    assert "INVALID_PARAMS" in too_long.stderr and "body.ctx" in too_long.stderr

    unknown = orchestratord(env, "cancel", str(uuid.uuid4()))
    assert unknown.returncode == EXIT_CLIENT
    assert "NOT_FOUND" in unknown.stderr

    bad_key = orchestratord(env, "pools", "--key", "not-a-key")
    assert bad_key.returncode == EXIT_CLIENT
    assert "UNAUTHORIZED" in bad_key.stderr

    for _ in range(SLOTS + CAPACITY):
        tracker.admit(long_task_body())
    full = orchestratord(env, *submit_args(tracker, "hi"))
    assert full.returncode == EXIT_BACKPRESSURE
    assert "429 ADMISSION_REJECT" in full.stderr

    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = orchestratord(env, "status", "--url", nowhere)
    assert unreachable.returncode == EXIT_SERVER
    assert f"cannot reach the daemon at {nowhere}" in unreachable.stderr


def test_drain_and_reload_take_the_pool_out_of_service_and_back(
    env: dict[str, str], in_service: CheckedClient
) -> None:
    """ORCH-2101, ORCH-2102: `drain POOL` exits 0 printing the deadline that applies (the
    default window) and the pool is draining; `reload POOL MODEL_REF` to the pool's own
    model exits 0 and the pool is Ready on it again; a reload to a model the daemon does
    not know exits 2 naming INVALID_PARAMS and the field."""
    drained = orchestratord(env, "drain", POOL_ID)
    assert drained.returncode == EXIT_OK, drained.stderr
    printed = re.fullmatch(rf"draining {POOL_ID} \(deadline (\d+) ms\)\n", drained.stdout)
    assert printed, drained.stdout
    assert 0 < int(printed[1]) <= DEFAULT_DRAIN_DEADLINE_MS
    health = in_service.health()
    assert (health["draining"], health["ready"]) == (True, False)

    unknown = orchestratord(env, "reload", POOL_ID, "no-such-model")
    assert unknown.returncode == EXIT_CLIENT
    assert "400 INVALID_PARAMS" in unknown.stderr and "body.new_model_ref" in unknown.stderr
    assert in_service.health()["draining"], "a refused reload changes nothing"

    reloaded = orchestratord(env, "reload", POOL_ID, MODEL_REF)
    assert reloaded.returncode == EXIT_OK, reloaded.stderr
    assert reloaded.stdout == f"reloading {POOL_ID} with {MODEL_REF}\n"
    wait_serving(in_service)
    assert in_service.health()["applied_model_ref"] == MODEL_REF


def refusals(tracker: CheckedClient) -> float:
    return tracker.metrics().total("tasks_rejected_total", reason="ADMISSION_REJECT")


def test_submit_retries_until_there_is_room(env: dict[str, str], tracker: CheckedClient) -> None:
    """ORCH-2007: `--retries` resubmits after each 429; once a slot frees up, the task is
    admitted and streamed, and the refusals were reported on stderr."""
    running = [tracker.admit(long_task_body())["task_id"] for _ in range(SLOTS + CAPACITY)]
    before = refusals(tracker)
    with subprocess.Popen(
        [*orchestratord_command(), *submit_args(tracker, "--retries", "1000", "hi")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as submit:
        wait_until(lambda: refusals(tracker) > before, timeout=20, what="a refusal")
        for task_id in running:
            tracker.cancel(task_id)
        out, err = submit.communicate(timeout=TIMEOUT_S)
    assert submit.returncode == EXIT_OK, err
    assert "ADMISSION_REJECT" in err and "retrying" in err
    assert out.strip()


def test_pools_prints_replica_sets_and_pool_health(env: dict[str, str]) -> None:
    """ORCH-2103, ORCH-2104: `pools` shows the replica set (model, engine, load, slots,
    members) and each pool's health as tables."""
    done = orchestratord(env, "pools")
    assert done.returncode == EXIT_OK, done.stderr
    sets, pools = done.stdout.strip().split("\n\n")
    header, row = sets.splitlines()
    assert header.split()[:3] == ["REPLICA", "SET", "ENGINE"]
    assert row.split()[1:3] == ["llamacpp", MODEL_REF]
    assert row.split()[-1] == POOL_ID
    header, row = pools.splitlines()
    assert header.split()[:4] == ["POOL", "LIVE", "READY", "DRAINING"]
    assert row.split()[:7] == [POOL_ID, "yes", "yes", "no", "0", "0", f"{SLOTS}/{SLOTS}"]


def test_task_shows_where_a_task_is_and_when_a_queued_one_starts(
    env: dict[str, str], tracker: CheckedClient
) -> None:
    """ORCH-3029: `task ID` reads a task now: a queued one with its position and the
    predicted start as of now, a running one on its replica; an unknown id exits 2."""
    running, queued = long_task_body(), long_task_body()
    for body in (running, queued):
        tracker.admit(body)
        tracker.submitted.append(body["task_id"])
    wait_until(
        lambda: tracker.health()["metrics"]["running"] == SLOTS, timeout=TIMEOUT_S, what="start"
    )
    shown = orchestratord(env, "task", queued["task_id"], "--json")
    assert shown.returncode == EXIT_OK, shown.stderr
    status = json.loads(shown.stdout)
    assert (status["state"], status["queue_position"]) == ("queued", 0)
    assert status["predicted_start_ms"] >= 1  # behind a task of 16k tokens
    line = orchestratord(env, "task", queued["task_id"]).stdout
    assert f"task {queued['task_id']} ({POOL_ID}, interactive): queued at position 0" in line
    line = orchestratord(env, "task", running["task_id"]).stdout
    assert f"task {running['task_id']} ({POOL_ID}, interactive): " in line
    assert " on " in line and "tokens" in line
    unknown = orchestratord(env, "task", str(uuid.uuid4()))
    assert unknown.returncode == EXIT_CLIENT
    assert "NOT_FOUND" in unknown.stderr


def test_submit_tells_people_how_the_wait_goes(env: dict[str, str], tracker: CheckedClient) -> None:
    """ORCH-3029: a submitted task that waits shows its position and predicted start on
    stderr (the stream's queue updates), then its text on stdout once it runs."""
    running = long_task_body()
    tracker.admit(running)
    wait_until(
        lambda: tracker.health()["metrics"]["running"] == SLOTS, timeout=TIMEOUT_S, what="start"
    )
    with subprocess.Popen(
        [*orchestratord_command(), *submit_args(tracker, "Once upon a time")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as submit:
        assert submit.stderr is not None
        assert "admitted at queue position 0" in submit.stderr.readline()
        waiting = submit.stderr.readline()
        assert waiting.startswith("orchestratord: queued at position 0, starts in ~"), waiting
        assert tracker.cancel(running["task_id"]).status_code == 204
        out, _ = submit.communicate(timeout=TIMEOUT_S)
    assert submit.returncode == EXIT_OK
    assert out.strip()


def test_session_shows_and_deletes(env: dict[str, str], tracker: CheckedClient) -> None:
    """ORCH-2004, ORCH-2005: `session ID` shows a session after its turn; `--delete`
    forgets it, after which it is unknown (exit 2)."""
    session = str(uuid.uuid4())
    assert orchestratord(env, *submit_args(tracker, "--session", session, "hi")).returncode == 0
    shown = orchestratord(env, "session", session, "--json")
    assert shown.returncode == EXIT_OK, shown.stderr
    assert json.loads(shown.stdout)["turns"] == 1
    assert orchestratord(env, "session", session, "--delete").returncode == EXIT_OK
    gone = orchestratord(env, "session", session)
    assert gone.returncode == EXIT_CLIENT
    assert "NOT_FOUND" in gone.stderr


def test_events_follows_a_task_to_its_end_and_stops_on_interrupt(
    env: dict[str, str], tracker: CheckedClient
) -> None:
    """ORCH-2103: `events --json` prints the control-plane event stream as JSON lines,
    a snapshot first, then the task a client submits, to its end; Ctrl-C (SIGINT) ends
    it with 130; without `--json` the same task reads as lines for people."""
    follower = subprocess.Popen(
        [*orchestratord_command(), "events", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    people = subprocess.Popen(
        [*orchestratord_command(), "events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert follower.stdout is not None and people.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert first["event"] == "snapshot"
        assert POOL_ID in {pool["pool_id"] for pool in first["data"]["pools"]}
        assert people.stdout.readline().startswith("POOL ")
        done = orchestratord(env, *submit_args(tracker, "Once upon a time"))
        assert done.returncode == EXIT_OK, done.stderr
        task_id = tracker.submitted[-1]
        tokens = len(tracker.transcript(task_id).tokens)
        seen: list[dict[str, object]] = []
        for line in follower.stdout:
            event = json.loads(line)
            if event["event"] == "task" and event["data"]["task_id"] == task_id:
                seen.append(event["data"])
                if "outcome" in event["data"]:
                    break
        assert seen[-1]["state"] == "ended"
        assert seen[-1]["tokens_out"] == tokens
        ended = f"task {task_id} ({POOL_ID}, interactive): ended, finished (ok), {tokens} tokens"
        for line in people.stdout:
            if line.rstrip("\n") == ended:
                break
        follower.send_signal(signal.SIGINT)
        assert follower.wait(TIMEOUT_S) == 130
    finally:
        for process in (follower, people):
            process.kill()
            process.wait(TIMEOUT_S)
