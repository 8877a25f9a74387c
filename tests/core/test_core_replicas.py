"""The replica life cycle in the core: preload, probes, losses, backoff and the breaker.

ORCH-3002 (preload gates readiness), ORCH-3010 (a failed probe takes a replica out of
placement at once), ORCH-3038 (three failed probes, an exited engine or a broken stream
lose it; restart with doubling backoff that starts over only after a stable run),
ORCH-3053 (failure classes; the circuit breaker bounds restart storms, only for engines
the daemon runs), ORCH-3019 (engine-reported slots).
"""

from __future__ import annotations

from typing import TypeVar

import pytest
from corekit import (
    admit,
    crash,
    orchestrator,
    pool_spec,
    preloaded,
    probe,
    replica,
    report,
    task,
    uid,
)

from orchestrator_core import (
    Action,
    BreakerState,
    ErrorKind,
    FailureClass,
    IllegalTransition,
    Orchestrator,
    PoolPhase,
    Preload,
    PreloadFailure,
    PreloadOutcome,
    Probe,
    ProbeReport,
    ReplicaChanged,
    ReplicaEvent,
    ReplicaSpec,
    ReplicaState,
    RestartPolicy,
    StopEngine,
    TaskFailed,
)
from orchestrator_core.replica_states import advance_replica

POLICY = RestartPolicy(
    base_ms=100, max_ms=400, stable_ms=1_000, trip_failures=3, window_ms=10_000, open_ms=5_000
)


def changes(actions: list[Action]) -> list[tuple[str, ReplicaState]]:
    return [(a.replica_id, a.state) for a in actions if isinstance(a, ReplicaChanged)]


T = TypeVar("T")


def only(actions: list[Action], kind: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, kind)]


def fail_preload(
    orch: Orchestrator, now: int, replica_id: str = "r0", live: bool = False
) -> list[Action]:
    generation = replica(orch, "p0", replica_id, now).generation
    failure = PreloadFailure(PreloadOutcome.ENGINE_START_FAILED, "exited with 1", live)
    return orch.replica_preload_failed("p0", replica_id, generation, failure, now)


def test_the_table_refuses_what_it_does_not_list() -> None:
    with pytest.raises(IllegalTransition) as raised:
        advance_replica(ReplicaState.DEFERRED, ReplicaEvent.PRELOADED)
    assert raised.value.machine == "replica"
    assert advance_replica(ReplicaState.READY, ReplicaEvent.HOLD) is ReplicaState.HELD


def test_orch_3002_preload_then_probes_at_every_interval() -> None:
    orch = orchestrator(pool_spec(probe_interval_ms=1_000))
    assert orch.next_deadline_ms() == 1_000
    (probe_action,) = only(orch.poll(1_000), Probe)
    assert probe_action.replica_id == "r0"
    assert orch.next_deadline_ms() is None  # one probe at a time
    probe(orch, "p0", "r0", 1_100, kv_usage=0.25)
    assert orch.next_deadline_ms() == 2_100
    assert replica(orch, "p0", "r0").kv_usage == 0.25


def test_orch_3010_one_failed_probe_takes_a_replica_out_two_good_ones_bring_it_back() -> None:
    orch = orchestrator()
    actions = probe(orch, "p0", "r0", 10, ready=False)
    assert changes(actions) == [("r0", ReplicaState.SUSPECT)]
    view = orch.pool_view("p0", 10)
    assert (view.phase, view.ready, view.live) == (PoolPhase.UNREADY, False, True)
    probe(orch, "p0", "r0", 20)
    assert replica(orch, "p0", "r0").state is ReplicaState.SUSPECT
    assert changes(probe(orch, "p0", "r0", 30)) == [("r0", ReplicaState.READY)]
    assert orch.pool_view("p0", 30).phase is PoolPhase.READY


def test_orch_3038_three_failed_probes_lose_the_replica_and_restart_it_with_backoff() -> None:
    orch = orchestrator(pool_spec(restart=POLICY))
    admit(orch, task(1))
    orch.poll(0)
    probe(orch, "p0", "r0", 10, ready=False)
    probe(orch, "p0", "r0", 20, ready=False)
    view = orch.task(uid(1))
    assert view is not None and view.state.value == "dispatched"
    actions = probe(orch, "p0", "r0", 30, ready=False)
    (failed,) = only(actions, TaskFailed)
    assert failed.kind is ErrorKind.WORKER_RESET
    assert StopEngine("p0", "r0") in actions
    (change,) = only(actions, ReplicaChanged)
    assert change.state is ReplicaState.BACKING_OFF
    assert (change.retry_in_ms, change.attempt, change.breaker) == (100, 1, BreakerState.CLOSED)
    view = replica(orch, "p0", "r0", 30)
    assert (view.restarts, view.last_error, view.retry_in_ms) == (1, "reports not ready", 100)
    assert not only(orch.poll(129), Preload)
    (preload,) = only(orch.poll(130), Preload)
    assert preload.generation == replica(orch, "p0", "r0", 130).generation


def test_orch_3038_a_probe_that_finds_the_engine_gone_fails_running_tasks_at_once() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1), ("r1", 1)]))
    admit(orch, task(1))
    orch.poll(0)
    actions = probe(orch, "p0", "r0", 5, live=False, ready=False)
    (failed,) = only(actions, TaskFailed)
    assert failed.message == "replica is no longer live: stopped answering"
    assert replica(orch, "p0", "r0").state is ReplicaState.SUSPECT


