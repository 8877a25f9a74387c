"""The runtime's per-task records as JSON data, for snapshots of a shared state.

A snapshot of an instance (`Runtime.snapshot`) is the core's (`orchestrator_core.
persistence`) plus one record per known task: its request, caller, options, placement,
times, the token texts so far (what a scheduler that takes over checks a re-run against)
and its transcript, frames and typed events. `load` reads one back against the pools of
the running config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator_core import Dispatch, codec
from orchestratord_server.config import PoolConfig
from orchestratord_server.generated.models import TaskRequest
from orchestratord_server.runtime.tasks import EngineOptions, TaskContext
from orchestratord_server.transcripts import TaskEvent, Transcript


def dump(task: TaskContext) -> dict[str, Any]:
    """One task's record as JSON data."""
    transcript = task.transcript
    return {
        "task_id": task.task_id,
        "request": task.request.model_dump(mode="json", exclude_none=True),
        "pool_id": task.pool.id,
        "client_id": task.client_id,
        "prompt_tokens": task.prompt_tokens,
        "model_id": task.model_id,
        "options": codec.to_plain(task.options),
        "dispatch": codec.to_plain(task.dispatch),
        "dispatched_ms": task.dispatched_ms,
        "metrics_due_ms": task.metrics_due_ms,
        "ended_ms": task.ended_ms,
        "texts": list(task.texts),
        "frames": [frame.decode() for frame in transcript.frames],
        "events": None
        if transcript.events is None
        else [{"name": e.name, "data": e.data} for e in transcript.events],
        "closed": transcript.closed,
    }


def load(data: Mapping[str, Any], pools: Mapping[str, PoolConfig]) -> TaskContext:
    """A task's record read back (KeyError for a pool the config no longer has)."""
    events = data["events"]
    transcript = Transcript(keep_events=events is not None)
    transcript.frames.extend(frame.encode() for frame in data["frames"])
    if transcript.events is not None:
        transcript.events.extend(TaskEvent(e["name"], e["data"]) for e in events)
    transcript.closed = bool(data["closed"])
    task = TaskContext(
        task_id=data["task_id"],
        request=TaskRequest.model_validate(data["request"]),
        pool=pools[data["pool_id"]],
        client_id=data["client_id"],
        transcript=transcript,
        prompt_tokens=data["prompt_tokens"],
        model_id=data["model_id"],
        options=codec.decode(EngineOptions, data["options"]),
        dispatch=codec.from_plain(Dispatch | None, data["dispatch"]),
        dispatched_ms=data["dispatched_ms"],
        metrics_due_ms=data["metrics_due_ms"],
        ended_ms=data["ended_ms"],
    )
    task.texts.extend(data["texts"])
    return task
