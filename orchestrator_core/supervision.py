"""Replica supervision: preload until Ready, probe, restart with backoff (ORCH-3002, ORCH-3038).

The rules of `replica_states`, applied to one replica of a serving pool (a pool under
reload is driven by `reloads` instead):

* A preload is asked for with a `Preload` action. Success makes the replica Ready and
  schedules its first probe; it also tells the restart tracker, whose backoff starts over
  once the replica has stayed Ready for `stable_ms`, and whose half-open trial closes the
  breaker. A failure asks the tracker when to try again: BACKING_OFF until then, or
  BREAKER_OPEN when the breaker tripped (ORCH-3053); the engine is stopped.
* A Ready replica is probed every `probe_interval_ms`. A failed probe takes it out of
  placement at once (SUSPECT); a probe that finds the engine not live also ends the tasks
  running on it (their streams are gone). `PROBES_TO_READY` good probes in a row bring it
  back; `PROBES_TO_RESTART` failed ones in a row, its engine exiting, or a stream breaking
  on it mean it is lost: its tasks fail WORKER_RESET, its engine is stopped, and it waits
  for its next attempt as after a failed preload.
* Timers: `due` starts the attempt of a waiting replica whose time has come and the probe
  of a Ready one that is due.

Every function appends the actions it decides to `out`, in order, and returns the
`Loss` of a replica whose running tasks must fail, for the facade to carry out.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator_core.decisions import Action, Preload, Probe, ReplicaChanged, StopEngine
from orchestrator_core.pools import Pool
from orchestrator_core.replica import (
    FailureClass,
    PreloadFailure,
    PreloadOutcome,
    ProbeReport,
    Replica,
    ReplicaReport,
)
from orchestrator_core.replica_states import (
    PROBED,
    WAITING,
    ReplicaEvent,
    ReplicaState,
    advance_replica,
)
from orchestrator_core.restarts import BreakerState

#: Consecutive failed probes after which a replica is lost and restarted (re-probed if the
#: daemon does not run it): one slow answer from a busy engine does not cost a restart.
PROBES_TO_RESTART = 3
#: Consecutive good probes that put a replica back after a failed one.
PROBES_TO_READY = 2


@dataclass(frozen=True, slots=True)
class Loss:
    """The running tasks of a replica must fail WORKER_RESET with this message."""

    message: str
    failure_class: FailureClass | None = None


def move(
    pool: Pool,
    replica: Replica,
    event: ReplicaEvent,
    out: list[Action],
    *,
    reason: str | None = None,
    retry_in_ms: int | None = None,
    breaker: BreakerState | None = None,
    attempt: int | None = None,
    failure_class: FailureClass | None = None,
    outcome: PreloadOutcome | None = None,
) -> None:
    """Advance the replica's state; a change is reported with a `ReplicaChanged`."""
    previous = replica.state
    replica.state = advance_replica(previous, event)
    if replica.state is not previous:
        out.append(
            ReplicaChanged(
                pool.pool_id,
                replica.replica_id,
                replica.state,
                previous,
                reason,
                retry_in_ms,
                breaker,
                attempt,
                failure_class,
                outcome,
            )
        )


def request_preload(
    pool: Pool, replica: Replica, event: ReplicaEvent, model_ref: str, out: list[Action]
) -> None:
    """Start a preload attempt of `model_ref` (a new generation)."""
    move(pool, replica, event, out)
    replica.model_ref = model_ref
    replica.retry_at_ms = None
    replica.probe_due_ms = None
    replica.probe_pending = False
    out.append(Preload(pool.pool_id, replica.replica_id, replica.next_generation(), model_ref))


def stop(pool: Pool, replica: Replica, out: list[Action]) -> None:
    """Stop the replica's engine: answers to earlier actions become stale."""
    replica.next_generation()
    replica.probe_due_ms = None
    replica.probe_pending = False
    out.append(StopEngine(pool.pool_id, replica.replica_id))


def want(pool: Pool, out: list[Action]) -> None:
    """A task was routed to a pool whose replicas wait for one (`preload: false`)."""
    for replica in pool.replicas.values():
        if replica.state is ReplicaState.DEFERRED:
            request_preload(pool, replica, ReplicaEvent.WANTED, pool.model_ref, out)


def ready(
    pool: Pool, replica: Replica, report: ReplicaReport, now_ms: int, out: list[Action]
) -> None:
    """A preload succeeded: the replica is Ready with what the engine reported."""
    replica.attempted = True
    replica.last_preload_outcome = PreloadOutcome.SUCCESS
    replica.last_error = None
    replica.set_live(True)
    replica.take_report(report)
    replica.tracker.succeeded(now_ms)
    replica.probe_failures = replica.probe_successes = 0
    move(pool, replica, ReplicaEvent.PRELOADED, out, outcome=PreloadOutcome.SUCCESS)


def preloaded(
    pool: Pool, replica: Replica, report: ReplicaReport, now_ms: int, out: list[Action]
) -> None:
    """A preload succeeded: the replica is Ready and will be probed."""
    ready(pool, replica, report, now_ms, out)
    replica.probe_due_ms = now_ms + pool.spec.probe_interval_ms


