"""What the runtime feeds its core, as values: the core's inputs, and two of them with what
the runtime keeps beside the core.

Every change to a daemon's state is one entry, applied in one order by every instance that
shares the state (`sequencer`): an admission (`Admission`: the core's `Submit`, plus the
request, its engine options and whether its transcript keeps typed events), a token
(`TokenOut`: the core's `Token`, plus its text), or any other core input as it is. The
side data lets each instance build the same task records and transcripts from the same
entries; the core sees only its input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator_core import TaskSpec
from orchestrator_core import inputs as core_inputs
from orchestratord_server.generated.models import TaskRequest
from orchestratord_server.runtime.tasks import EngineOptions


@dataclass(frozen=True, slots=True)
class Admission:
    """A client asks for a task: the core's `Submit` and the request behind it."""

    spec: TaskSpec
    request: TaskRequest
    options: EngineOptions
    keep_events: bool
    now_ms: int


@dataclass(frozen=True, slots=True)
class TokenOut:
    """A running task's engine produced its next token, `text`; `extra` holds its
    tool-call parts and log-probabilities (the token event's other fields), if any."""

    task_id: str
    text: str
    now_ms: int
    extra: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Embedded:
    """A running embedding task's engine computed its vectors (one per input, in input
    order), which also finishes it: the core's `Finish`, plus the vectors."""

    task_id: str
    vectors: tuple[tuple[float, ...], ...]
    tokens_in: int
    now_ms: int


#: The core inputs that pass as they are (`Submit` and `Token` go as the two above).
PlainInput = (
    core_inputs.Cancel
    | core_inputs.Unwatched
    | core_inputs.Watched
    | core_inputs.ShutDown
    | core_inputs.Finish
    | core_inputs.Fail
    | core_inputs.Poll
    | core_inputs.Reap
    | core_inputs.DeleteSession
    | core_inputs.Drain
    | core_inputs.Reload
    | core_inputs.Preloaded
    | core_inputs.PreloadFailed
    | core_inputs.Probed
)

Entry = Admission | TokenOut | Embedded | PlainInput
