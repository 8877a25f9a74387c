"""Everything the core is told, one frozen value per input event.

The core's state is a function of its configuration and the sequence of these events (and
nothing else: no clock, no randomness, no I/O). Each public method of `Orchestrator` that
changes state is one of them; `apply` calls the method an event stands for and returns
what it returned. A recorded sequence (`journal`) therefore replays into a fresh core,
which reaches the same state and decides the same actions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator_core.decisions import CancelReason
from orchestrator_core.replica import FailureClass, PreloadFailure, ProbeReport, ReplicaReport
from orchestrator_core.specs import TaskSpec
from orchestrator_core.vocabulary import ErrorKind, FinishReason

if TYPE_CHECKING:
    from orchestrator_core.orchestrator import Orchestrator


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

_APPLY: dict[type, Callable[[Orchestrator, Any], object]] = {
    Submit: lambda core, e: core.submit(e.spec, e.now_ms),
    Cancel: lambda core, e: core.cancel(e.task_id, e.now_ms, e.reason),
    Token: lambda core, e: core.on_token(e.task_id, e.now_ms),
    Finish: lambda core, e: core.on_finish(e.task_id, e.finish_reason, e.tokens_in, e.now_ms),
    Fail: lambda core, e: core.on_failure(e.task_id, e.kind, e.message, e.now_ms, e.failure_class),
    Poll: lambda core, e: core.poll(e.now_ms),
    Reap: lambda core, e: core.reap(e.task_id),
    DeleteSession: lambda core, e: core.delete_session(e.session_id, e.now_ms),
    Drain: lambda core, e: core.drain(e.pool_id, e.deadline_ms, e.now_ms),
    Reload: lambda core, e: core.reload(e.pool_id, e.model_ref, e.now_ms),
    Preloaded: lambda core, e: core.replica_preloaded(
        e.pool_id, e.replica_id, e.generation, e.report, e.now_ms
    ),
    PreloadFailed: lambda core, e: core.replica_preload_failed(
        e.pool_id, e.replica_id, e.generation, e.failure, e.now_ms
    ),
    Probed: lambda core, e: core.replica_probed(
        e.pool_id, e.replica_id, e.generation, e.probe, e.now_ms
    ),
}


def apply(core: Orchestrator, event: Input) -> object:
    """Feed `event` to `core` (the method it stands for) and return that method's result."""
    return _APPLY[type(event)](core, event)