def preload_failed(
    pool: Pool, replica: Replica, failure: PreloadFailure, now_ms: int, out: list[Action]
) -> Loss | None:
    """A preload failed: back off (or open the breaker) and stop the engine."""
    replica.attempted = True
    replica.last_preload_outcome = failure.outcome
    replica.last_error = failure.message
    loss = _set_live(replica, failure.live, failure.message)
    _back_off(
        pool,
        replica,
        (ReplicaEvent.PRELOAD_FAILED, ReplicaEvent.PRELOAD_TRIPPED),
        now_ms,
        out,
        outcome=failure.outcome,
    )
    return loss


def probed(
    pool: Pool, replica: Replica, probe: ProbeReport, now_ms: int, out: list[Action]
) -> Loss | None:
    """A probe answered: keep, suspend, restore or lose the replica."""
    replica.probe_due_ms = now_ms + pool.spec.probe_interval_ms
    replica.probe_pending = False
    replica.kv_usage = probe.kv_usage if probe.ready else None
    if probe.live and probe.ready and not probe.exited:
        replica.probe_failures = 0
        replica.probe_successes += 1
        replica.set_live(True)
        replica.take_slots(probe.slots_free)
        if replica.state is ReplicaState.SUSPECT and replica.probe_successes >= PROBES_TO_READY:
            move(pool, replica, ReplicaEvent.RECOVERED, out, reason="answers again")
        else:
            move(pool, replica, ReplicaEvent.PROBE_OK, out)
        return None
    replica.probe_successes = 0
    replica.probe_failures += 1
    reason = "stopped answering" if not probe.live else "reports not ready"
    if probe.exited:
        return lose(pool, replica, f"engine exited ({reason})", probe.failure_class, now_ms, out)
    loss = _set_live(replica, probe.live, reason)
    if replica.probe_failures >= PROBES_TO_RESTART:
        return lose(pool, replica, reason, None, now_ms, out) or loss
    move(pool, replica, ReplicaEvent.PROBE_FAILED, out, reason=reason)
    return loss


def lose(
    pool: Pool,
    replica: Replica,
    reason: str,
    failure_class: FailureClass | None,
    now_ms: int,
    out: list[Action],
    message: str | None = None,
) -> Loss | None:
    """The replica is lost (ORCH-3038): count it, stop its engine, wait for the next try.

    Its running tasks fail with `message` (the broken stream's error), else with a message
    naming the cause; None when it was no longer live, so they have failed already.
    """
    replica.restarts += 1
    replica.failure_class = failure_class
    replica.last_error = reason if failure_class is None else f"{reason} ({failure_class})"
    was_live = replica.live
    replica.set_live(False)
    replica.probe_failures = replica.probe_successes = 0
    replica.kv_usage = None
    _back_off(
        pool,
        replica,
        (ReplicaEvent.LOST, ReplicaEvent.TRIPPED),
        now_ms,
        out,
        failure_class=failure_class,
    )
    if not was_live and message is None:
        return None
    return Loss(message or f"replica is no longer live: {replica.last_error}", failure_class)


def _back_off(
    pool: Pool,
    replica: Replica,
    events: tuple[ReplicaEvent, ReplicaEvent],
    now_ms: int,
    out: list[Action],
    *,
    failure_class: FailureClass | None = None,
    outcome: PreloadOutcome | None = None,
) -> None:
    """A failure: ask the restart tracker when to try again, stop the engine, and wait
    (`events`: the move while the breaker stays closed, and the one when it trips)."""
    decision = replica.tracker.failed(now_ms)
    replica.retry_at_ms = decision.retry_at_ms
    tripped = decision.state is BreakerState.OPEN
    stop(pool, replica, out)
    move(
        pool,
        replica,
        events[1] if tripped else events[0],
        out,
        reason=replica.last_error,
        retry_in_ms=decision.delay_ms,
        breaker=decision.state,
        attempt=decision.consecutive_failures,
        failure_class=failure_class,
        outcome=outcome,
    )


def due(pool: Pool, replica: Replica, now_ms: int, out: list[Action]) -> None:
    """Start what the replica's timers say is due: its next attempt, or its next probe."""
    state = replica.state
    if state in WAITING:
        retry_at = replica.retry_at_ms
        if retry_at is not None and retry_at <= now_ms:
            replica.tracker.attempting()
            request_preload(pool, replica, ReplicaEvent.ATTEMPT, pool.model_ref, out)
    elif state in PROBED:
        probe_at = replica.probe_due_ms
        if probe_at is not None and probe_at <= now_ms:
            replica.probe_due_ms = None
            replica.probe_pending = True
            out.append(Probe(pool.pool_id, replica.replica_id, replica.generation))


def awaiting(pool: Pool, replica: Replica) -> Preload | Probe | None:
    """The engine action the replica waits to hear back from, or None: a preload attempt
    under way, or a probe sent and not answered. A scheduler that takes over from one that
    died sends it again (the answer quotes the same generation)."""
    if replica.state is ReplicaState.PRELOADING:
        return Preload(pool.pool_id, replica.replica_id, replica.generation, replica.model_ref)
    if replica.state in PROBED and replica.probe_pending:
        return Probe(pool.pool_id, replica.replica_id, replica.generation)
    return None


def next_due_ms(replica: Replica) -> int | None:
    """When `due` has something to start for this replica, or None."""
    if replica.state in WAITING:
        return replica.retry_at_ms
    if replica.state in PROBED:
        return replica.probe_due_ms
    return None


def _set_live(replica: Replica, live: bool, reason: str) -> Loss | None:
    """Record the engine's liveness; its running tasks fail when it just stopped."""
    if replica.set_live(live):
        return Loss(f"replica is no longer live: {reason}")
    return None
