"""The tasks that ended lately, for followers of the control-plane event stream.

Every instance closes every task's transcript when the core ends it (the leader and, on
the JetStream backend, every follower applying the log), and records the end here: the
task's priority and its terminal outcome, under a number that grows by one per end. A
follower asks for the ends after the last number it saw; only the latest `keep` ends are
held, so a follower that fell further behind gets those. Per pool, how many tasks ended
and how many tokens they streamed are counted over the daemon's life, so figures per
interval stay exact whatever the follower missed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from orchestrator_core import ErrorKind, Priority, TaskCanceled, TaskEnded, Terminal

#: Failures that are evictions from a full queue (ORCH-3005).
EVICTIONS = frozenset({ErrorKind.QUEUE_FULL_DROP_LRU, ErrorKind.ADMISSION_REJECT})
#: The `code` of a task that finished.
FINISHED_CODE = "ok"


def outcome_result(outcome: Terminal) -> tuple[str, str]:
    """How a task ended, as `result` and `code` (finished/ok, canceled/<reason>,
    failed/<ErrorKind>, evicted/<ErrorKind>)."""
    if isinstance(outcome, TaskEnded):
        return "finished", FINISHED_CODE
    if isinstance(outcome, TaskCanceled):
        return "canceled", outcome.reason.value
    return ("evicted" if outcome.kind in EVICTIONS else "failed"), outcome.kind.value


@dataclass(frozen=True, slots=True)
class Ended:
    """One task's end, numbered."""

    number: int
    priority: Priority
    outcome: Terminal


class RecentEnds:
    """The latest ends, numbered, and per-pool totals."""

    __slots__ = ("_ends", "_number", "ended", "tokens_out")

    def __init__(self, keep: int = 1024) -> None:
        self._ends: deque[Ended] = deque(maxlen=keep)
        self._number = 0
        #: Tasks ended per pool, over the daemon's life.
        self.ended: dict[str, int] = {}
        #: Tokens streamed by the tasks ended per pool, over the daemon's life.
        self.tokens_out: dict[str, int] = {}

    @property
    def last(self) -> int:
        """The number of the latest end (0 before any)."""
        return self._number

    def add(self, priority: Priority, outcome: Terminal) -> None:
        """Record one end."""
        self._number += 1
        self._ends.append(Ended(self._number, priority, outcome))
        pool_id = outcome.pool_id
        self.ended[pool_id] = self.ended.get(pool_id, 0) + 1
        self.tokens_out[pool_id] = self.tokens_out.get(pool_id, 0) + outcome.figures.tokens_out

    def since(self, number: int) -> list[Ended]:
        """The ends held whose number is above `number`, oldest first."""
        out = []
        for end in reversed(self._ends):
            if end.number <= number:
                break
            out.append(end)
        out.reverse()
        return out
