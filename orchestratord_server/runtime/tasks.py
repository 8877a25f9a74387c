"""What the runtime keeps per task beside the core: the request, its stream, its figures.

The figures fill the task's log records (ORCH-3027) and its terminal SSE event; they are
set as the task moves: admission (prompt tokens, queue figures), dispatch (replica,
versions, KV warmth, queue time), tokens (count, first-token time). `EngineOptions` carries
what a task asks of its engine beyond an OrchQueue request: the OpenAI-compatible surface
sends stop strings and per-request sampling values with it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

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

    def sampler(self, profile: SamplerProfile) -> SamplerProfile:
        """``profile`` with the values this task sets."""
        return dataclasses.replace(
            profile,
            temperature=_given(self.temperature, profile.temperature),
            top_p=_given(self.top_p, profile.top_p),
            presence_penalty=_given(self.presence_penalty, profile.presence_penalty),
            frequency_penalty=_given(self.frequency_penalty, profile.frequency_penalty),
        )


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


NO_ENGINE_OPTIONS = EngineOptions()


@dataclass(slots=True)
class TaskContext:
    """One admitted task as the runtime sees it."""

    task_id: str
    request: TaskRequest
    pool: PoolConfig
    client_id: str
    transcript: Transcript
    admitted_ms: int
    prompt_tokens: int
    model_digest: str | None
    replica_id: str | None = None
    dispatched_ms: int | None = None
    engine_version: str | None = None
    kv_warmth: bool | None = None
    queue_time_ms: int | None = None
    first_token_ms: int | None = None
    tokens_in: int | None = None
    tokens_out: int = 0
    decode_time_ms: int | None = None
    oom_events: int = 0
    driver_reset_events: int = 0
    cancel_label: str = "client"
    options: EngineOptions = NO_ENGINE_OPTIONS

    def decode_ms_until(self, now_ms: int) -> int | None:
        """Milliseconds since dispatch; None for a task that never left the queue."""
        return None if self.dispatched_ms is None else max(0, now_ms - self.dispatched_ms)

    def log_fields(self) -> dict[str, Any]:
        """Every ORCH-3027 field known for this task (the rest stay null).

        `tokens_in` is the engine's own count once it reported one, else the prompt
        tokens as counted at admission.
        """
        pool = self.pool
        request = self.request
        return {
            "job_id": self.task_id,
            "session_id": str(request.session_id),
            "client_id": self.client_id,
            "engine": pool.engine.value,
            "pool_id": pool.id,
            "replica_id": self.replica_id,
            "model_id": self.model_digest or pool.model,
            "quant": pool.quant,
            "ctx": request.ctx,
            "tensor_split": list(pool.tensor_split) if pool.tensor_split else None,
            "engine_version": self.engine_version,
            "sampler_profile_version": pool.sampler_profile_version,
            "kv_warmth": self.kv_warmth,
            "queue_time_ms": self.queue_time_ms,
            "decode_time_ms": self.decode_time_ms,
            "tokens_in": self.tokens_in if self.tokens_in is not None else self.prompt_tokens,
            "tokens_out": self.tokens_out,
            "eviction_events": 0,
            "oom_events": self.oom_events,
            "driver_reset_events": self.driver_reset_events,
        }
