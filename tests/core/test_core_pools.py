"""The pool life cycle in the core: phases, drains and reloads with rollback.

ORCH-2101 (drain), ORCH-2102 and ORCH-3031 (reload: drain, stop, load, swap or roll back,
converge on the latest request), ORCH-3002 (readiness after preload), ORCH-2001 (one
routing answer: a model is served where it is applied now).
"""

from __future__ import annotations

import pytest
from corekit import (
    ENGINE,
    MODEL,
    admit,
    dispatches,
    orchestrator,
    pool_spec,
    refuse,
    report,
    task,
    uid,
)

from orchestrator_core import (
    Action,
    CancelReason,
    ErrorKind,
    FinishReason,
    IllegalTransition,
    InvalidArgument,
    Orchestrator,
    PoolChanged,
    PoolEvent,
    PoolPhase,
    Preload,
    PreloadFailure,
    PreloadOutcome,
    ReplicaSpec,
    ReplicaState,
    StopEngine,
    TaskCanceled,
)
from orchestrator_core.pool_states import TRANSITIONS, advance_pool

NEW = "sha256:" + "cd" * 32


def phases(actions: list[Action]) -> list[PoolPhase]:
    return [a.phase for a in actions if isinstance(a, PoolChanged)]


def preloads(actions: list[Action]) -> list[Preload]:
    return [a for a in actions if isinstance(a, Preload)]


def two_replicas(**fields: object) -> Orchestrator:
    return orchestrator(pool_spec(replicas=[("r0", 1), ("r1", 1)], **fields))


def fail(orch: Orchestrator, preload: Preload, now: int, why: str = "bad bytes") -> list[Action]:
    failure = PreloadFailure(PreloadOutcome.CHECKSUM_MISMATCH, why)
    return orch.replica_preload_failed(
        preload.pool_id, preload.replica_id, preload.generation, failure, now
    )


def succeed(orch: Orchestrator, preload: Preload, now: int) -> list[Action]:
    return orch.replica_preloaded(
        preload.pool_id, preload.replica_id, preload.generation, report(), now
    )


# -- the table ----------------------------------------------------------------------------


def test_the_table_refuses_what_it_does_not_list() -> None:
    with pytest.raises(IllegalTransition) as raised:
        advance_pool(PoolPhase.DRAINED, PoolEvent.LOADED)
    assert raised.value.machine == "pool"
    assert advance_pool(PoolPhase.READY, PoolEvent.DRAIN) is PoolPhase.DRAINING
    for phase in (PoolPhase.DRAINED, PoolPhase.LOADING, PoolPhase.ROLLING_BACK):
        # replicas coming and going leave an out-of-service pool as it is
        assert TRANSITIONS[phase, PoolEvent.REPLICA_READY] is phase


def test_orch_3002_a_pool_is_starting_until_a_replica_is_ready() -> None:
    orch = Orchestrator([pool_spec()])
    assert orch.pool_view("p0", 0).phase is PoolPhase.STARTING
    (preload,) = preloads(orch.poll(0))
    assert preload.model_ref == MODEL
    actions = succeed(orch, preload, 5)
    assert phases(actions) == [PoolPhase.READY]
    view = orch.pool_view("p0", 5)
    assert (view.phase, view.ready, view.live) == (PoolPhase.READY, True, True)


def test_readiness_waits_for_every_first_preload_but_not_for_deferred_pools() -> None:
    orch = Orchestrator(
        [
            pool_spec("a", replicas=[("r0", 1), ("r1", 1)]),
            pool_spec("b", devices=(1,), preload=False),
        ]
    )
    first, second = preloads(orch.poll(0))
    succeed(orch, first, 1)
    readiness = orch.readiness()
    assert readiness.pools == (("a", True), ("b", False))
    assert not readiness.first_preloads_done and not readiness.serving
    fail(orch, second, 2)
    assert orch.readiness().serving  # every first attempt has ended, and "a" is Ready


def test_orch_3002_a_deferred_pool_loads_when_the_first_task_is_routed_to_it() -> None:
    orch = Orchestrator([pool_spec(preload=False)])
    assert orch.poll(0) == []
    view = orch.pool_view("p0", 0)
    assert [r.state for r in view.replicas] == [ReplicaState.DEFERRED]
    refused = refuse(orch, task(1))
    assert refused.kind is ErrorKind.POOL_UNAVAILABLE
    (preload,) = preloads(orch.poll(1))
    succeed(orch, preload, 2)
    admit(orch, task(1), 3)


# -- drain (ORCH-2101) --------------------------------------------------------------------


def test_orch_2101_a_drained_pool_stays_drained_and_reports_each_phase_once() -> None:
    orch = orchestrator()
    admit(orch, task(1))
    orch.poll(0)
    assert phases(orch.drain("p0", 1_000, 0)) == [PoolPhase.DRAINING]
    assert phases(orch.drain("p0", 5_000, 1)) == []
    orch.on_finish(uid(1), FinishReason.STOP, 1, 10)
    assert phases(orch.poll(10)) == [PoolPhase.DRAINED]
    assert phases(orch.drain("p0", 0, 20)) == []
    assert refuse(orch, task(2), 30).kind is ErrorKind.POOL_UNREADY


