"""Metrics (ORCH-3028) and task logs (ORCH-3027) for each step of a task's life.

One method per step, called by the runtime as it carries out the core's decisions, so the
counters a client can check (admitted, started, canceled by reason, rejected by code,
tokens) and the log records never disagree about what happened.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator_core import Admitted, Dispatch, ErrorKind, Refused, TaskEnded, TaskFailed
from orchestratord_server.generated.models import TaskRequest
from orchestratord_server.logs import task_event
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime.tasks import TaskContext

UNKNOWN_VERSION = "unknown"

#: Failures that are evictions from a full queue (ORCH-3005): logged as task.evicted.
EVICTIONS = frozenset({ErrorKind.QUEUE_FULL_DROP_LRU, ErrorKind.ADMISSION_REJECT})


class Recorder:
    """Counts and logs task steps."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def admitted(self, task: TaskContext, decision: Admitted, version: str | None) -> None:
        pool = task.pool
        self._metrics["tasks_enqueued_total"].labels(
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
        self._metrics["admission_backpressure_events_total"].labels(engine, policy).inc()

    def refused(self, request: TaskRequest, decision: Refused) -> None:
        engine = request.engine.value
        self._metrics["tasks_rejected_total"].labels(engine, decision.kind.value).inc()
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
        self._metrics["tasks_started_total"].labels(
            pool.engine.value,
            task.engine_version or UNKNOWN_VERSION,
            pool.id,
            dispatch.replica_id,
            task.request.priority.value,
        ).inc()
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

    def _tokens(self, task: TaskContext, replica_id: str) -> None:
        pool = task.pool
        labels = (pool.engine.value, task.engine_version or UNKNOWN_VERSION, pool.id, replica_id)
        if task.tokens_out:
            self._metrics["tokens_out_total"].labels(*labels).inc(task.tokens_out)
        if task.tokens_in:
            self._metrics["tokens_in_total"].labels(*labels).inc(task.tokens_in)

    def ended(self, task: TaskContext, outcome: TaskEnded) -> None:
        pool = task.pool
        engine, version = pool.engine.value, task.engine_version or UNKNOWN_VERSION
        priority = task.request.priority.value
        self._tokens(task, outcome.replica_id)
        if task.first_token_ms is not None:
            self._metrics["latency_first_token_ms"].labels(
                engine, version, pool.id, priority
            ).observe(task.first_token_ms - task.admitted_ms)
        self._metrics["latency_decode_ms"].labels(engine, version, pool.id, priority).observe(
            outcome.decode_ms
        )
        task_event(
            "task.ended",
            f"task ended: {outcome.finish_reason.value}",
            lambda: task.log_fields() | {"finish_reason": outcome.finish_reason.value},
        )

    def canceled(self, task: TaskContext, replica_id: str | None) -> None:
        pool = task.pool
        replica = replica_id or pool.id
        self._tokens(task, replica)
        self._metrics["tasks_canceled_total"].labels(
            pool.engine.value,
            task.engine_version or UNKNOWN_VERSION,
            pool.id,
            replica,
            task.cancel_label,
        ).inc()
        task_event(
            "task.canceled",
            f"task canceled ({task.cancel_label})",
            lambda: task.log_fields() | {"reason": task.cancel_label},
        )

    def failed(self, task: TaskContext, outcome: TaskFailed) -> None:
        pool = task.pool
        self._tokens(task, outcome.replica_id or pool.id)
        evicted = outcome.kind in EVICTIONS
        if evicted:
            self._metrics["tasks_rejected_total"].labels(
                pool.engine.value, outcome.kind.value
            ).inc()

        def fields() -> dict[str, Any]:
            return task.log_fields() | {
                "code": outcome.kind.value,
                "eviction_events": int(evicted),
            }

        event = "task.evicted" if evicted else "task.failed"
        task_event(event, f"task {event[5:]}: {outcome.kind.value}", fields, logging.WARNING)
