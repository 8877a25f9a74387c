"""Metrics (ORCH-3028) and logs (ORCH-3027, ORCH-3038) for what the core decided.

One method per decision, called by the runtime as it carries the decision out, so the
counters a client can check (admitted, started, canceled by reason, rejected by code,
tokens, every terminal outcome once, refusals by pool), the queue-wait and task-duration
histograms and the log records never disagree about what happened. Pool and replica life
cycle moves (`PoolChanged`, `ReplicaChanged`) become the operator's log records:
`pool.ready`, `pool.unready`, `pool.preload`, `replica.restart`, `replica.driver_reset`,
`pool.reload`, `pool.drain`.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator_core import (
    Admitted,
    BreakerState,
    Dispatch,
    PoolChanged,
    PoolPhase,
    Refused,
    ReplicaChanged,
    ReplicaState,
    TaskCanceled,
    TaskEnded,
    TaskFailed,
    TaskFigures,
    informative_start,
)
from orchestratord_server.generated.models import TaskRequest
from orchestratord_server.logs import log_event, task_event
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime.recent_ends import EVICTIONS, outcome_result
from orchestratord_server.runtime.tasks import TaskContext

log = logging.getLogger("orchestratord.pool")

UNKNOWN_VERSION = "unknown"

_RELOAD_PHASES = (PoolPhase.RELOADING, PoolPhase.LOADING, PoolPhase.ROLLING_BACK)
#: The `pool_id` of a refusal that came before a pool was chosen.
NO_POOL = ""


class Recorder:
    """Counts and logs what the core decided."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    # -- tasks ---------------------------------------------------------------------------

    def admitted(self, task: TaskContext, decision: Admitted, version: str | None) -> None:
        pool = task.pool
        self._metrics.labeled(
            "tasks_enqueued_total",
            pool.engine.value,
            version or UNKNOWN_VERSION,
            pool.id,
            pool.id,
            task.request.priority.value,
        ).inc()
        task_event(
            "task.admitted",
            f"task admitted to pool {pool.id}",
            lambda: (
                task.log_fields()
                | {
                    "queue_position": decision.queue_position,
                    "predicted_start_ms": decision.predicted_start_ms,
                    "seed": decision.seed,
                }
            ),
        )
        if decision.evicted is not None:
            self.backpressure(pool.engine.value, pool.queue.full_policy.value)

    def backpressure(self, engine: str, policy: str) -> None:
        self._metrics.labeled("admission_backpressure_events_total", engine, policy).inc()

    def refused(self, request: TaskRequest, decision: Refused) -> None:
        engine = request.engine.value
        self._metrics.labeled("tasks_rejected_total", engine, decision.kind.value).inc()
        self._metrics.labeled(
            "orchestratord_admission_refusals_total",
            engine,
            decision.pool_id or NO_POOL,
            decision.kind.value,
        ).inc()
        if decision.policy is not None:
            self.backpressure(engine, decision.policy.value)
        task_event(
            "task.refused",
            f"task refused: {decision.kind.value}",
            lambda: {
                "job_id": str(request.task_id),
                "session_id": str(request.session_id),
                "engine": engine,
                "pool_id": decision.pool_id,
                "model_id": request.model_ref,
                "ctx": request.ctx,
                "code": decision.kind.value,
                "backoff_ms": decision.backoff_ms,
            },
        )

    def dispatched(self, task: TaskContext, dispatch: Dispatch) -> None:
        pool = task.pool
        self._metrics.labeled(
            "tasks_started_total",
            pool.engine.value,
            dispatch.engine_version or UNKNOWN_VERSION,
            pool.id,
            dispatch.replica_id,
            task.request.priority.value,
        ).inc()
        labels = (pool.engine.value, pool.id, task.request.priority.value)
        self._metrics.labeled("orchestratord_queue_wait_seconds", *labels).observe(
            dispatch.queue_time_ms / 1000
        )
        if informative_start(dispatch.queue_time_ms, dispatch.predicted_start_ms):
            error_ms = dispatch.queue_time_ms - dispatch.predicted_start_ms
            self._metrics.labeled("orchestratord_queue_eta_error_seconds", *labels).observe(
                error_ms / 1000
            )
        task_event(
            "task.dispatched",
            f"task dispatched to {pool.id}/{dispatch.replica_id}",
            lambda: (
                task.log_fields()
                | {
                    "queue_position": dispatch.queue_position,
                    "predicted_start_ms": dispatch.predicted_start_ms,
                    "seed": dispatch.seed,
                }
            ),
        )

    def _labels(self, task: TaskContext, replica_id: str | None) -> tuple[str, str, str, str]:
        pool, placed = task.pool, task.dispatch
        version = placed.engine_version if placed and placed.engine_version else UNKNOWN_VERSION
        return pool.engine.value, version, pool.id, replica_id or pool.id

    def _tokens(self, task: TaskContext, replica_id: str | None, figures: TaskFigures) -> None:
        labels = self._labels(task, replica_id)
        if figures.tokens_out:
            self._metrics.labeled("tokens_out_total", *labels).inc(figures.tokens_out)
        if figures.tokens_in:  # the engine's own count, once it reported one
            self._metrics.labeled("tokens_in_total", *labels).inc(figures.tokens_in)

    def _completed(self, task: TaskContext, outcome: TaskEnded | TaskCanceled | TaskFailed) -> None:
        """Count a terminal outcome once and observe the task's time from admission."""
        pool, priority = task.pool, task.request.priority.value
        result, code = outcome_result(outcome)
        figures = outcome.figures
        engine = pool.engine.value
        self._metrics.labeled(
            "orchestratord_tasks_completed_total", engine, pool.id, priority, result, code
        ).inc()
        self._metrics.labeled(
            "orchestratord_task_duration_seconds", engine, pool.id, priority, result
        ).observe((figures.queue_time_ms + (figures.decode_ms or 0)) / 1000)

    def ended(self, task: TaskContext, outcome: TaskEnded) -> None:
        figures = outcome.figures
        engine, version, pool_id, _ = self._labels(task, outcome.replica_id)
        priority = task.request.priority.value
        self._tokens(task, outcome.replica_id, figures)
        self._completed(task, outcome)
        if figures.first_token_ms is not None:
            self._metrics.labeled(
                "latency_first_token_ms", engine, version, pool_id, priority
            ).observe(figures.queue_time_ms + figures.first_token_ms)
        self._metrics.labeled("latency_decode_ms", engine, version, pool_id, priority).observe(
            figures.decode_ms or 0
        )
        task_event(
            "task.ended",
            f"task ended: {outcome.finish_reason.value}",
            lambda: task.log_fields(figures) | {"finish_reason": outcome.finish_reason.value},
        )

    def canceled(self, task: TaskContext, outcome: TaskCanceled) -> None:
        reason = outcome.reason.value
        self._tokens(task, outcome.replica_id, outcome.figures)
        self._metrics.labeled(
            "tasks_canceled_total", *self._labels(task, outcome.replica_id), reason
        ).inc()
        self._completed(task, outcome)
        task_event(
            "task.canceled",
            f"task canceled ({reason})",
            lambda: task.log_fields(outcome.figures) | {"reason": reason},
        )

    def failed(self, task: TaskContext, outcome: TaskFailed) -> None:
        self._tokens(task, outcome.replica_id, outcome.figures)
        evicted = outcome.kind in EVICTIONS
        if evicted:
            self._metrics.labeled(
                "tasks_rejected_total", task.pool.engine.value, outcome.kind.value
            ).inc()
        else:
            self._metrics.labeled(
                "tasks_failed_total", *self._labels(task, outcome.replica_id), outcome.kind.value
            ).inc()
        self._completed(task, outcome)

        def fields() -> dict[str, Any]:
            return task.log_fields(outcome.figures, outcome.failure_class) | {
                "code": outcome.kind.value,
                "message": outcome.message,
                "eviction_events": int(evicted),
            }

        event = "task.evicted" if evicted else "task.failed"
        task_event(event, f"task {event[5:]}: {outcome.kind.value}", fields, logging.WARNING)

    # -- pools and replicas ----------------------------------------------------------------

    def replica_changed(self, change: ReplicaChanged) -> None:
        """The log record of a replica's life-cycle move (ORCH-3002, ORCH-3038, ORCH-3053)."""
        where = {"pool_id": change.pool_id, "replica_id": change.replica_id}
        label = f"{change.pool_id}/{change.replica_id}"
        state, previous = change.state, change.previous
        if state is ReplicaState.READY:
            message = (
                f"{label} answers again"
                if previous is ReplicaState.SUSPECT
                else (f"{label} is Ready")
            )
            log_event(log, logging.INFO, "pool.ready", message, **where)
        elif state is ReplicaState.SUSPECT:
            log_event(log, logging.WARNING, "pool.unready", f"{label} {change.reason}", **where)
        elif state is ReplicaState.PRELOADING and previous is ReplicaState.DEFERRED:
            log_event(log, logging.INFO, "pool.preload", f"{label} loads now", **where)
        elif state in (ReplicaState.BACKING_OFF, ReplicaState.BREAKER_OPEN):
            self._failed_replica(change, label, where)

    @staticmethod
    def _failed_replica(change: ReplicaChanged, label: str, where: dict[str, str]) -> None:
        fields: dict[str, Any] = {
            "attempt": change.attempt,
            "retry_in_ms": change.retry_in_ms,
            "breaker": change.breaker.value if change.breaker else None,
            **where,
        }
        if change.previous is ReplicaState.PRELOADING:
            closed = change.breaker is BreakerState.CLOSED
            outcome = change.outcome.value if change.outcome else None
            log_event(
                log,
                logging.WARNING if closed else logging.ERROR,
                "pool.preload",
                f"preload of {label} failed ({outcome}), retrying in {change.retry_in_ms} ms "
                f"(circuit {fields['breaker']}): {change.reason}",
                outcome=outcome,
                **fields,
            )
            return
        failure = change.failure_class
        device_fault = failure is not None and failure.device_fault
        log_event(
            log,
            logging.ERROR if device_fault else logging.WARNING,
            "replica.driver_reset" if device_fault else "replica.restart",
            f"{label} {change.reason}; restarting it in {change.retry_in_ms} ms",
            failure_class=None if failure is None else failure.value,
            **fields,
        )

    @staticmethod
    def pool_changed(change: PoolChanged) -> None:
        """The log record of a pool's life-cycle move (ORCH-2101, ORCH-2102)."""
        where = {"pool_id": change.pool_id, "model_ref": change.model_ref}
        phase, previous = change.phase, change.previous
        if phase is PoolPhase.DRAINED:
            log_event(log, logging.INFO, "pool.drain", f"pool {change.pool_id} drained", **where)
        elif phase is PoolPhase.RELOADING:
            log_event(log, logging.INFO, "pool.reload", change.detail or "", phase="drain", **where)
        elif phase is PoolPhase.ROLLING_BACK:
            log_event(
                log, logging.ERROR, "pool.reload", change.detail or "", phase="rollback", **where
            )
        elif previous in (PoolPhase.LOADING, PoolPhase.ROLLING_BACK) and phase not in (
            _RELOAD_PHASES
        ):
            success = previous is PoolPhase.LOADING
            log_event(
                log,
                logging.INFO if success else logging.ERROR,
                "pool.reload",
                change.detail or "",
                outcome="success" if success else "rolled_back",
                **where,
            )