# -- reload (ORCH-2102, ORCH-3031) ----------------------------------------------------------


def test_orch_2102_reload_stops_loads_one_by_one_and_serves_the_new_model() -> None:
    orch = two_replicas()
    actions = orch.reload("p0", NEW, 10)
    assert phases(actions) == [PoolPhase.RELOADING, PoolPhase.LOADING]
    assert [a.replica_id for a in actions if isinstance(a, StopEngine)] == ["r0", "r1"]
    (first,) = preloads(actions)
    assert (first.replica_id, first.model_ref) == ("r0", NEW)
    view = orch.pool_view("p0", 10)
    assert (view.desired_ref, view.model_ref, view.live) == (NEW, MODEL, False)
    assert refuse(orch, task(1), 11).kind is ErrorKind.POOL_UNAVAILABLE  # engines replaced
    (second,) = preloads(succeed(orch, first, 12))
    assert (second.replica_id, second.model_ref) == ("r1", NEW)
    done = succeed(orch, second, 13)
    (changed,) = [a for a in done if isinstance(a, PoolChanged)]
    assert (changed.phase, changed.previous, changed.model_ref) == (
        PoolPhase.READY,
        PoolPhase.LOADING,
        NEW,
    )
    view = orch.pool_view("p0", 13)
    assert (view.model_ref, view.desired_ref, view.last_error) == (NEW, NEW, None)
    # One routing answer: the new model is served everywhere, the old one nowhere.
    assert [r.pool_id for r in orch.routes(NEW)] == ["p0"] and orch.routes(MODEL) == ()
    assert orch.models() == (NEW,)
    old = refuse(orch, task(2), 14)
    assert (old.kind, old.field, old.message) == (
        ErrorKind.INVALID_PARAMS,
        "model_ref",
        f"model {MODEL!r} is not served by any llamacpp pool",
    )
    assert admit(orch, task(3, model_ref=NEW), 14).pool_id == "p0"
    assert orch.replica_sets()[0].key.model_ref == NEW


def test_orch_2102_reload_waits_for_running_work_within_the_wall_limit() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1)], wall_timeout_ms=5_000))
    admit(orch, task(1))
    admit(orch, task(2))
    orch.poll(0)
    actions = orch.reload("p0", NEW, 10)
    assert phases(actions) == [PoolPhase.RELOADING]
    assert [(a.task_id, a.reason) for a in actions if isinstance(a, TaskCanceled)] == [
        (uid(2), CancelReason.DRAIN)
    ]
    assert refuse(orch, task(3), 20).backoff_ms == 4_990  # the rest of the drain window
    orch.on_finish(uid(1), FinishReason.STOP, 1, 100)
    later = orch.poll(100)
    assert phases(later) == [PoolPhase.LOADING] and preloads(later)[0].model_ref == NEW


def test_orch_2102_a_reload_that_cannot_finish_its_drain_cancels_at_the_wall_limit() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1)], wall_timeout_ms=500, idle_timeout_ms=10**6))
    admit(orch, task(1))
    orch.poll(0)
    orch.reload("p0", NEW, 0)
    actions = orch.poll(500)
    kinds = [type(a).__name__ for a in actions]
    # the watchdog's wall limit and the drain deadline coincide; the task ends once
    assert kinds.count("TaskFailed") + kinds.count("TaskCanceled") == 1
    assert PoolPhase.LOADING in phases(actions)


def test_orch_3031_a_failed_reload_rolls_back_to_the_previous_model() -> None:
    orch = two_replicas()
    (first,) = preloads(orch.reload("p0", NEW, 0))
    (second,) = preloads(succeed(orch, first, 1))
    actions = fail(orch, second, 2, "sha256 differs")
    assert phases(actions) == [PoolPhase.ROLLING_BACK]
    assert [a.replica_id for a in actions if isinstance(a, StopEngine)] == ["r0", "r1"]
    (back,) = preloads(actions)
    assert (back.replica_id, back.model_ref) == ("r0", MODEL)
    (again,) = preloads(succeed(orch, back, 3))
    done = succeed(orch, again, 4)
    assert phases(done) == [PoolPhase.READY]
    view = orch.pool_view("p0", 4)
    assert (view.model_ref, view.desired_ref) == (MODEL, MODEL)
    assert view.last_error == (f"reload to {NEW} rolled back: checksum_mismatch: sha256 differs")
    assert orch.routes(NEW) == () and admit(orch, task(1), 5).pool_id == "p0"


