"""The core's one record of an admitted task, from admission until it is reaped.

Every figure of a task (admission, dispatch and first-token times on the core's clock,
tokens in and out) lives here and nowhere else; terminal decisions carry them out
(`decisions.TaskFigures`)."""

from __future__ import annotations

from orchestrator_core._state import State
from orchestrator_core.backlog import token_budget
from orchestrator_core.decisions import Terminal
from orchestrator_core.pools import Pool
from orchestrator_core.replica import Replica
from orchestrator_core.specs import TaskSpec


class Task:
    """Mutable per-task state; only the facade touches it, always through `advance`."""

    __slots__ = (
        "admitted_ms",
        "budget",
        "busy_sum",
        "dispatched_ms",
        "first_token_ms",
        "outcome",
        "pool",
        "predicted_start_ms",
        "queue_position",
        "replica",
        "seed",
        "seq",
        "spec",
        "state",
        "tokens",
        "tokens_in",
    )

    def __init__(
        self,
        spec: TaskSpec,
        pool: Pool,
        seq: int,
        now_ms: int,
        queue_position: int,
        predicted_start_ms: int,
        seed: int,
    ) -> None:
        self.spec = spec
        #: The tokens it is planned for (`backlog.token_budget`), a function of its spec.
        self.budget = token_budget(spec)
        self.pool = pool
        self.seq = seq
        self.state = State.QUEUED
        self.admitted_ms = now_ms
        self.queue_position = queue_position
        self.predicted_start_ms = predicted_start_ms
        self.seed = seed
        self.replica: Replica | None = None
        self.dispatched_ms = -1
        self.first_token_ms: int | None = None
        self.tokens = 0
        #: The busy slots of its replica summed over its tokens: its mean concurrency.
        self.busy_sum = 0
        self.tokens_in: int | None = None
        self.outcome: Terminal | None = None

    def expected_start_ms(self) -> int:
        """When the task started, or when it is predicted to start if still queued."""
        if self.dispatched_ms >= 0:
            return self.dispatched_ms
        return self.admitted_ms + self.predicted_start_ms
