"""One pool, two launched llama.cpp replicas: placement, affinity and a worker crash.

The module shares one daemon whose pool has replicas r0 and r1, two slots each, on the
long tiny model. What the tests assert is what a client sees: the ``replica_id`` and
``kv_warmth`` of ``started`` frames, the per-replica figures of
``GET /v1/pools/{id}/health``, ``GET /v1/sessions/{id}``, and the terminal event of a task
whose engine died.

- ORCH-3008 / ORCH-3019: a task goes to the Ready replica with the most free slots, the
  first in config order on a tie; with every slot busy it queues and takes the slot that
  frees first.
- ORCH-3009 / ORCH-3021: a session's turns stay on the replica of its last good turn while
  that replica has a free slot, warm; when it is full the turn moves, cold, and the
  session follows it.
- ORCH-3038: SIGKILL of one replica's engine fails that replica's tasks with
  WORKER_RESET; the other replica keeps serving; the supervisor restarts the engine and
  the replica takes work again.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.replicas_support import (
    OpenStreams,
    engine_pid,
    release,
    replica_health,
    replica_pool,
    wait_replicas_ready,
)
from tests.integration.support import (
    ENGINE_MARKER,
    POOL_ID,
    Client,
    Daemon,
    daemon_config,
    long_task_body,
    new_id,
    process_alive,
    running_daemon,
    task_body,
    wait_until,
)

pytestmark = pytest.mark.integration

REPLICAS = ("r0", "r1")
SLOTS = 2


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory: pytest.TempPathFactory, long_model: Path) -> Path:
    """A copy of the long tiny model for this module alone (a test moves it away)."""
    return Path(shutil.copyfile(long_model, tmp_path_factory.mktemp("pair-model") / "tiny.gguf"))


@pytest.fixture(scope="module")
def pair_daemon(tmp_path_factory: pytest.TempPathFactory, pair_model: Path) -> Iterator[Daemon]:
    """Replicas r0 and r1 of two slots each; a queue of 4."""
    pool = replica_pool(pair_model, REPLICAS, slots=SLOTS, capacity=4)
    with running_daemon(tmp_path_factory.mktemp("replicas"), daemon_config(pool)) as daemon:
        yield daemon


@pytest.fixture
def client(pair_daemon: Daemon) -> Iterator[Client]:
    """A client of the pair daemon, both replicas Ready and idle; its tasks canceled after."""
    client = pair_daemon.client()
    wait_replicas_ready(client, REPLICAS)
    client.wait_idle()
    yield client
    client.cancel_all()
    client.wait_idle()


def per_replica(client: Client) -> dict[str, tuple[int, int]]:
    """(running, slots_free) of each replica, from the pool's health."""
    replicas = client.health()["metrics"]["replicas"]
    return {r["replica_id"]: (r["running"], r["slots_free"]) for r in replicas}


