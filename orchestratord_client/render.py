"""What the CLI prints: aligned tables for people, one JSON object per line for programs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from orchestratord_client.generated.models import (
    ControlSnapshot,
    MetricsEvent,
    PoolHealth,
    PoolStats,
    Readiness,
    ReplicaSet,
    SessionInfo,
    TaskStatus,
    TaskSummary,
)
from orchestratord_client.sse import ControlEvent, StreamEvent, event_name

MISSING = "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns left-aligned to their widest cell, two spaces apart."""
    cells = [list(headers), *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[col]) for row in cells) for col in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _cell(value: object) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def plain(model: BaseModel) -> dict[str, Any]:
    """A model as JSON-ready data, absent optional fields left out."""
    data: dict[str, Any] = model.model_dump(mode="json", exclude_none=True)
    return data


def json_line(data: Mapping[str, Any] | Sequence[Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def event_line(event: StreamEvent | ControlEvent) -> str:
    """`{"event": <name>, "data": <the event's data>}` on one line."""
    return json_line({"event": event_name(event), "data": plain(event)})


def replica_sets_table(sets: Sequence[ReplicaSet]) -> str:
    return table(
        ("REPLICA SET", "ENGINE", "MODEL", "LOAD", "SLOTS FREE", "POOLS"),
        (
            (
                s.id,
                s.engine.value,
                s.model_ref,
                s.load,
                f"{s.slots_free}/{s.slots_total}",
                ",".join(p.pool_id for p in s.pools or ()) or None,
            )
            for s in sets
        ),
    )


def pools_table(healths: Sequence[PoolHealth]) -> str:
    return table(
        ("POOL", "LIVE", "READY", "DRAINING", "QUEUE", "RUNNING", "SLOTS FREE", "ENGINE", "ERROR"),
        (
            (
                h.pool_id,
                h.live,
                h.ready,
                h.draining,
                h.metrics.get("queue_depth"),
                h.metrics.get("running"),
                _slots(h.metrics),
                " ".join(v for v in (h.engine and h.engine.value, h.engine_version) if v) or None,
                h.last_error,
            )
            for h in healths
        ),
    )


def _slots(metrics: Mapping[str, Any]) -> str | None:
    free, total = metrics.get("slots_free"), metrics.get("slots_total")
    return None if free is None or total is None else f"{free}/{total}"


def readiness_table(readiness: Readiness) -> str:
    return table(("POOL", "READY"), ((p.pool_id, p.ready) for p in readiness.pools))


def session_table(info: SessionInfo) -> str:
    return table(("FIELD", "VALUE"), plain(info).items())


def control_lines(event: ControlEvent) -> list[str]:
    """A control-plane event for people: the snapshot as a pool table and its live tasks,
    then one line per pool, task or stats event."""
    if isinstance(event, ControlSnapshot):
        return [pools_table(event.pools), *(task_line(t) for t in event.tasks)]
    if isinstance(event, PoolHealth):
        return [pool_line(event)]
    if isinstance(event, TaskSummary):
        return [task_line(event)]
    return [stats_line(event)]


def pool_line(health: PoolHealth) -> str:
    m = health.metrics
    phase = health.phase.value if health.phase else ("ready" if health.ready else "not ready")
    line = (
        f"pool {health.pool_id}: {phase}, queue {m.get('queue_depth', 0)}, "
        f"running {m.get('running', 0)}/{m.get('slots_total', 0)}"
    )
    if health.desired_model_ref and health.desired_model_ref != health.applied_model_ref:
        line += f", moving to {health.desired_model_ref}"
    if m.get("drain_remaining_ms") is not None:
        line += f", drain deadline in {m['drain_remaining_ms'] / 1000:.1f} s"
    return line + (f", last error: {health.last_error}" if health.last_error else "")


def task_line(task: TaskSummary | TaskStatus) -> str:
    head = f"task {task.task_id} ({task.pool_id}, {task.priority.value}): {task.state.value}"
    outcome = task.outcome if isinstance(task, TaskSummary) else None
    if outcome is not None:
        return f"{head}, {outcome.result.value} ({outcome.code}), {task.tokens_out} tokens"
    if task.queue_position is not None:
        start = (task.predicted_start_ms or 0) / 1000
        return f"{head} at position {task.queue_position}, starts in ~{start:.1f} s"
    return f"{head} on {task.replica_id or MISSING}, {task.tokens_out} tokens"


def queue_line(update: MetricsEvent) -> str | None:
    """A queue update (a MetricsEvent sent while the task waits) for people; None for
    any other metrics event."""
    position, start = update.queue_position, update.predicted_start_ms
    if position is None or start is None:
        return None
    return f"queued at position {position}, starts in ~{start / 1000:.1f} s"


def stats_line(stats: PoolStats) -> str:
    per_s = 1000 * stats.tokens_out / stats.interval_ms
    first = MISSING if stats.first_token_p50_ms is None else f"{stats.first_token_p50_ms} ms"
    return (
        f"stats {stats.pool_id}: {per_s:.0f} tokens/s, {stats.tasks_ended} ended, "
        f"first token p50 {first}, queue {stats.queue_depth}, "
        f"running {stats.tasks_running}/{stats.slots_total}"
    )
