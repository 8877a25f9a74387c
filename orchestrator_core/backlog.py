"""What a pool's queued tasks are planned to take, for its forecast (ORCH-3029).

A task's token budget is what it is planned for (`token_budget`). A pool keeps the sum of
the budgets of its queued tasks, whose mean a forecast takes past the head of the queue,
and whether its queued tasks are all alike: tasks that share their budget and
`max_tokens` are expected to take the same service, so when every queued task does (the
usual case: one kind of request), a forecast places the head of the queue without
looking at its tasks one by one.

Whether they are alike is told by sums alone, so nothing depends on the order in which
tasks came and went: n numbers are all equal exactly when n times the sum of their
squares is the square of their sum (the equality case of Cauchy-Schwarz), and the sums
are of integers, so the test is exact.

This is derived state: kept up to date as tasks enter and leave the queue, rebuilt from
the queued tasks when a core is restored, never persisted.
"""

from __future__ import annotations

from orchestrator_core.specs import TaskSpec
from orchestrator_core.vocabulary import Workload


def token_budget(spec: TaskSpec) -> int:
    """The tokens a task is planned for: the client's `expected_tokens` when given (within
    `max_tokens`, at least 1), else `max_tokens`; 0 for a workload without tokens."""
    if spec.workload is not Workload.COMPLETION:
        return 0
    if spec.expected_tokens is not None:
        return min(max(1, spec.expected_tokens), spec.max_tokens)
    return spec.max_tokens


class Backlog:
    """Sums over one pool's queued tasks: how many, their token budgets and `max_tokens`,
    and the squares of both."""

    __slots__ = ("budget", "budget_squares", "count", "max_tokens", "max_tokens_squares")

    def __init__(self) -> None:
        self.count = 0
        #: The sum of the token budgets of the queued tasks.
        self.budget = 0
        self.budget_squares = 0
        self.max_tokens = 0
        self.max_tokens_squares = 0

    def add(self, budget: int, max_tokens: int) -> None:
        """A task of this budget and `max_tokens` entered the queue."""
        self.count += 1
        self.budget += budget
        self.budget_squares += budget * budget
        self.max_tokens += max_tokens
        self.max_tokens_squares += max_tokens * max_tokens

    def remove(self, budget: int, max_tokens: int) -> None:
        """A task of this budget and `max_tokens` left the queue."""
        self.count -= 1
        self.budget -= budget
        self.budget_squares -= budget * budget
        self.max_tokens -= max_tokens
        self.max_tokens_squares -= max_tokens * max_tokens

    def alike(self) -> tuple[int, int] | None:
        """The (budget, max_tokens) every queued task shares; None when they differ or
        nothing is queued."""
        count = self.count
        if (
            count
            and count * self.budget_squares == self.budget * self.budget
            and count * self.max_tokens_squares == self.max_tokens * self.max_tokens
        ):
            return self.budget // count, self.max_tokens // count
        return None
