"""Everything the core is told, one frozen value per input event.

The core's state is a function of its configuration and the sequence of these events (and
nothing else: no clock, no randomness, no I/O). Each public method of `Orchestrator` that
changes state is one of them, and records it in the core's `InputSink`, if it has one,
before acting on it. A recorded sequence (`journal`) therefore replays into a fresh core,
which reaches the same state and decides the same actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from orchestrator_core.decisions import CancelReason
from orchestrator_core.replica import FailureClass, PreloadFailure, ProbeReport, ReplicaReport
from orchestrator_core.specs import CoreConfig, TaskSpec
from orchestrator_core.vocabulary import ErrorKind, FinishReason


@dataclass(frozen=True, slots=True)
class Submit:
    """A client asks for a task to be admitted."""

    spec: TaskSpec
    now_ms: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """A task is to be canceled (by its client, or because its client went away)."""

    task_id: str
    now_ms: int
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class Unwatched:
    """The last open stream of a task closed (its client went away, or is reconnecting)."""

    task_id: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Watched:
    """A stream of a task opened."""

    task_id: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class ShutDown:
    """The daemon stops: nothing more is admitted, every task ends within the grace."""

    grace_ms: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class Token:
    """A running task's engine produced its next token."""

    task_id: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Finish:
    """A running task's engine finished it."""

    task_id: str
    finish_reason: FinishReason
    tokens_in: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class Fail:
    """A running task's engine failed it."""

    task_id: str
    kind: ErrorKind
    message: str
    now_ms: int
    failure_class: FailureClass | None


@dataclass(frozen=True, slots=True)
class Poll:
    """Time has come to `now_ms`."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class Reap:
    """A terminal task's transcript is no longer kept."""

    task_id: str


@dataclass(frozen=True, slots=True)
class DeleteSession:
    """A client deletes a session."""

    session_id: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Drain:
    """An operator (or the daemon's shutdown) drains a pool."""

    pool_id: str
    deadline_ms: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class Reload:
    """An operator moves a pool to another model."""

    pool_id: str
    model_ref: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Preloaded:
    """A replica's preload succeeded."""

    pool_id: str
    replica_id: str
    generation: int
    report: ReplicaReport
    now_ms: int


@dataclass(frozen=True, slots=True)
class PreloadFailed:
    """A replica's preload failed."""

    pool_id: str
    replica_id: str
    generation: int
    failure: PreloadFailure
    now_ms: int


@dataclass(frozen=True, slots=True)
class Probed:
    """A replica's health probe answered."""

    pool_id: str
    replica_id: str
    generation: int
    probe: ProbeReport
    now_ms: int


Input = (
    Submit
    | Cancel
    | Unwatched
    | Watched
    | ShutDown
    | Token
    | Finish
    | Fail
    | Poll
    | Reap
    | DeleteSession
    | Drain
    | Reload
    | Preloaded
    | PreloadFailed
    | Probed
)


class InputSink(Protocol):
    """Where a core records its configuration and then each input as it arrives."""

    def begin(self, config: CoreConfig) -> None: ...

    def record(self, event: Input) -> None: ...