def short_run(client: Client, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """Run a short task to its end; return its replica and its started data."""
    transcript = client.run(task_body(max_tokens=8, **overrides))
    assert transcript.terminal.event == "end", transcript.terminal.data
    assert transcript.terminal.data["finish_reason"] == "length"
    started = transcript.started
    assert started is not None
    return str(started["replica_id"]), started


def test_least_loaded_placement_and_queueing(client: Client) -> None:
    """ORCH-3008, ORCH-3019: the replica with most free slots wins, config order on a tie;
    with every slot busy a task queues and starts on the replica whose slot frees first."""
    with OpenStreams(client) as streams:
        placed = [streams.occupy() for _ in range(2 * SLOTS)]
        # r0 (tie), r1 (2 free > 1), r0 (tie at 1), r1: least loaded, not first fit.
        assert [replica for _, replica in placed] == ["r0", "r1", "r0", "r1"]
        assert per_replica(client) == {"r0": (2, 0), "r1": (2, 0)}

        waiting = long_task_body()
        ticket = client.admit(waiting)
        health = client.health()["metrics"]
        assert (health["queue_depth"], health["running"], health["slots_free"]) == (1, 4, 0)

        # Free a slot of r1 (config order alone would say r0): the queued task takes it.
        r1_streams = [stream for stream, replica in placed if replica == "r1"]
        release(client, r1_streams[0])
        stream = streams.open(waiting["task_id"])
        started = stream.next_frame()
        assert started.event == "started"
        assert started.data["replica_id"] == "r1"
        assert started.data["queue_position"] == ticket["queue_position"]
        health = client.health()["metrics"]
        assert (health["queue_depth"], health["running"]) == (0, 4)
        assert per_replica(client) == {"r0": (2, 0), "r1": (2, 0)}


def test_orch_3009_orch_3023_session_stays_on_its_replica_while_it_has_room(
    client: Client,
) -> None:
    """ORCH-3009, ORCH-3021, ORCH-2004: turns follow the session's last replica, warm, even
    against least-loaded order; a full replica sends the turn elsewhere, cold and with
    `kv_migrated: false` (ORCH-3023), and the session then sticks to the new replica."""
    session = new_id()
    with OpenStreams(client) as streams:
        blocker, where = streams.occupy()
        assert where == "r0"
        # Turn 1: no affinity yet, so least loaded: r1.
        replica, started = short_run(client, session_id=session)
        assert (replica, started["kv_warmth"]) == ("r1", False)
        assert "kv_migrated" not in started  # a new session has nothing to migrate
        release(client, blocker)

    # Turn 2, both idle: config order would pick r0; affinity keeps r1, warm.
    replica, started = short_run(client, session_id=session)
    assert (replica, started["kv_warmth"]) == ("r1", True)
    assert "kv_migrated" not in started

    with OpenStreams(client) as streams:
        first, on_first = streams.occupy()
        _, on_second = streams.occupy()
        assert (on_first, on_second) == ("r0", "r1")
        release(client, first)
        # Turn 3: r0 has 2 free slots, r1 only 1; affinity still wins.
        replica, started = short_run(client, session_id=session)
        assert (replica, started["kv_warmth"]) == ("r1", True)

        # Fill r1 (placements: r0 2 free -> r0, tie -> r0, then r1), then empty r0.
        fillers = [streams.occupy() for _ in range(3)]
        assert [r for _, r in fillers] == ["r0", "r0", "r1"]
        for stream, r in fillers:
            if r == "r0":
                release(client, stream)
        assert per_replica(client) == {"r0": (0, 2), "r1": (2, 0)}
        # Turn 4: its replica is full, so it moves to r0, cold; its KV stayed on r1.
        replica, started = short_run(client, session_id=session)
        assert (replica, started["kv_warmth"], started["kv_migrated"]) == ("r0", False, False)
        info = client.get(f"/v1/sessions/{session}").json()
        assert (info["turns"], info["kv_warmth"]) == (4, False)
        # Turn 5: the session now sticks to r0, warm again.
        replica, started = short_run(client, session_id=session)
        assert (replica, started["kv_warmth"]) == ("r0", True)

    info = client.get(f"/v1/sessions/{session}").json()
    assert (info["turns"], info["kv_warmth"]) == (5, True)


def test_killed_engine_resets_its_tasks_and_comes_back(
    client: Client, pair_daemon: Daemon, pair_model: Path
) -> None:
    """ORCH-3038: SIGKILL of r0's engine mid-stream ends r0's tasks with WORKER_RESET. While
    r0 cannot come back (its model file is moved away, so restart attempts fail: two are
    counted as preload failures in /metrics, each retried after a backoff) r0 is reported
    not Ready, the pool stays Ready, r1's stream goes on and a new task runs on r1. With
    the file back, a later attempt starts a new engine process and r0, Ready again, takes
    work. /metrics shows it too: the two tasks as failed with WORKER_RESET, one restart of
    r0, r0 out of the ready state while the pool stays ready (ORCH-3028)."""
    killed = engine_pid(pair_daemon, "r0")
    survivor = engine_pid(pair_daemon, "r1")
    away = pair_model.with_name(pair_model.name + ".away")
    before = client.metrics()
    failures = before.total(
        "preload_outcomes_total", pool_id=POOL_ID, outcome="engine_start_failed"
    )
    with OpenStreams(client) as streams:
        running = [streams.occupy() for _ in range(3)]
        assert [r for _, r in running] == ["r0", "r1", "r0"]
        for stream, _ in running:
            stream.read_until(lambda f: f.event == "token")
        pair_model.rename(away)
        try:
            os.kill(killed, signal.SIGKILL)
            for stream, replica in running:
                if replica != "r0":
                    continue
                terminal = stream.read_all().terminal
                assert terminal.event == "error", terminal.data
                assert terminal.data["code"] == "WORKER_RESET"
                assert terminal.data["retriable"] is True
            wait_until(
                lambda: (
                    client.metrics().total(
                        "preload_outcomes_total", pool_id=POOL_ID, outcome="engine_start_failed"
                    )
                    >= failures + 2
                ),
                timeout=30,
                interval=0.1,
                what="two failed restart attempts of r0",
            )
            assert not process_alive(killed, ENGINE_MARKER)
            r1_stream = running[1][0]
            seen = len(r1_stream.frames)
            r1_stream.read_until(lambda f: len(r1_stream.frames) == seen + 50)
            later = [f.event for f in r1_stream.frames[seen:]]
            assert set(later) <= {"token", "metrics"} and later.count("token") >= 45, later
            replica, _ = short_run(client)
            assert replica == "r1"
            health = client.health()
            assert health["ready"] is True
            assert health["metrics"]["slots_total"] == SLOTS
            assert replica_health(client, "r0")["ready"] is False
            assert replica_health(client, "r1")["ready"] is True
            down = client.metrics()
            assert down.total("orchestratord_replica_state", replica_id="r0", state="ready") == 0
            assert down.total("orchestratord_replica_state", replica_id="r1", state="ready") == 1
            assert down.total("orchestratord_pool_ready", pool_id=POOL_ID) == 1
            assert down.total("orchestratord_pool_slots", pool_id=POOL_ID) == SLOTS
        finally:
            away.rename(pair_model)

    wait_replicas_ready(client, ("r0",))
    after = client.metrics()
    reset = {"result": "failed", "code": "WORKER_RESET"}
    completed = "orchestratord_tasks_completed_total"
    assert after.total(completed, **reset) - before.total(completed, **reset) == 2
    restarts = "orchestratord_replica_restarts_total"
    assert after.total(restarts, replica_id="r0") - before.total(restarts, replica_id="r0") == 1
    assert after.total(restarts, replica_id="r1") == before.total(restarts, replica_id="r1")
    assert after.total("orchestratord_replica_state", replica_id="r0", state="ready") == 1
    restarted = engine_pid(pair_daemon, "r0")
    assert restarted != killed
    assert engine_pid(pair_daemon, "r1") == survivor
    client.wait_idle()
    with OpenStreams(client) as streams:
        assert [streams.occupy()[1] for _ in range(2)] == ["r0", "r1"]
    assert client.health()["metrics"]["slots_total"] == 2 * SLOTS
