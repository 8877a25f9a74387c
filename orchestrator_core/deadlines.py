"""Per-task deadlines: the budget a client gives a task at admission (ORCH-3016).

A task's `deadline_ms` counts from admission; when it runs out, queued or running, the task
fails with DECODE_TIMEOUT. Budgets differ per task, so unlike the pool watchdog (uniform
limits, insertion-ordered) this is a min-heap keyed by due time: O(log n) to arm and to
expire. Disarming (the task ended first) is O(1): the entry goes stale and is skipped when
it surfaces; the heap is rebuilt from the live entries once stale ones outnumber them, so
memory stays proportional to the tasks still waiting on a deadline.
"""

from __future__ import annotations

import heapq
from typing import Any

_COMPACT_SLACK = 64


class Deadlines:
    """Due times of the tasks that have one, earliest first."""

    __slots__ = ("_heap", "_live")

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._live: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._live)

    def arm(self, task_id: str, due_ms: int) -> None:
        """Fail `task_id` at `due_ms` unless it is disarmed first."""
        self._live[task_id] = due_ms
        heapq.heappush(self._heap, (due_ms, task_id))

    def disarm(self, task_id: str) -> None:
        """Forget a task's deadline (it ended); its heap entry goes stale."""
        if self._live.pop(task_id, None) is not None and (
            len(self._heap) > 2 * len(self._live) + _COMPACT_SLACK
        ):
            self._heap = [(due, task_id) for task_id, due in self._live.items()]
            heapq.heapify(self._heap)

    def expired(self, now_ms: int) -> list[str]:
        """Pop and return the tasks whose deadline is at or before `now_ms`."""
        heap, live, due_now = self._heap, self._live, []
        while heap and heap[0][0] <= now_ms:
            due, task_id = heapq.heappop(heap)
            if live.get(task_id) == due:
                del live[task_id]
                due_now.append(task_id)
        return due_now

    def next_deadline_ms(self) -> int | None:
        """The earliest live due time, or None."""
        heap, live = self._heap, self._live
        while heap and live.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def export_state(self) -> list[list[Any]]:
        """The live due times (stale heap entries are left behind)."""
        return [[task_id, due] for task_id, due in self._live.items()]

    def restore_state(self, data: list[list[Any]]) -> None:
        """Take back what `export_state` gave."""
        self._live = {task_id: due for task_id, due in data}
        self._heap = [(due, task_id) for task_id, due in self._live.items()]
        heapq.heapify(self._heap)

    def stored(self) -> int:
        """Heap entries held, stale ones included (bounded by the compaction rule)."""
        return len(self._heap)
