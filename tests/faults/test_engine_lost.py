"""An engine lost in the middle of a stream (ORCH-3038, ORCH-3018, ORCH-2002).

Two ways to lose one. The llama.cpp server the daemon launched is killed (SIGKILL, by
the pid the daemon started it as) while a client streams: that task ends with `error`
WORKER_RESET, the queued task with POOL_UNAVAILABLE, the pool turns not live, and the
supervisor starts a new engine process and preloads it until the pool is Ready again.
A fake engine drops the connection mid-stream while its process and /health stay up,
then refuses completions for a while as a restarting engine would: the same WORKER_RESET,
and the replica should come back once preload succeeds again.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.checks import Ledger, RecordProperty, check_scenario, open_fds
from tests.faults.conftest import fake_pool_config
from tests.integration.support import (
    ENGINE_MARKER,
    Client,
    Daemon,
    child_pids,
    command_line,
    daemon_config,
    long_task_body,
    process_alive,
    running_daemon,
    task_body,
    tiny_pool_config,
    wait_until,
)
from tests.support.fake_engines import Behaviour, FakeLlamaCpp, fake_llamacpp

pytestmark = pytest.mark.integration

#: Bound for a relaunched engine to load the tiny model and pass preload.
RESTART_TIMEOUT_S = 60.0


def engine_urls(daemon: Daemon) -> list[str]:
    """The engine URL of every `replica.start` the daemon logged, in order."""
    return [str(r["url"]) for r in daemon.log_records() if r.get("event") == "replica.start"]


def launched_engines(daemon: Daemon) -> list[int]:
    return [pid for pid in child_pids(daemon.pid) if ENGINE_MARKER in command_line(pid)]


def assert_worker_reset(transcript_terminal: dict[str, object]) -> None:
    assert transcript_terminal["code"] == "WORKER_RESET", transcript_terminal
    assert transcript_terminal["retriable"] is True
    assert transcript_terminal["engine"] == "llamacpp"


def test_killed_engine_fails_its_tasks_and_is_restarted(
    tmp_path: Path, long_model: Path, record_property: RecordProperty
) -> None:
    """ORCH-3038, ORCH-3018, ORCH-2002, ORCH-3017: SIGKILL the launched engine while a
    client streams. The running task ends with error WORKER_RESET after the tokens it
    had, the queued one with POOL_UNAVAILABLE (both retriable); the pool health turns
    not live and a new task gets 503 with retry hints; the supervisor launches a new
    engine process (a new pid and URL), the pool is Ready again and a new task runs to
    its end. Counters, logs, slots and descriptors agree afterwards."""
    config = daemon_config(tiny_pool_config(long_model, slots=1, capacity=2))
    with running_daemon(tmp_path, config) as daemon:
        fd_baseline = open_fds(daemon.pid)
        client = daemon.client()
        before = client.metrics()
        ledger = Ledger()
        running, queued = long_task_body(), long_task_body()
        ledger.admit(client, running)
        ledger.admit(client, queued)
        (old_pid,) = daemon.engine_pids
        assert len(engine_urls(daemon)) == 1
        with client.open_stream(running["task_id"]) as stream:
            stream.read_until(lambda f: f.event == "token" and f.data["i"] >= 3)
            os.kill(old_pid, signal.SIGKILL)
            killed_at = time.monotonic()
            killed = ledger.finished(running["task_id"], stream.read_all())
        assert_worker_reset(killed.terminal.data)
        assert killed.started is not None and len(killed.tokens) >= 4

        # The core marks the replica down before the error frame is written, and a new
        # engine takes a health interval and a model load: the pool is down right now.
        health = client.health()
        assert (health["live"], health["ready"]) == (False, False), health
        refused = task_body()
        response = client.submit(refused)
        assert not ledger.submitted(refused, response)
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "POOL_UNAVAILABLE"
        backoff = int(response.headers["X-Backoff-Ms"])
        assert int(response.headers["Retry-After"]) == max(1, math.ceil(backoff / 1000))

        lost = ledger.read(client, queued["task_id"])
        assert lost.events == ["error"]
        assert lost.terminal.data["code"] == "POOL_UNAVAILABLE"
        assert lost.terminal.data["retriable"] is True

        wait_until(
            lambda: client.health()["ready"],
            timeout=RESTART_TIMEOUT_S,
            interval=0.1,
            what="the pool to be Ready again",
        )
        restart_s = time.monotonic() - killed_at
        new_pids = launched_engines(daemon)
        daemon.engine_pids.extend(new_pids)  # checked for exit when the daemon stops
        assert len(new_pids) == 1 and new_pids[0] != old_pid
        assert process_alive(new_pids[0], ENGINE_MARKER)
        assert not process_alive(old_pid, ENGINE_MARKER)
        urls = engine_urls(daemon)
        assert len(urls) == 2, urls

        after_restart = task_body(max_tokens=8)
        ledger.admit(client, after_restart)
        transcript = ledger.read(client, after_restart["task_id"])
        assert transcript.terminal.data["finish_reason"] == "length"
        figures = check_scenario(daemon, ledger, before, fd_baseline)
        record_property("figures", json.dumps(figures | {"ready_again_s": round(restart_s, 2)}))
        assert client.metrics().total("preload_outcomes_total", outcome="success") >= 2


@pytest.fixture
def dropping() -> Iterator[FakeLlamaCpp]:
    """A fake engine that, once a test arms it (`drop_one_stream`), drops a completion's
    connection after 3 tokens, then refuses completions (HTTP 503) until the test lets
    it recover; its /health stays up. It starts well-behaved, so the replica passes its
    start-up self-test (ORCH-3049)."""
    with fake_llamacpp(token_text="drop") as engine:
        yield engine


@pytest.fixture
def drop_daemon(tmp_path: Path, dropping: FakeLlamaCpp) -> Iterator[Daemon]:
    config = daemon_config(fake_pool_config(dropping))
    config["server"]["health_interval_ms"] = 200
    with running_daemon(tmp_path, config) as daemon:
        yield daemon


def drop_one_stream(client: Client, engine: FakeLlamaCpp) -> None:
    """Run one task whose engine connection is cut after 3 tokens. The engine refuses
    completions from then on (so no preload can succeed) until ``engine.refusing`` is
    cleared; it then streams normally."""
    cut_before = engine.stats.cut  # the start-up self-test's cancel cut one stream
    engine.behaviour = Behaviour(mode="close", after=3, then_refuse=True)
    body = task_body(max_tokens=10)
    transcript = client.run(body)
    assert transcript.events == [
        "started",
        "token",
        "metrics",
        "token",
        "token",
        "metrics",
        "error",
    ]
    assert_worker_reset(transcript.terminal.data)
    assert engine.stats.cut == cut_before + 1
    assert engine.refusing
    engine.behaviour = Behaviour()


def test_dropped_stream_fails_only_that_task(drop_daemon: Daemon, dropping: FakeLlamaCpp) -> None:
    """ORCH-3038, ORCH-3018, ORCH-2002: an engine that cuts the connection before its
    final frame fails the task with WORKER_RESET after the tokens it sent; the replica
    is taken out at once: the pool is not Ready, nothing runs, and new tasks are refused
    with a retriable 503 instead of being queued for an engine that cannot take them."""
    client = drop_daemon.client()
    drop_one_stream(client, dropping)
    health = client.health()
    assert health["ready"] is False
    assert health["metrics"]["running"] == 0
    response = client.submit(task_body())
    assert response.status_code == 503, response.text
    assert response.json()["code"] in ("POOL_UNAVAILABLE", "POOL_UNREADY")
    assert response.json()["retriable"] is True


def test_replica_is_ready_again_after_a_dropped_stream(
    drop_daemon: Daemon, dropping: FakeLlamaCpp
) -> None:
    """ORCH-3038: after the failure the replica is preloaded again (with backoff) and,
    once the engine takes completions again, becomes Ready; a new task then completes."""
    client = drop_daemon.client()
    drop_one_stream(client, dropping)
    dropping.refusing = False
    wait_until(lambda: client.health()["ready"], timeout=5, what="the replica to be Ready")
    transcript = client.run(task_body(max_tokens=4))
    assert transcript.terminal.data["finish_reason"] == "length"


def test_readyz_agrees_with_the_pool_after_a_worker_reset(
    drop_daemon: Daemon, dropping: FakeLlamaCpp
) -> None:
    """ORCH-3002, ORCH-3038: while the only pool is not Ready (its replica down after a
    WORKER_RESET, tasks refused with 503), /readyz is 503 too."""
    client = drop_daemon.client()
    drop_one_stream(client, dropping)
    assert client.health()["ready"] is False
    response = client.get("/readyz", key=None)
    assert response.status_code == 503, response.text
