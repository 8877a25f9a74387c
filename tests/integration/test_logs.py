"""Structured logs of the running daemon (ORCH-3027, ORCH-3029).

The main daemon logs JSON lines on stderr. A task's admission, start and end each carry
every ORCH-3027 field; admission also carries queue_position and predicted_start_ms. No
prompt, generated text or API key is ever written. The output of the engine it starts is
logged too; requests are not (the access log is opt-in).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import (
    DATA_KEY,
    ORCH_3027_FIELDS,
    POOL_ID,
    Client,
    Daemon,
    Transcript,
    long_task_body,
    new_id,
    task_body,
    wait_until,
)

pytestmark = pytest.mark.integration


@dataclass
class Logged:
    body: dict[str, Any]
    ticket: dict[str, Any]
    transcript: Transcript
    records: dict[str, dict[str, Any]]
    canceled: dict[str, Any]
    daemon: Daemon


def task_records(daemon: Daemon, task_id: str) -> dict[str, dict[str, Any]]:
    return {r["event"]: r for r in daemon.log_records() if r.get("job_id") == task_id}


@pytest.fixture(scope="module")
def logged(main_daemon: Daemon) -> Logged:
    """One completed task with a recognisable prompt, and one canceled mid-run."""
    client: Client = main_daemon.client()
    body = task_body(prompt=f"confidential-prompt-{new_id()}", max_tokens=32)
    ticket = client.admit(body)
    transcript = client.transcript(body["task_id"])
    records = wait_until(
        lambda: (found := task_records(main_daemon, body["task_id"])).get("task.ended") and found,
        timeout=10,
        what="the task.end log line",
    )
    long = long_task_body()
    client.admit(long)
    try:
        with client.open_stream(long["task_id"]) as stream:
            stream.read_until(lambda f: f.event == "token")
            assert client.cancel(long["task_id"]).status_code == 204
            stream.read_all()
    finally:
        client.cancel_all()
    canceled = wait_until(
        lambda: task_records(main_daemon, long["task_id"]).get("task.canceled"),
        timeout=10,
        what="the task.canceled log line",
    )
    client.wait_idle()
    return Logged(body, ticket, transcript, records, canceled, main_daemon)


def test_task_log_lines_carry_every_orch_3027_field(logged: Logged) -> None:
    """ORCH-3027, ORCH-3029: admitted / started / end lines with the full task context."""
    body, records = logged.body, logged.records
    assert {"task.admitted", "task.dispatched", "task.ended"} <= set(records)
    started_event = logged.transcript.started
    assert started_event is not None
    for event in ("task.admitted", "task.dispatched", "task.ended"):
        record = records[event]
        missing = [name for name in ORCH_3027_FIELDS if name not in record]
        assert not missing, f"{event} lacks {missing}"
        assert {"ts", "level"} <= set(record)
        assert record["job_id"] == body["task_id"]
        assert record["session_id"] == body["session_id"]
        assert record["client_id"] and DATA_KEY not in record["client_id"]
        assert (record["engine"], record["pool_id"]) == ("llamacpp", POOL_ID)
        assert record["ctx"] == body["ctx"]
        assert record["sampler_profile_version"] == "v1"
    admitted = records["task.admitted"]
    assert admitted["queue_position"] == logged.ticket["queue_position"]
    assert admitted["predicted_start_ms"] == logged.ticket["predicted_start_ms"]
    started = records["task.dispatched"]
    assert started["replica_id"] == started_event["replica_id"]
    assert started["engine_version"] == started_event["engine_version"]
    assert started["queue_position"] == started_event["queue_position"]
    assert started["predicted_start_ms"] == started_event["predicted_start_ms"]
    end = records["task.ended"]
    terminal = logged.transcript.terminal.data
    assert end["tokens_out"] == terminal["tokens_out"] == 32
    assert end["tokens_in"] == terminal["tokens_in"]
    assert end["decode_time_ms"] == terminal["decode_ms"]
    assert isinstance(end["queue_time_ms"], int)
    for name in ("eviction_events", "oom_events", "driver_reset_events"):
        assert end[name] == 0


def test_logs_never_hold_prompts_generated_text_or_keys(logged: Logged) -> None:
    """ORCH-3027: no prompt text, no generated text, no credential in any log output."""
    output = logged.daemon.stderr_text() + logged.daemon.stdout_text()
    text = logged.transcript.text
    assert logged.body["prompt"] not in output
    assert DATA_KEY not in output
    assert text not in output
    assert json.dumps(text)[1:-1] not in output


def test_terminal_records_of_a_task_that_ran_have_every_value(logged: Logged) -> None:
    """ORCH-3027: on a terminal event every key has a value (quant and tensor_split may
    be null when the pool sets none)."""
    for record in (logged.records["task.ended"], logged.canceled):
        nulls = [
            name
            for name in ORCH_3027_FIELDS
            if record[name] is None and name not in ("quant", "tensor_split")
        ]
        assert not nulls, f"{record['event']}: null {nulls}"


def test_model_id_is_the_resolved_model_digest(logged: Logged) -> None:
    """ORCH-3027: `model_id` is the resolved model digest (the one `started` reports)."""
    started = logged.transcript.started
    assert started is not None
    for record in logged.records.values():
        assert record["model_id"] == started["model_digest"]


def test_log_records_have_the_spec_shape_and_event_names(logged: Logged) -> None:
    """ORCH-3027: each line has ts, level, event and message; task events are named
    task.admitted, task.dispatched, task.ended, task.canceled (among others)."""
    for record in logged.daemon.log_records():
        assert {"ts", "level", "event", "message"} <= set(record), record
    assert {"task.admitted", "task.dispatched", "task.ended"} <= set(logged.records)


def test_orch_3049_every_replica_passed_its_self_test_before_ready(logged: Logged) -> None:
    """ORCH-3049: before a replica is Ready, the start-up self-test logs one
    pool.selftest record: preload with a minimal decode, a cancel, the slots free again
    and a decode after the cancel, each timed; the preload outcome is counted in the
    metrics."""
    records = logged.daemon.log_records()
    events = [r["event"] for r in records]
    selftest = next(r for r in records if r["event"] == "pool.selftest")
    assert selftest["outcome"] == "success"
    assert selftest["pool_id"] == POOL_ID and selftest["replica_id"] == "r0"
    for step in ("cancel_ms", "slots_free_ms", "decode_after_cancel_ms"):
        assert selftest[step] >= 0
    assert events.index("pool.selftest") < events.index("pool.ready")
    metrics = logged.daemon.client().metrics()
    assert metrics.total("preload_outcomes_total", pool_id=POOL_ID, outcome="success") >= 1


def test_orch_3027_engine_output_is_logged_under_engine_with_its_pool_and_replica(
    logged: Logged,
) -> None:
    """The llama.cpp server the daemon starts: each line it writes is an engine.output
    record of logger `engine` naming the pool, the replica and the stream."""
    records = [r for r in logged.daemon.log_records() if r["logger"] == "engine"]
    assert records, "no engine output in the daemon's log"
    assert {r["event"] for r in records} == {"engine.output"}
    assert {(r["pool_id"], r["replica_id"]) for r in records} == {(POOL_ID, "r0")}
    assert {r["stream"] for r in records} <= {"stdout", "stderr"}
    model_file = Path(logged.daemon.config["pools"][0]["replicas"][0]["launch"]["model_path"])
    assert any(model_file.name in r["message"] for r in records), "the engine's loading line"


def test_access_log_is_off_by_default(logged: Logged) -> None:
    """Without server.access_log or --access-log no request is logged."""
    assert logged.daemon.client().get("/readyz", key=None).status_code == 200
    events = {r["event"] for r in logged.daemon.log_records()}
    assert "http.request" not in events
    assert "access_log" not in logged.daemon.config["server"]