def test_orch_3031_when_the_rollback_fails_too_replicas_restart_on_the_previous_model() -> None:
    orch = two_replicas()
    (first,) = preloads(orch.reload("p0", NEW, 0))
    (back,) = preloads(fail(orch, first, 1, "bad"))
    actions = fail(orch, back, 2, "worse")
    (other,) = preloads(actions)  # r1 goes back to ordinary supervision at once
    assert (other.replica_id, other.model_ref) == ("r1", MODEL)
    view = orch.pool_view("p0", 2)
    assert view.phase is PoolPhase.UNREADY
    assert view.last_error == (
        f"reload to {NEW} rolled back: checksum_mismatch: bad; "
        "the previous model failed too: checksum_mismatch: worse"
    )
    assert view.replicas[0].state is ReplicaState.BACKING_OFF
    assert phases(succeed(orch, other, 3)) == [PoolPhase.READY]


def test_orch_2102_the_pool_converges_on_the_latest_reload() -> None:
    orch = two_replicas()
    (first,) = preloads(orch.reload("p0", NEW, 0))
    third = "sha256:" + "ef" * 32
    assert orch.reload("p0", third, 1) == []  # engines are being replaced: it waits
    assert orch.pool_view("p0", 1).desired_ref == third
    (second,) = preloads(succeed(orch, first, 2))
    actions = succeed(orch, second, 3)  # NEW is served, then the waiting reload starts
    assert phases(actions) == [PoolPhase.READY, PoolPhase.RELOADING, PoolPhase.LOADING]
    (next_first,) = preloads(actions)
    assert next_first.model_ref == third
    (next_second,) = preloads(succeed(orch, next_first, 4))
    succeed(orch, next_second, 5)
    assert orch.pool_view("p0", 5).model_ref == third


def test_orch_2102_a_reload_asked_for_while_draining_for_another_replaces_it() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1)]))
    admit(orch, task(1))
    orch.poll(0)
    orch.reload("p0", "sha256:" + "ef" * 32, 1)
    orch.reload("p0", NEW, 2)
    orch.on_finish(uid(1), FinishReason.STOP, 1, 3)
    (preload,) = preloads(orch.poll(3))
    assert preload.model_ref == NEW


def test_orch_2101_an_operators_drain_during_a_reload_outlives_it() -> None:
    orch = orchestrator()
    (first,) = preloads(orch.reload("p0", NEW, 0))
    assert phases(orch.drain("p0", 1_000, 1)) == []
    done = succeed(orch, first, 2)
    assert phases(done) == [PoolPhase.READY, PoolPhase.DRAINING, PoolPhase.DRAINED]
    view = orch.pool_view("p0", 2)
    assert (view.model_ref, view.draining, view.ready) == (NEW, True, False)


def test_orch_2102_reloading_a_drained_pool_brings_it_back() -> None:
    orch = orchestrator()
    orch.drain("p0", 0, 0)
    (preload,) = preloads(orch.reload("p0", MODEL, 1))
    assert phases(succeed(orch, preload, 2)) == [PoolPhase.READY]
    admit(orch, task(1), 3)
    assert dispatches(orch.poll(3))


def test_a_reload_resets_the_restart_breaker_and_ignores_late_answers() -> None:
    orch = orchestrator()
    stale = orch.pool_view("p0", 0).replicas[0].generation
    (preload,) = preloads(orch.reload("p0", NEW, 0))
    assert orch.replica_preloaded("p0", "r0", stale, report(), 1) == []
    assert orch.pool_view("p0", 1).phase is PoolPhase.LOADING
    succeed(orch, preload, 2)
    assert orch.pool_view("p0", 2).replicas[0].breaker.value == "closed"


def test_only_pools_of_engines_the_daemon_runs_reload() -> None:
    spec = pool_spec()
    url = Orchestrator(
        [
            spec.__class__(
                **{
                    **{f: getattr(spec, f) for f in spec.__slots__},
                    "replicas": (ReplicaSpec("r0", managed=False),),
                }
            )
        ]
    )
    with pytest.raises(InvalidArgument, match="reached by URL"):
        url.reload("p0", NEW, 0)
    with pytest.raises(InvalidArgument):
        orchestrator().reload("p0", "", 0)


def test_a_reload_forgets_what_the_previous_model_taught() -> None:
    orch = orchestrator(pool_spec(initial_service_ms=1_000))
    admit(orch, task(1))
    orch.poll(0)
    orch.on_finish(uid(1), FinishReason.STOP, 3, 5_000)
    assert orch.pool_view("p0", 5_000).service_time_ms > 1_000
    assert orch.slo("p0", 5_000).interactive.samples == 1
    (preload,) = preloads(orch.reload("p0", NEW, 5_000))
    succeed(orch, preload, 5_001)
    assert orch.pool_view("p0", 5_001).service_time_ms == 1_000
    assert orch.slo("p0", 5_001).interactive.samples == 0


def test_routes_list_every_pool_of_a_model_with_its_engine_and_limits() -> None:
    orch = orchestrator(pool_spec("a", ctx_limit=4096), pool_spec("b", devices=(1,)))
    routes = orch.routes(MODEL)
    assert [(r.pool_id, r.engine, r.ctx_limit, r.ready) for r in routes] == [
        ("a", ENGINE, 4096, True),
        ("b", ENGINE, 8192, True),
    ]
