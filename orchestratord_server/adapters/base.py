"""The engine-neutral adapter interface every inference engine implements.

An adapter is the daemon's only way to talk to one engine server (one replica): health
and properties for placement and readiness (ORCH-3019, ORCH-3032), prompt token counts
for the token budget (ORCH-3015), chat prompts rendered with the model's own template, a
streamed completion that is cancelled by closing its
async generator (ORCH-3017), the engine's own metrics text, and typed errors.

Determinism (ORCH-3045, ORCH-3058): a :class:`CompletionRequest` carries a
:class:`SamplerProfile` that pins every sampler parameter, so a seed selects the same
token stream on every replica of a replica set; adapters map the profile onto their
engine's knobs and switch off every other sampler the engine has.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from orchestrator_core import Engine, ErrorKind, FinishReason
from orchestratord_server.adapters.chat import Feature

#: The ErrorKind codes (ORCH-2006) an adapter failure is reported with.
ENGINE_ERROR_KINDS = frozenset(
    {
        ErrorKind.INVALID_PARAMS,
        ErrorKind.WORKER_RESET,
        ErrorKind.DECODE_TIMEOUT,
        ErrorKind.ENGINE_ERROR,
    }
)


class EngineError(Exception):
    """An engine call failed; ``kind`` is the ErrorKind code the task or pool reports.

    INVALID_PARAMS: the engine refused the request (HTTP 400). WORKER_RESET: the engine
    could not be reached, dropped the connection (also mid-stream) or answered 5xx.
    DECODE_TIMEOUT: the engine stopped answering within the read timeout. ENGINE_ERROR: the
    engine answered something this adapter cannot understand, or an unexpected status.

    ``message`` is what a client may be shown: what happened, in the engine's own words
    where it gave some, never the daemon's exception text; ``detail`` is that text, for
    the daemon's own logs.
    """

    def __init__(
        self, kind: ErrorKind, message: str, status: int | None = None, detail: str | None = None
    ) -> None:
        if kind not in ENGINE_ERROR_KINDS:
            raise ValueError(f"an engine does not fail with {kind}")
        where = "" if status is None else f" (HTTP {status})"
        super().__init__(f"{kind}{where}: {message}")
        self.kind = kind
        self.message = message
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class EngineHealth:
    """``live``: the server answers at all; ``ready``: it can take completions now."""

    live: bool
    ready: bool
    detail: str


@dataclass(frozen=True, slots=True)
class EngineProps:
    """What a replica is running (ORCH-3019, ORCH-3032).

    ``ctx_limit`` is the context one request can use (one slot's share). ``model_digest``
    is ``sha256:<hex>`` of the model file when the adapter knows where that file is.
    """

    engine: Engine
    engine_version: str
    slots_total: int
    ctx_limit: int
    model_name: str
    model_path: str | None
    model_digest: str | None


@dataclass(frozen=True, slots=True)
class SlotUsage:
    """Continuous-batching slots of one replica, for placement (ORCH-3019)."""

    total: int
    busy: int

    @property
    def free(self) -> int:
        return max(0, self.total - self.busy)


@dataclass(frozen=True, slots=True)
class SamplerProfile:
    """Every sampler parameter, pinned (ORCH-3058).

    A profile is named by ``version``; a replica set pins the version (ORCH-3046), so two
    replicas given the same seed sample the same way. Values follow the usual engine
    conventions: ``top_k`` 0 disables top-k, ``top_p``/``typical_p`` 1.0 and ``min_p``
    0.0 disable those filters, penalties of 1.0 (repetition) or 0.0 are neutral.
    """

    version: str
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    typical_p: float
    repetition_penalty: float
    repeat_last_n: int
    presence_penalty: float
    frequency_penalty: float


#: Profile ``v1``: llama.cpp's long-standing defaults, written out in full.
SAMPLER_PROFILE_V1 = SamplerProfile(
    version="v1",
    temperature=0.8,
    top_k=40,
    top_p=0.95,
    min_p=0.05,
    typical_p=1.0,
    repetition_penalty=1.0,
    repeat_last_n=64,
    presence_penalty=0.0,
    frequency_penalty=0.0,
)

#: Profile ``portable-v1``: ``v1`` without min-p, which some engines (TGI) do not have; the
#: one profile every adapter can honour exactly.
SAMPLER_PROFILE_PORTABLE_V1 = replace(SAMPLER_PROFILE_V1, version="portable-v1", min_p=0.0)

SAMPLER_PROFILES: Mapping[str, SamplerProfile] = {
    profile.version: profile for profile in (SAMPLER_PROFILE_V1, SAMPLER_PROFILE_PORTABLE_V1)
}


def sampler_profile(version: str) -> SamplerProfile:
    """The profile named ``version``; ``ValueError`` for an unknown version."""
    try:
        return SAMPLER_PROFILES[version]
    except KeyError:
        known = ", ".join(sorted(SAMPLER_PROFILES))
        raise ValueError(f"unknown sampler profile {version!r} (known: {known})") from None


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """One completion as the core hands it to an adapter.

    ``seed`` None lets the engine pick one (non-deterministic); the core normally derives
    a seed from the task id (ORCH-3045). ``stop`` strings end the generation and are not
    part of the output. ``reuse_prompt_cache`` lets the engine reuse KV of an earlier
    request with the same prefix: faster, but engines do not promise bit-identical logits
    across batch shapes, so it is off unless determinism is best-effort.

    ``json_schema`` makes the engine decode under that JSON Schema, so the answer is JSON
    that satisfies it; ``logprobs`` asks for each token's log-probability and that many
    alternatives. Adapters honour them only when their ``features`` say so; the runtime
    refuses tasks that ask an engine for more before admission.
    """

    prompt: str
    max_tokens: int
    seed: int | None = None
    sampler: SamplerProfile = SAMPLER_PROFILE_V1
    stop: tuple[str, ...] = ()
    reuse_prompt_cache: bool = False
    json_schema: Mapping[str, Any] | None = None
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, not {self.max_tokens}")
        if any(not word for word in self.stop):
            raise ValueError("stop strings must not be empty")


@dataclass(frozen=True, slots=True)
class TokenChunk:
    """Generated text; the concatenation of a stream's chunks is the engine's output.

    A chat answer's chunk may carry parts of tool calls instead of (or beside) text, and
    any chunk the log-probabilities of its tokens when they were asked for; both in the
    shapes of the contract's `ToolCallDelta` and `TokenLogprob`.
    """

    text: str
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    logprobs: tuple[Mapping[str, Any], ...] | None = None

    def extra(self) -> dict[str, Any] | None:
        """The token event's fields beyond its text, or None for plain text."""
        if not self.tool_calls and self.logprobs is None:
            return None
        fields: dict[str, Any] = {}
        if self.tool_calls:
            fields["tool_calls"] = list(self.tool_calls)
        if self.logprobs is not None:
            fields["logprobs"] = list(self.logprobs)
        return fields


@dataclass(frozen=True, slots=True)
class FinalChunk:
    """The end of a stream: why it ended, token counts, the seed the engine used."""

    finish_reason: FinishReason  # stop or length; an engine never cancels
    tokens_in: int
    tokens_out: int
    seed: int | None


StreamChunk = TokenChunk | FinalChunk


@dataclass(frozen=True, slots=True)
class Embeddings:
    """One vector per input, in input order, and the tokens the inputs cost."""

    vectors: tuple[tuple[float, ...], ...]
    tokens_in: int


@dataclass(frozen=True, slots=True)
class AdapterSettings:
    """What an adapter is told about its replica, beyond what the engine reports.

    ``model``: the engine's own name for the model (vLLM's served model name, Triton's
    model name); adapters that need one discover it when it is not given. ``model_path``:
    the local model file or directory, for ``model_digest``. ``engine_version``: overrides
    what the engine reports (when the owner of the process knows better). ``slots``: the
    replica's concurrent sequences, for engines that do not report them.
    """

    base_url: str
    model: str | None = None
    model_path: Path | None = None
    engine_version: str | None = None
    slots: int | None = None


@runtime_checkable
class EngineAdapter(Protocol):
    """One engine server. Methods raise :class:`EngineError`; ``health`` never does."""

    engine: Engine
    #: What the engine honours beyond text generation (`CompletionRequest`).
    features: frozenset[Feature]

    async def health(self) -> EngineHealth: ...

    async def props(self) -> EngineProps: ...

    async def slots(self) -> SlotUsage: ...

    async def count_tokens(self, text: str) -> int: ...

    async def apply_template(self, messages: Sequence[Mapping[str, str]]) -> str | None:
        """The prompt chat ``messages`` (``role``, ``content``) render to with the model's
        chat template; None when the engine cannot render templates."""
        ...

    def stream(self, req: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        """Token chunks, then exactly one final chunk. ``aclose()`` cancels upstream."""
        ...

    async def relay(self, req: CompletionRequest, take: Callable[[StreamChunk], bool]) -> None:
        """The chunks of `stream`, each handed to ``take`` as it arrives, up to the final
        one or until ``take`` returns False; cancelling closes the stream upstream."""
        ...

    async def embed(self, inputs: Sequence[str]) -> Embeddings:
        """The embedding of each input (`Feature.EMBEDDINGS`); an engine without
        embeddings raises EngineError INVALID_PARAMS."""
        ...

    async def metrics_text(self) -> str: ...

    async def kv_cache_usage(self) -> float | None:
        """The share of the engine's KV cache in use, 0 to 1, from its metrics; None when
        the engine does not report it."""
        ...

    async def close(self) -> None: ...
