"""The control-plane event stream (`GET /v1/events`): pools, replicas and tasks as they change.

Theory of operation. One feed per server. While at least one client follows it, a ticker
looks at the runtime every `interval_ms`: each pool's health (the body of
`GET /v1/pools/{id}/health`), each pool's running and queued tasks (the queue with its
positions and predicted starts as of now), and the ends recorded since its last look. It
compares what it renders with what it sent last and sends what differs, as `pool` and
`task` events, to every follower; every `STATS_EVERY` looks it sends each pool's figures
over the time since (`stats`). Every event is a whole state keyed by its pool or task id,
so one sent twice changes nothing: a follower starts with a `snapshot` of everything,
taken when it joins, and applies what follows. Nothing is computed while nobody follows.

Only the first `QUEUED_SHOWN` queued tasks of each pool are followed, so a deep queue
costs a look no more than a short one; the rest are counted in the pool's queue depth. A
follower that stops reading is dropped once `MAX_PENDING` looks wait for it; its client
reconnects and starts again from a snapshot. When the daemon begins to shut down
the streams end (after the changes of that look), so they never hold its exit back.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator

from orchestrator_core import TaskCanceled, TaskEnded, TaskView, Terminal
from orchestratord_server.generated.models import (
    ControlSnapshot,
    PoolHealth,
    PoolStats,
    Priority,
    TaskOutcome,
    TaskResult,
    TaskState,
    TaskSummary,
)
from orchestratord_server.handlers.health import pool_health
from orchestratord_server.handlers.render import live_task_fields
from orchestratord_server.runtime import Runtime
from orchestratord_server.runtime.recent_ends import Ended, outcome_result

#: How often the feed looks for changes.
INTERVAL_MS = 250
#: Looks between two `stats` events (once a second).
STATS_EVERY = 4
#: Ended tasks per pool in a snapshot.
RECENT_PER_POOL = 50
#: Queued tasks per pool the stream follows, from the head of the queue.
QUEUED_SHOWN = 200
#: Looks (each one chunk of frames) that may wait for one follower before it is dropped.
MAX_PENDING = 64


def frame(event: str, data: str) -> bytes:
    """One SSE frame: its event name and its single-line JSON data."""
    return f"event: {event}\ndata: {data}\n\n".encode()


def _json(model: PoolHealth | TaskSummary | PoolStats | ControlSnapshot) -> str:
    return model.model_dump_json(by_alias=True, exclude_none=True)


def live_summary(view: TaskView) -> TaskSummary:
    """A queued or running task."""
    return TaskSummary(**live_task_fields(view))


def ended_summary(priority: Priority, outcome: Terminal) -> TaskSummary:
    """An ended task, from its terminal outcome alone."""
    figures = outcome.figures
    started = figures.decode_ms is not None
    result, code = outcome_result(outcome)
    if isinstance(outcome, TaskEnded):
        state, finish, message = TaskState.ENDED, outcome.finish_reason.value, None
    elif isinstance(outcome, TaskCanceled):
        state, finish, message = TaskState.CANCELED, None, None
    else:
        state, finish, message = TaskState.FAILED, None, outcome.message
    first = figures.first_token_ms
    return TaskSummary(
        task_id=outcome.task_id,
        pool_id=outcome.pool_id,
        replica_id=outcome.replica_id,
        priority=priority,
        state=state,
        tokens_out=figures.tokens_out,
        queue_time_ms=figures.queue_time_ms if started else None,
        first_token_ms=None if first is None else figures.queue_time_ms + first,
        outcome=TaskOutcome(
            result=TaskResult(result),
            code=code,
            finish_reason=finish,
            message=message,
            decode_ms=figures.decode_ms,
        ),
    )


class _Follower:
    """One open stream: the frames waiting for it."""

    __slots__ = ("frames",)

    def __init__(self) -> None:
        #: Chunks of frames to send, one per look; None ends the stream.
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue(MAX_PENDING)


class ControlFeed:
    """Follows the runtime for the control-plane event stream."""

    def __init__(self, runtime: Runtime, interval_ms: int = INTERVAL_MS) -> None:
        self._runtime = runtime
        self._interval_ms = interval_ms
        self._followers: set[_Follower] = set()
        self._ticker: asyncio.Task[None] | None = None
        #: What was last sent: each pool's health and each live task, as JSON text.
        self._pools_sent: dict[str, str] = {}
        self._tasks_sent: dict[str, str] = {}
        self._ends_seen = 0
        #: Tasks whose time to first token went into a stats figure already.
        self._first_tokens_seen: set[str] = set()
        self._first_tokens: dict[str, list[int]] = {}
        self._streamed_before: dict[str, int] = {}
        self._ended_before: dict[str, int] = {}
        self._stats_at = 0.0
        self._looks = 0

    async def follow(self) -> AsyncIterator[bytes]:
        """One client's stream: a snapshot, then the changes, until the daemon ends it."""
        follower = _Follower()
        snapshot = self._snapshot()
        if self._ticker is None:
            self._start(snapshot)
        self._followers.add(follower)
        try:
            yield frame("snapshot", _json(snapshot))
            while (data := await follower.frames.get()) is not None:
                yield data
        finally:
            self._followers.discard(follower)

    # -- looking ---------------------------------------------------------------------------

    def _snapshot(self) -> ControlSnapshot:
        runtime = self._runtime
        pools = [pool_health(runtime, runtime.pool_status(p)) for p in runtime.pool_ids]
        tasks = [
            live_summary(view)
            for pool_id in runtime.pool_ids
            for view in runtime.pool_tasks(pool_id, QUEUED_SHOWN)
        ]
        recent: dict[str, deque[TaskSummary]] = {}
        for end in runtime.recent_ends.since(0):
            kept = recent.setdefault(end.outcome.pool_id, deque(maxlen=RECENT_PER_POOL))
            kept.append(ended_summary(end.priority, end.outcome))
        tasks.extend(summary for kept in recent.values() for summary in kept)
        return ControlSnapshot(interval_ms=self._interval_ms, pools=pools, tasks=tasks)

    def _start(self, snapshot: ControlSnapshot) -> None:
        """Take `snapshot` as what was sent, and start looking every interval."""
        runtime = self._runtime
        self._pools_sent = {p.pool_id or "": _json(p) for p in snapshot.pools}
        self._tasks_sent = {str(t.task_id): _json(t) for t in snapshot.tasks if t.outcome is None}
        self._ends_seen = runtime.recent_ends.last
        self._first_tokens_seen = {
            str(t.task_id) for t in snapshot.tasks if t.first_token_ms is not None
        }
        self._first_tokens = {}
        self._streamed_before = self._streamed()
        self._ended_before = dict(runtime.recent_ends.ended)
        self._stats_at = time.monotonic()
        self._looks = 0
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        try:
            while self._followers:
                await asyncio.sleep(self._interval_ms / 1000)
                frames = self.look()
                if frames:
                    chunk = b"".join(frames)
                    for follower in list(self._followers):
                        try:
                            follower.frames.put_nowait(chunk)
                        except asyncio.QueueFull:
                            self._drop(follower)
                if self._runtime.shutting_down:
                    self._end_streams()
        finally:
            self._ticker = None if self._ticker is asyncio.current_task() else self._ticker

    def look(self) -> list[bytes]:
        """What changed since the last look, as frames (and `stats` when due)."""
        runtime = self._runtime
        frames: list[bytes] = []
        live: dict[str, str] = {}
        for pool_id in runtime.pool_ids:
            health = _json(pool_health(runtime, runtime.pool_status(pool_id)))
            if self._pools_sent.get(pool_id) != health:
                self._pools_sent[pool_id] = health
                frames.append(frame("pool", health))
            for view in runtime.pool_tasks(pool_id, QUEUED_SHOWN):
                text = _json(live_summary(view))
                live[view.task_id] = text
                if self._tasks_sent.get(view.task_id) != text:
                    frames.append(frame("task", text))
                self._first_token(view.task_id, pool_id, view.time_to_first_token_ms)
        ends = runtime.recent_ends.since(self._ends_seen)
        ended = {end.outcome.task_id for end in ends}
        for end in ends:
            frames.append(frame("task", _json(ended_summary(end.priority, end.outcome))))
            self._ended_first_token(end)
        for task_id in self._tasks_sent.keys() - live.keys() - ended:
            frames.extend(self._vanished(task_id))
        self._ends_seen = runtime.recent_ends.last
        self._tasks_sent = live
        self._first_tokens_seen &= live.keys()
        self._looks += 1
        if self._looks % STATS_EVERY == 0:
            frames.extend(self._stats())
        return frames

    def _vanished(self, task_id: str) -> list[bytes]:
        """A task that left the followed ones without an end held for it (more ended
        since the last look than are held): its end as the core still knows it. One that
        arrivals pushed back beyond `QUEUED_SHOWN` is still queued and sends nothing."""
        view = self._runtime.task_view(task_id)
        if view is None or view.outcome is None:
            return []
        return [frame("task", _json(ended_summary(view.priority, view.outcome)))]

    def _first_token(self, task_id: str, pool_id: str, first_token_ms: int | None) -> None:
        if first_token_ms is None or task_id in self._first_tokens_seen:
            return
        self._first_tokens_seen.add(task_id)
        self._first_tokens.setdefault(pool_id, []).append(first_token_ms)

    def _ended_first_token(self, end: Ended) -> None:
        figures, task_id = end.outcome.figures, end.outcome.task_id
        if figures.first_token_ms is not None and task_id not in self._first_tokens_seen:
            first = figures.queue_time_ms + figures.first_token_ms
            self._first_tokens.setdefault(end.outcome.pool_id, []).append(first)
        self._first_tokens_seen.discard(task_id)

    def _streamed(self) -> dict[str, int]:
        """Tokens streamed per pool over the daemon's life: those of ended tasks, and
        those live tasks sent so far."""
        runtime = self._runtime
        ended = runtime.recent_ends.tokens_out
        return {
            pool_id: ended.get(pool_id, 0) + sum(v.tokens for v in runtime.pool_tasks(pool_id, 0))
            for pool_id in runtime.pool_ids
        }

    def _stats(self) -> list[bytes]:
        runtime = self._runtime
        now = time.monotonic()
        interval_ms = max(1, round((now - self._stats_at) * 1000))
        streamed, ended = self._streamed(), runtime.recent_ends.ended
        frames = []
        for view in runtime.pool_views():
            pool_id = view.pool_id
            firsts = self._first_tokens.get(pool_id)
            stats = PoolStats(
                pool_id=pool_id,
                interval_ms=interval_ms,
                queue_depth=view.queue_depth,
                tasks_running=view.running,
                slots_total=view.slots_total,
                tokens_out=streamed[pool_id] - self._streamed_before.get(pool_id, 0),
                tasks_ended=ended.get(pool_id, 0) - self._ended_before.get(pool_id, 0),
                first_token_p50_ms=round(statistics.median(firsts)) if firsts else None,
            )
            frames.append(frame("stats", _json(stats)))
        self._streamed_before, self._ended_before = streamed, dict(ended)
        self._first_tokens = {}
        self._stats_at = now
        return frames

    # -- followers -------------------------------------------------------------------------

    def _drop(self, follower: _Follower) -> None:
        """A follower that stopped reading: its stream ends (its client reconnects)."""
        self._followers.discard(follower)
        while not follower.frames.empty():
            follower.frames.get_nowait()
        follower.frames.put_nowait(None)

    def _end_streams(self) -> None:
        for follower in list(self._followers):
            self._drop(follower)
