"""The watchdog on a real engine (ORCH-3016): wall-clock limit and the task's deadline.

The daemon of this module allows 3 s of running per task; a request may set a shorter
`deadline_ms`. A task past either fails with `error` DECODE_TIMEOUT naming the limit; the
tokens already sent stay in the transcript and the slot is freed in the daemon and in the
engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import (
    Client,
    Daemon,
    daemon_config,
    long_task_body,
    running_daemon,
    tiny_pool_config,
    wait_engine_idle,
)

pytestmark = pytest.mark.integration

WALL_MS = 3_000


@pytest.fixture(scope="module")
def watchdog_daemon(tmp_path_factory: pytest.TempPathFactory, long_model: Path) -> Iterator[Daemon]:
    pool = tiny_pool_config(long_model, slots=1)
    pool["timeouts"] = {"wall_ms": WALL_MS, "idle_ms": 60_000}
    with running_daemon(tmp_path_factory.mktemp("watchdog-daemon"), daemon_config(pool)) as daemon:
        yield daemon


@pytest.fixture
def watched(watchdog_daemon: Daemon) -> Iterator[Client]:
    client = watchdog_daemon.client()
    yield client
    client.cancel_all()
    client.wait_idle()


def test_wall_timeout_fails_the_task_and_frees_the_slot(
    watched: Client, watchdog_daemon: Daemon
) -> None:
    """ORCH-3016: past wall_ms the task ends with error DECODE_TIMEOUT (wall), not
    retriable; its tokens stay in the transcript; the slot is free again. /metrics counts
    it once as failed with code DECODE_TIMEOUT, with its duration (ORCH-3028)."""
    failed = {"result": "failed", "code": "DECODE_TIMEOUT"}
    before = watched.metrics()
    body = long_task_body()
    watched.admit(body)
    transcript = watched.transcript(body["task_id"])
    error = transcript.terminal
    assert error.event == "error"
    assert error.data["code"] == "DECODE_TIMEOUT"
    assert error.data["retriable"] is False
    assert "wall" in error.data["message"]
    assert transcript.started is not None and transcript.tokens
    watched.wait_idle()
    wait_engine_idle(watchdog_daemon)
    after = watched.metrics()

    def delta(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    assert delta("orchestratord_tasks_completed_total", **failed) == 1
    assert delta("orchestratord_tasks_completed_total") == 1
    assert delta("orchestratord_task_duration_seconds_count", result="failed") == 1
    assert delta("orchestratord_task_duration_seconds_sum", result="failed") >= WALL_MS / 1000


def test_deadline_ms_bounds_a_running_task(watched: Client) -> None:
    """ORCH-3016: the request's deadline_ms, counted from admission, is a third bound:
    a task still running when it passes fails with DECODE_TIMEOUT naming the deadline."""
    body = long_task_body(deadline_ms=300)
    watched.admit(body)
    transcript = watched.transcript(body["task_id"])
    error = transcript.terminal
    assert error.event == "error"
    assert error.data["code"] == "DECODE_TIMEOUT"
    assert error.data["retriable"] is False
    assert "deadline" in error.data["message"], error.data["message"]
    assert transcript.started is not None
    watched.wait_idle()


def test_deadline_ms_bounds_a_queued_task(watched: Client) -> None:
    """ORCH-3016: the deadline covers time in the queue: a task that never got a slot
    fails with DECODE_TIMEOUT and never starts."""
    running = long_task_body()
    queued = long_task_body(deadline_ms=300)
    watched.admit(running)
    watched.admit(queued)
    transcript = watched.transcript(queued["task_id"])
    assert transcript.events == ["error"]
    assert transcript.terminal.data["code"] == "DECODE_TIMEOUT"
    assert "deadline" in transcript.terminal.data["message"]
    assert watched.health()["metrics"]["queue_depth"] == 0
    assert watched.cancel(running["task_id"]).status_code == 204