def test_orch_3053_an_exited_engine_is_lost_at_once_with_its_failure_class() -> None:
    orch = orchestrator()
    generation = replica(orch, "p0", "r0").generation
    gone = ProbeReport(False, False, exited=True, failure_class=FailureClass.DRIVER_RESET)
    actions = orch.replica_probed("p0", "r0", generation, gone, 7)
    (change,) = only(actions, ReplicaChanged)
    assert change.failure_class is FailureClass.DRIVER_RESET
    view = replica(orch, "p0", "r0", 7)
    assert view.last_error == "engine exited (stopped answering) (driver_reset)"
    assert view.failure_class is FailureClass.DRIVER_RESET


def test_orch_3038_a_broken_stream_loses_the_replica_and_every_task_on_it() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 2)]))
    admit(orch, task(1))
    admit(orch, task(2))
    orch.poll(0)
    failed = orch.on_failure(
        uid(1), ErrorKind.WORKER_RESET, "connection reset", 5, FailureClass.DEVICE_OOM
    )
    assert failed is not None and failed.failure_class is FailureClass.DEVICE_OOM
    later = orch.poll(5)
    (other,) = only(later, TaskFailed)
    assert (other.task_id, other.message) == (uid(2), "connection reset")
    assert StopEngine("p0", "r0") in later
    assert replica(orch, "p0", "r0", 5).last_error == "reset a stream (device_oom)"


def test_orch_3038_backoff_doubles_up_to_its_cap_and_starts_over_after_a_stable_run() -> None:
    orch = orchestrator(
        pool_spec(
            restart=RestartPolicy(base_ms=100, max_ms=400, stable_ms=1_000, trip_failures=None)
        )
    )
    now, delays = 0, []
    for _ in range(4):
        actions = crash(orch, "p0", "r0", now) if replica(orch, "p0", "r0", now).ready else []
        actions += fail_preload(orch, now) if not actions else []
        delays.append(replica(orch, "p0", "r0", now).retry_in_ms)
        now += delays[-1] or 0
        orch.poll(now)
    assert delays == [100, 200, 400, 400]
    preloaded(orch, "p0", "r0", now)
    now += 1_000  # stable for the whole stable_ms: the backoff starts over
    crash(orch, "p0", "r0", now)
    assert replica(orch, "p0", "r0", now).retry_in_ms == 100


def test_orch_3053_the_breaker_trips_opens_and_closes_on_a_good_half_open_trial() -> None:
    orch = orchestrator(pool_spec(restart=POLICY))
    crash(orch, "p0", "r0", 0)
    orch.poll(100)
    fail_preload(orch, 100)
    orch.poll(300)
    actions = fail_preload(orch, 300)  # the third failure in the window trips it
    (change,) = only(actions, ReplicaChanged)
    assert change.state is ReplicaState.BREAKER_OPEN
    assert change.retry_in_ms == 5_000
    assert replica(orch, "p0", "r0", 300).breaker is BreakerState.OPEN
    assert not only(orch.poll(5_299), Preload)
    assert only(orch.poll(5_300), Preload)
    assert replica(orch, "p0", "r0", 5_300).breaker is BreakerState.HALF_OPEN
    preloaded(orch, "p0", "r0", 5_301)
    assert replica(orch, "p0", "r0", 5_301).breaker is BreakerState.CLOSED


def test_orch_3053_engines_reached_by_url_are_re_probed_without_a_breaker() -> None:
    spec = pool_spec(restart=POLICY)
    url_spec = spec.__class__(
        **{
            **{f: getattr(spec, f) for f in spec.__slots__},
            "replicas": (ReplicaSpec("r0", slots_total=1, managed=False),),
        }
    )
    orch = orchestrator(url_spec)
    now = 0
    crash(orch, "p0", "r0", now)
    for _ in range(6):
        now += replica(orch, "p0", "r0", now).retry_in_ms or 0
        orch.poll(now)
        fail_preload(orch, now, live=True)
    view = replica(orch, "p0", "r0", now)
    assert (view.state, view.breaker) == (ReplicaState.BACKING_OFF, BreakerState.CLOSED)
    # It answers, though it cannot take work: the pool is live but not Ready.
    pool = orch.pool_view("p0", now)
    assert (pool.live, pool.ready) == (True, False)


def test_late_answers_to_superseded_actions_are_dropped() -> None:
    orch = orchestrator()
    old = replica(orch, "p0", "r0").generation
    crash(orch, "p0", "r0", 1)
    assert orch.replica_preloaded("p0", "r0", old, report(), 2) == []
    assert replica(orch, "p0", "r0", 2).state is ReplicaState.BACKING_OFF


def test_orch_3019_a_replica_without_a_reported_slot_count_uses_its_configured_one() -> None:
    orch = Orchestrator([pool_spec(replicas=[("r0", 3)])])
    (preload,) = only(orch.poll(0), Preload)
    orch.replica_preloaded("p0", "r0", preload.generation, report(), 0)
    assert orch.pool_view("p0", 0).slots_total == 3
