"""A pool's bounded two-class queue and its scheduling rule (ORCH-3004, ORCH-3005, ORCH-3051).

Each priority class is an insertion-ordered map from task id to admission sequence number,
so push, pop, cancel-removal and eviction are all O(1).

Scheduling rule: `interactive` goes first, but while `batch` work waits, at most `burst`
interactive tasks are dispatched in a row; then the oldest batch task goes. Hence the batch
task at index j of its class is dispatched after at most (j + 1) x burst interactive
tasks and j batch tasks, however many interactive tasks keep arriving: batch is never
starved.

Capacity: the pool's `capacity` bounds the whole queue, and each class may have its own
cap. `blocking_limit` tells which limit a newcomer hits; `victim` applies the pool's full
policy (ORCH-3005):

* reject            — nobody is evicted, the newcomer is refused;
* drop-lru          — the oldest queued task whose removal makes room (the class's oldest
                      when the class cap is hit, otherwise the oldest of the pool);
* shed-low-priority — an interactive newcomer blocked by the pool capacity evicts the
                      newest batch task; otherwise (batch newcomer, interactive cap hit, or
                      no batch task queued) the newcomer is refused.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import StrEnum
from itertools import islice
from typing import Any

from orchestrator_core.vocabulary import Priority, QueuePolicy


class Limit(StrEnum):
    """Which capacity a newcomer runs into."""

    POOL = "pool"
    CLASS = "class"


class PoolQueue:
    """Two FIFO classes with a shared capacity and the anti-starvation rule."""

    __slots__ = (
        "_batch",
        "_classes",
        "_interactive",
        "_streak",
        "batch_cap",
        "burst",
        "capacity",
        "interactive_cap",
    )

    def __init__(
        self, capacity: int, interactive_cap: int | None, batch_cap: int | None, burst: int
    ) -> None:
        self.capacity = capacity
        self.interactive_cap = interactive_cap
        self.batch_cap = batch_cap
        self.burst = burst
        self._interactive: OrderedDict[str, int] = OrderedDict()
        self._batch: OrderedDict[str, int] = OrderedDict()
        self._classes = self._by_priority()
        self._streak = 0

    def __len__(self) -> int:
        return len(self._interactive) + len(self._batch)

    def export_state(self) -> dict[str, Any]:
        """The queued ids with their sequence numbers, in order, and the burst streak."""
        return {
            "interactive": [[task_id, seq] for task_id, seq in self._interactive.items()],
            "batch": [[task_id, seq] for task_id, seq in self._batch.items()],
            "streak": self._streak,
        }

    def restore_state(self, data: dict[str, Any]) -> None:
        """Take back what `export_state` gave."""
        self._interactive = OrderedDict((task_id, seq) for task_id, seq in data["interactive"])
        self._batch = OrderedDict((task_id, seq) for task_id, seq in data["batch"])
        self._classes = self._by_priority()
        self._streak = data["streak"]

    def _by_priority(self) -> dict[Priority, OrderedDict[str, int]]:
        """Each class's map by its priority (looked up on every push, removal, depth)."""
        return {Priority.INTERACTIVE: self._interactive, Priority.BATCH: self._batch}

    def depth(self, priority: Priority) -> int:
        """Tasks queued in one class."""
        return len(self._classes[priority])

    def index(self, task_id: str, priority: Priority) -> int:
        """Where a queued task stands in its class (0 is its oldest); O(that index)."""
        for index, queued in enumerate(self._classes[priority]):
            if queued == task_id:
                return index
        raise KeyError(task_id)

    def ids(self, priority: Priority, limit: int | None = None) -> list[str]:
        """Queued ids of one class, oldest first; the first `limit` of them when given."""
        queued = self._classes[priority]
        return list(queued if limit is None else islice(queued, limit))

    def blocking_limit(self, priority: Priority) -> Limit | None:
        """The limit a newcomer of `priority` would exceed, or None when it fits."""
        cap = self.interactive_cap if priority is Priority.INTERACTIVE else self.batch_cap
        if cap is not None and len(self._classes[priority]) >= cap:
            return Limit.CLASS
        if len(self._interactive) + len(self._batch) >= self.capacity:
            return Limit.POOL
        return None

    def push(self, task_id: str, priority: Priority, seq: int) -> None:
        """Append a task to the tail of its class."""
        self._classes[priority][task_id] = seq

    def remove(self, task_id: str, priority: Priority) -> None:
        """Take a queued task out (cancel, eviction, drain)."""
        del self._classes[priority][task_id]

    def _batch_next(self) -> bool:
        if not self._interactive:
            return True
        return bool(self._batch) and self._streak >= self.burst

    def peek_next(self) -> str | None:
        """The id that `pop_next` would return, or None when empty."""
        if not (self._interactive or self._batch):
            return None
        return next(iter(self._batch if self._batch_next() else self._interactive))

    def pop_next(self) -> str:
        """Remove and return the next task under the scheduling rule (queue not empty)."""
        if self._batch_next():
            self._streak = 0
            return self._batch.popitem(last=False)[0]
        self._streak = self._streak + 1 if self._batch else 0
        return self._interactive.popitem(last=False)[0]

    def position(self, priority: Priority, index: int) -> int:
        """How many tasks go before the one at `index` of its class, if nobody arrives."""
        waiting = len(self._batch)
        if priority is Priority.INTERACTIVE and waiting == 0:
            return index
        burst = self.burst
        lead = burst - self._streak  # interactive tasks that may still go in a row
        lead = lead if lead > 0 else 0
        if priority is Priority.INTERACTIVE:
            if index < lead:
                return index
            ahead, bound = 1 + (index - lead) // burst, waiting
        else:
            ahead, bound = lead + index * burst, len(self._interactive)
        return index + (ahead if ahead < bound else bound)

    def serving_order(self, limit: int) -> list[tuple[str, Priority]]:
        """The first `limit` queued tasks in the order `pop_next` would take them, if
        nobody arrives."""
        interactive = self.ids(Priority.INTERACTIVE, limit)
        batch = self.ids(Priority.BATCH, limit)
        order: list[tuple[str, Priority]] = []
        streak, i, b = self._streak, 0, 0
        while len(order) < limit and (i < len(interactive) or b < len(batch)):
            batch_waits = b < len(batch)
            if i == len(interactive) or (batch_waits and streak >= self.burst):
                order.append((batch[b], Priority.BATCH))
                b, streak = b + 1, 0
            else:
                order.append((interactive[i], Priority.INTERACTIVE))
                i += 1
                streak = streak + 1 if batch_waits else 0
        return order

    def crowded_position(self, priority: Priority, index: int) -> int:
        """The latest `position` the task at `index` can take however many tasks of the
        other class arrive: the burst rule's bound. It is never less than its position
        now, which takes the same terms with the other class's tasks queued now as
        their bound."""
        lead = self.burst - self._streak
        lead = lead if lead > 0 else 0
        if priority is Priority.INTERACTIVE:
            return index if index < lead else index + 1 + (index - lead) // self.burst
        return index + lead + index * self.burst

    def dispatches_to_fit(self, priority: Priority, limit: Limit) -> int:
        """How many dispatches bring the queue under `limit` for a newcomer of `priority`."""
        if limit is Limit.POOL:
            return len(self) - self.capacity + 1
        cap = self.interactive_cap if priority is Priority.INTERACTIVE else self.batch_cap
        excess = len(self._classes[priority]) - (cap or 0)
        return self.position(priority, excess) + 1

    def victim(
        self, policy: QueuePolicy, priority: Priority, limit: Limit
    ) -> tuple[str, Priority] | None:
        """The queued task the full policy evicts for a newcomer, or None to refuse it."""
        if policy is QueuePolicy.DROP_LRU:
            if limit is Limit.CLASS:
                return next(iter(self._classes[priority])), priority
            return self._oldest()
        if (
            policy is QueuePolicy.SHED_LOW_PRIORITY
            and priority is Priority.INTERACTIVE
            and limit is Limit.POOL
            and self._batch
        ):
            return next(reversed(self._batch)), Priority.BATCH
        return None

    def _oldest(self) -> tuple[str, Priority]:
        if not self._batch:
            return next(iter(self._interactive)), Priority.INTERACTIVE
        if not self._interactive:
            return next(iter(self._batch)), Priority.BATCH
        first_i, seq_i = next(iter(self._interactive.items()))
        first_b, seq_b = next(iter(self._batch.items()))
        if seq_i < seq_b:
            return first_i, Priority.INTERACTIVE
        return first_b, Priority.BATCH
