"""A task's SSE events, written into its transcript from the core's decisions (ORCH-2002).

`started` when the core dispatches it; each accepted token; a `metrics` event after the
first token and then at most once a second (by the entries' `now_ms`, so every instance
writes the same transcript); and, for a task that started, one last `metrics` event
before its one terminal event (`end` or `error`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from orchestrator_core import Dispatch, TaskCanceled, TaskEnded, TaskFailed
from orchestratord_server.runtime.tasks import TaskContext
from orchestratord_server.transcripts import TaskEvent, emit, sse_frame, token_frame

#: A running task's stream gets a `metrics` event after its first token, then at most
#: once per this many milliseconds (ORCH-2002).
METRICS_INTERVAL_MS = 1_000


def started(task: TaskContext, dispatch: Dispatch, engine: str, now_ms: int) -> None:
    """The task was placed on a replica at ``now_ms``."""
    task.dispatch = dispatch
    task.dispatched_ms = task.metrics_due_ms = now_ms
    emit(
        task.transcript,
        "started",
        {
            "queue_position": dispatch.queue_position,
            "predicted_start_ms": dispatch.predicted_start_ms,
            "task_id": dispatch.task_id,
            "pool_id": dispatch.pool_id,
            "replica_id": dispatch.replica_id,
            "engine": engine,
            "engine_version": dispatch.engine_version,
            "model_digest": dispatch.model_digest,
            "sampler_profile_version": task.pool.sampler_profile_version,
            "kv_warmth": dispatch.kv_warmth,
            "seed": dispatch.seed,
            "queue_time_ms": dispatch.queue_time_ms,
            "kv_migrated": dispatch.kv_migrated,
        },
    )


def token(
    task: TaskContext,
    text: str,
    index: int,
    now_ms: int,
    queue_depth: Callable[[], int],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """The token ``index`` the core accepted (with its tool-call parts and
    log-probabilities in ``extra``), and the periodic `metrics` event when due."""
    transcript = task.transcript
    if extra is None:
        frame = token_frame(text, index)
        data: dict[str, Any] = {"t": text, "i": index}
    else:
        data = {"t": text, "i": index, **extra}
        frame = sse_frame("token", data)
    if transcript.events is None:
        transcript.append(frame)
    else:
        transcript.append(frame, TaskEvent("token", data))
    if now_ms >= task.metrics_due_ms:
        task.metrics_due_ms = now_ms + METRICS_INTERVAL_MS
        dispatch = task.dispatch
        metrics = {
            "tokens_out": index + 1,
            "decode_ms": now_ms - task.dispatched_ms,
            "queue_depth": queue_depth(),
            "kv_warmth": dispatch.kv_warmth if dispatch is not None else None,
        }
        emit(transcript, "metrics", metrics)


def embeddings(task: TaskContext, vectors: tuple[tuple[float, ...], ...]) -> None:
    """An embedding task's result: one `embedding` event per input, in input order."""
    for index, vector in enumerate(vectors):
        emit(task.transcript, "embedding", {"index": index, "embedding": list(vector)})


def ended(
    task: TaskContext,
    outcome: TaskEnded | TaskCanceled | TaskFailed,
    queue_depth: int,
    now_ms: int,
) -> None:
    """The task's terminal event, after a last `metrics` event if it started."""
    task.ended_ms = now_ms
    transcript = task.transcript
    figures = outcome.figures
    if figures.decode_ms is not None:
        metrics = {
            "tokens_out": figures.tokens_out,
            "decode_ms": figures.decode_ms,
            "queue_time_ms": figures.queue_time_ms,
            "queue_depth": queue_depth,
        }
        emit(transcript, "metrics", metrics)
    if isinstance(outcome, TaskEnded):
        end = {
            "tokens_out": figures.tokens_out,
            "decode_ms": figures.decode_ms,
            "tokens_in": figures.tokens_in,
            "finish_reason": outcome.finish_reason.value,
        }
        emit(transcript, "end", end, terminal=True)
    elif isinstance(outcome, TaskCanceled):
        end = {
            "tokens_out": figures.tokens_out,
            "decode_ms": figures.decode_ms or 0,
            "finish_reason": outcome.finish_reason.value,
        }
        emit(transcript, "end", end, terminal=True)
    else:
        error = {
            "code": outcome.kind.value,
            "message": outcome.message,
            "engine": task.pool.engine.value,
            "retriable": outcome.retriable,
            "retry_after_ms": outcome.backoff_ms or None,
        }
        emit(transcript, "error", error, terminal=True)
