"""A simulated engine on the core's clock, for prediction tests: slots that share speed.

Each replica decodes its running tasks together: a stream's first token comes
`prefill_ms` after dispatch, then one token every `token_ms x (1 + share x (c - 1))` ms
while `c` tasks run on the replica (share 1 is a compute-bound engine, 0 one that batches
for free). A task sends `lengths[task_id]` tokens, then finishes. Time moves in 1 ms
steps; every admission, token and end goes through the real core, so what the core
predicted at admission can be compared with when it actually dispatched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from corekit import dispatches

from orchestrator_core import Admitted, FinishReason, Orchestrator, TaskSpec


@dataclass
class Stream:
    """One task running on the simulated engine."""

    replica_id: str
    length: int
    waited: int = 0
    sent: int = 0
    progress: float = 0.0


@dataclass(frozen=True)
class Start:
    """What was predicted for one task at admission, and what happened."""

    task_id: str
    priority: str
    position: int
    predicted_ms: int
    actual_ms: int


@dataclass
class SimEngine:
    """The engine behind one core; `run` plays waves of tasks through both."""

    orch: Orchestrator
    token_ms: float = 5.0
    share: float = 0.6
    prefill_ms: int = 20
    now: int = 0
    streams: dict[str, Stream] = field(default_factory=dict)
    admitted: dict[str, tuple[int, Admitted, str]] = field(default_factory=dict)

    def per_token_ms(self, concurrency: int) -> float:
        """ms between two tokens of one stream while `concurrency` streams share a replica."""
        return self.token_ms * (1 + self.share * (concurrency - 1))

    def _dispatch(self, lengths: Mapping[str, int], starts: list[Start]) -> None:
        for dispatch in dispatches(self.orch.poll(self.now)):
            task_id = dispatch.task_id
            self.streams[task_id] = Stream(dispatch.replica_id, lengths[task_id])
            at, admitted, priority = self.admitted.pop(task_id)
            starts.append(
                Start(
                    task_id,
                    priority,
                    admitted.queue_position,
                    admitted.predicted_start_ms,
                    self.now - at,
                )
            )

    def _step(self) -> None:
        """One ms of decoding on every replica."""
        self.now += 1
        busy: dict[str, int] = {}
        for stream in self.streams.values():
            busy[stream.replica_id] = busy.get(stream.replica_id, 0) + 1
        for task_id, stream in list(self.streams.items()):
            if stream.waited < self.prefill_ms:
                stream.waited += 1
                if stream.waited == self.prefill_ms:
                    stream.progress = 1.0
            else:
                stream.progress += 1 / self.per_token_ms(busy[stream.replica_id])
            while stream.progress >= 1.0 and stream.sent < stream.length:
                stream.progress -= 1.0
                stream.sent += 1
                self.orch.on_token(task_id, self.now)
            if stream.sent >= stream.length:
                self.orch.on_finish(task_id, FinishReason.LENGTH, 8, self.now)
                del self.streams[task_id]

    def run(self, waves: Iterable[list[TaskSpec]], lengths: Mapping[str, int]) -> list[Start]:
        """Submit each wave at once (in one ms) when the previous one has ended; every
        start, in order."""
        starts: list[Start] = []
        for wave in waves:
            for spec in wave:
                result = self.orch.submit(spec, self.now)
                assert isinstance(result, Admitted), result
                self.admitted[spec.task_id] = (self.now, result, spec.priority.value)
                self._dispatch(lengths, starts)  # the daemon polls after each admission
            while self.streams or self.admitted:
                self._step()
                self._dispatch(lengths, starts)
            self.now += 100
        return starts
