"""What the runtime keeps per task beside the core: what needs I/O, and what the logs name.

The core keeps every figure of a task (times, tokens; `orchestrator_core.TaskFigures`);
the runtime keeps the request, the caller, the transcript its streams read, the options
its engine request carries, and the `Dispatch` that placed it (which replica, which
versions), so its log records (ORCH-3027) can name them. Every field is set from applied
entries and their `now_ms`, so every instance sharing the state keeps the same records.
`EngineOptions` carries what a task asks of its engine beyond an OrchQueue request: the
OpenAI-compatible surface sends stop strings and per-request sampling values with it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator_core import Dispatch, FailureClass, TaskFigures
from orchestratord_server.adapters.base import SamplerProfile
from orchestratord_server.config import PoolConfig
from orchestratord_server.generated.models import TaskRequest
from orchestratord_server.transcripts import Transcript


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Stop strings and sampler values that replace the pool profile's for one task.

    A value left None keeps the profile's; the profile's version still names the rest,
    and the same options with the same seed give the same tokens (ORCH-3045).
    """

    stop: tuple[str, ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    def sampler(self, profile: SamplerProfile) -> SamplerProfile:
        """``profile`` with the values this task sets."""
        given = {
            name: value for name in _SAMPLER_FIELDS if (value := getattr(self, name)) is not None
        }
        return dataclasses.replace(profile, **given) if given else profile


#: The sampler values a task may set, by their name in `SamplerProfile`.
_SAMPLER_FIELDS = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "top_k",
    "min_p",
    "repetition_penalty",
)


NO_ENGINE_OPTIONS = EngineOptions()


def token_key(text: str, extra: Mapping[str, Any] | None) -> str:
    """What identifies a published token for a re-run to match (`TaskStreams.resume`):
    its text, and its tool-call parts and log-probabilities when it has some."""
    if extra is None:
        return text
    return text + "\x00" + json.dumps(extra, sort_keys=True, separators=(",", ":"))


@dataclass(slots=True)
class TaskContext:
    """One admitted task as the runtime sees it; `model_id` names the model it was admitted
    to (the pool's model digest when a replica reported one, else its reference)."""

    task_id: str
    request: TaskRequest
    pool: PoolConfig
    client_id: str
    transcript: Transcript
    prompt_tokens: int
    model_id: str
    options: EngineOptions = NO_ENGINE_OPTIONS
    dispatch: Dispatch | None = None
    #: When it was dispatched, and when its next periodic `metrics` event is due.
    dispatched_ms: int = 0
    metrics_due_ms: int = 0
    #: When its terminal event was recorded (None while it runs).
    ended_ms: int | None = None
    #: With a shared state, the text of every token accepted so far: what a scheduler
    #: that takes over checks a re-run against (token-exact migration).
    texts: list[str] = field(default_factory=list)

    def log_fields(
        self, figures: TaskFigures | None = None, failure: FailureClass | None = None
    ) -> dict[str, Any]:
        """Every ORCH-3027 field known for this task (the rest stay null).

        `tokens_in` is the engine's own count once it reported one, else the prompt
        tokens as counted at admission.
        """
        pool, request, placed = self.pool, self.request, self.dispatch
        tokens_in = figures.tokens_in if figures is not None else None
        return {
            "job_id": self.task_id,
            "session_id": str(request.session_id),
            "client_id": self.client_id,
            "engine": pool.engine.value,
            "pool_id": pool.id,
            "replica_id": placed.replica_id if placed else None,
            "model_id": (placed.model_digest or placed.model_ref) if placed else self.model_id,
            "quant": pool.quant,
            "ctx": request.ctx,
            "tensor_split": list(pool.tensor_split) if pool.tensor_split else None,
            "engine_version": placed.engine_version if placed else None,
            "sampler_profile_version": pool.sampler_profile_version,
            "kv_warmth": placed.kv_warmth if placed else None,
            "queue_time_ms": figures.queue_time_ms
            if figures
            else (placed.queue_time_ms if placed else None),
            "decode_time_ms": figures.decode_ms if figures else None,
            "tokens_in": tokens_in if tokens_in is not None else self.prompt_tokens,
            "tokens_out": figures.tokens_out if figures else 0,
            "eviction_events": 0,
            "oom_events": int(failure is not None and failure.out_of_memory),
            "driver_reset_events": int(failure is not None and failure.device_fault),
        }
