"""Wall-clock and idle deadlines of a pool's running tasks (ORCH-3016).

Both timeouts are constants of the pool and the core's clock never goes back, so the tasks
ordered by dispatch time are also ordered by wall deadline, and the tasks ordered by last
activity (a task moves to the end on each token) are ordered by idle deadline. The next
deadline of either kind is therefore always at the head of an insertion-ordered map: arm,
touch, disarm and each expiry are O(1), with no heap and no stale entries. A lower bound of
the next deadline (`_check_at`) lets `expired` return at once when nothing can be due:
tokens and disarms only move deadlines later, so the bound stays valid until recomputed.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import StrEnum
from typing import Any

NEVER = 1 << 62


class Timeout(StrEnum):
    """Which watchdog limit a task exceeded."""

    WALL = "wall"
    IDLE = "idle"


class Watchdog:
    """The running tasks of one pool with their dispatch and last-activity times."""

    __slots__ = ("_activity", "_check_at", "_first_due_ms", "_started", "idle_ms", "wall_ms")

    def __init__(self, wall_ms: int, idle_ms: int) -> None:
        self.wall_ms = wall_ms
        self.idle_ms = idle_ms
        #: How soon after its dispatch a task's first deadline can fall.
        self._first_due_ms = min(wall_ms, idle_ms)
        self._started: OrderedDict[str, int] = OrderedDict()
        self._activity: OrderedDict[str, int] = OrderedDict()
        self._check_at = NEVER

    def arm(self, task_id: str, now_ms: int) -> None:
        """Start watching a task that was just dispatched."""
        self._started[task_id] = now_ms
        self._activity[task_id] = now_ms
        due = now_ms + self._first_due_ms
        if due < self._check_at:
            self._check_at = due

    def touch(self, task_id: str, now_ms: int) -> None:
        """Record a token: the idle deadline moves on."""
        activity = self._activity
        activity[task_id] = now_ms
        activity.move_to_end(task_id)

    def disarm(self, task_id: str) -> None:
        """Stop watching a task that reached a terminal state."""
        del self._started[task_id]
        del self._activity[task_id]

    def export_state(self) -> dict[str, list[list[Any]]]:
        """The watched tasks with their dispatch and last-activity times, in order."""
        return {
            "started": [[task_id, at] for task_id, at in self._started.items()],
            "activity": [[task_id, at] for task_id, at in self._activity.items()],
        }

    def restore_state(self, data: dict[str, list[list[Any]]]) -> None:
        """Take back what `export_state` gave."""
        self._started = OrderedDict((task_id, at) for task_id, at in data["started"])
        self._activity = OrderedDict((task_id, at) for task_id, at in data["activity"])
        upcoming = self.next_deadline_ms()
        self._check_at = NEVER if upcoming is None else upcoming

    def next_deadline_ms(self) -> int | None:
        """The earliest deadline of any watched task, or None."""
        if not self._started:
            return None
        wall = next(iter(self._started.values())) + self.wall_ms
        idle = next(iter(self._activity.values())) + self.idle_ms
        return min(wall, idle)

    def expired(self, now_ms: int) -> list[tuple[str, Timeout]]:
        """Remove and return the tasks whose deadline has passed (wall checked first)."""
        fired: list[tuple[str, Timeout]] = []
        if now_ms < self._check_at:
            return fired
        started, activity = self._started, self._activity
        cutoff = now_ms - self.wall_ms
        while started:
            task_id, since = next(iter(started.items()))
            if since > cutoff:
                break
            started.popitem(last=False)
            del activity[task_id]
            fired.append((task_id, Timeout.WALL))
        cutoff = now_ms - self.idle_ms
        while activity:
            task_id, since = next(iter(activity.items()))
            if since > cutoff:
                break
            activity.popitem(last=False)
            del started[task_id]
            fired.append((task_id, Timeout.IDLE))
        upcoming = self.next_deadline_ms()
        self._check_at = NEVER if upcoming is None else upcoming
        return fired
