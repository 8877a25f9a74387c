"""The steps of a reload, once its pool has drained (ORCH-2102, ORCH-3031, ORCH-3037).

1. `begin`: every replica is held (its engine stopped, its restart breaker reset) and the
   replicas are loaded on the new model one after another (`Preload`, verify and
   self-test included).
2. `preloaded`: a replica is Ready on the new model; the next one loads. When all are,
   the reload `finished`: the pool serves the new model.
3. `preload_failed`: the reload rolls back: `last_error` says why, every replica is held
   again and loaded on the previous model, the same way. When that fails too, `last_error`
   says so and the replicas go back to ordinary supervision on the previous model
   (restarts with backoff).

The facade moves the pool's phase (`pool_states`) on what these functions return, and
applies the model swap; they only move replicas and append actions to `out`.
"""

from __future__ import annotations

from enum import Enum

from orchestrator_core import supervision
from orchestrator_core.decisions import Action
from orchestrator_core.pools import Pool, ReloadProgress
from orchestrator_core.replica import PreloadFailure, Replica, ReplicaReport
from orchestrator_core.replica_states import ReplicaEvent, ReplicaState
from orchestrator_core.supervision import move, request_preload, stop
from orchestrator_core.vocabulary import PoolPhase


class Step(Enum):
    """Where a reload stands after a replica reported."""

    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


def begin(pool: Pool, reload: ReloadProgress, out: list[Action]) -> None:
    """Hold every replica and load the first on `reload.target`."""
    hold_all(pool, out)
    reload.loading = list(pool.replicas)
    load_next(pool, reload, out)


def hold_all(pool: Pool, out: list[Action]) -> None:
    """Stop every engine of the pool; nothing of it takes work until loaded again."""
    for replica in pool.replicas.values():
        replica.tracker.reset()
        replica.set_live(False)
        replica.retry_at_ms = None
        move(pool, replica, ReplicaEvent.HOLD, out)
        stop(pool, replica, out)


def load_next(pool: Pool, reload: ReloadProgress, out: list[Action]) -> None:
    """Preload the next held replica on the reload's target."""
    replica = pool.replicas[reload.loading.pop(0)]
    request_preload(pool, replica, ReplicaEvent.LOAD, reload.target, out)


def preloaded(
    pool: Pool,
    reload: ReloadProgress,
    replica: Replica,
    report: ReplicaReport,
    now_ms: int,
    out: list[Action],
) -> Step:
    """A replica is Ready on the target: load the next one, or say the reload is done.
    (Its probes start once the whole pool serves again, `finish`.)"""
    supervision.ready(pool, replica, report, now_ms, out)
    if reload.loading:
        load_next(pool, reload, out)
        return Step.LOADING
    return Step.LOADED if pool.phase is PoolPhase.LOADING else Step.ROLLED_BACK


def preload_failed(
    pool: Pool,
    reload: ReloadProgress,
    replica: Replica,
    failure: PreloadFailure,
    now_ms: int,
    out: list[Action],
) -> Step:
    """A replica failed to load: roll back, or, when the rollback fails, give up on it."""
    why = f"{failure.outcome}: {failure.message}"
    if pool.phase is PoolPhase.LOADING:
        replica.attempted = True
        replica.last_preload_outcome = failure.outcome
        replica.last_error = failure.message
        pool.last_error = f"reload to {reload.target} rolled back: {why}"
        reload.target = reload.previous
        begin(pool, reload, out)
        return Step.FAILED
    pool.last_error = f"{pool.last_error}; the previous model failed too: {why}"
    supervision.preload_failed(pool, replica, failure, now_ms, out)
    for replica_id in reload.loading:
        held = pool.replicas[replica_id]
        request_preload(pool, held, ReplicaEvent.LOAD, reload.target, out)
    reload.loading.clear()
    return Step.ROLLED_BACK


def finish(pool: Pool, now_ms: int) -> None:
    """The pool serves again: probe its Ready replicas from now on."""
    for replica in pool.replicas.values():
        if replica.state is ReplicaState.READY:
            replica.probe_due_ms = now_ms + pool.spec.probe_interval_ms
