"""llama.cpp server adapter over its native HTTP API (ORCH-3054).

Routes used: ``GET /health`` (503 while the model loads, then ``{"status": "ok"}``),
``GET /props`` (``total_slots``, ``default_generation_settings.n_ctx`` = one slot's
context, ``model_path``, ``build_info``), ``GET /slots`` (one object per slot with
``is_processing``, ORCH-3019), ``POST /tokenize`` (prompt token counts, ORCH-3015),
``POST /apply-template`` (``{"messages": [...]}`` → ``{"prompt": ...}``: chat messages
rendered with the model's chat template, no generation),
``GET /metrics`` (Prometheus text, ``llamacpp:`` prefix) and ``POST /completion`` with
``"stream": true``: ``data: {json}`` frames, one per token with ``content``, ending with a
frame that has ``"stop": true``, ``stop_type`` (``limit`` | ``eos`` | ``word``),
``tokens_predicted`` and ``tokens_evaluated``; there is no ``[DONE]`` sentinel.

Streams (issue 18): `relay` reads the answer in the socket's callback (`push.push_stream`),
on a connection of its own: llama.cpp closes the connection after a streamed answer
although it announces keep-alive, so a request sent on that socket right away would fail.
Cancel (ORCH-3017): cancelling the relay, or closing the `stream` generator, closes that
connection; llama.cpp notices at its next write and frees the slot.

Determinism (ORCH-3045, ORCH-3058): every request states all sampler parameters of its
:class:`SamplerProfile`, switches off llama.cpp's other samplers (DRY, XTC, mirostat,
dynamic temperature, top-n-sigma), fixes the sampler order, maps the 64-bit seed into
llama.cpp's 32-bit range without hitting its "random seed" value, and keeps the prompt
cache off unless the request allows it (llama.cpp documents that a cached prefix can
change logits). The text of a stream is exactly the engine's output: the token chunks
are the frames' ``content`` strings, untouched.

Engine identity (ORCH-3032): ``engine_version`` is ``build_info`` from ``/props`` unless
the owner of the process knows better (an xllamacpp build reports ``b0-unknown``);
``model_digest`` is ``sha256:<hex>`` of the GGUF file when the adapter is given its
local path, computed once in a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

from orchestrator_core import Engine, ErrorKind, FinishReason
from orchestratord_server.adapters.base import (
    AdapterSettings,
    CompletionRequest,
    EngineError,
    EngineProps,
    FinalChunk,
    SlotUsage,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.chat import Feature
from orchestratord_server.adapters.http import (
    DEFAULT_TIMEOUTS,
    HttpAdapter,
    HttpTimeouts,
    count,
    error_from_payload,
    frame_object,
    optional,
)
from orchestratord_server.adapters.push import pulled, push_stream
from orchestratord_server.adapters.sse import SseEvent

#: llama.cpp's "pick a random seed" value (``LLAMA_DEFAULT_SEED``); never sent for a seed.
RANDOM_SEED = 0xFFFFFFFF
#: The samplers profile v1 uses, in the order they run.
SAMPLER_ORDER = ("penalties", "top_k", "typ_p", "top_p", "min_p", "temperature")
_FINISH_REASONS: Mapping[str, FinishReason] = {
    "limit": FinishReason.LENGTH,
    "eos": FinishReason.STOP,
    "word": FinishReason.STOP,
}


def engine_seed(seed: int) -> int:
    """Map any integer seed into llama.cpp's 32-bit range, avoiding its random value."""
    return seed % RANDOM_SEED


def completion_body(req: CompletionRequest, *, stream: bool) -> dict[str, Any]:
    """The ``POST /completion`` body for ``req``, every sampler pinned (ORCH-3058)."""
    sampler = req.sampler
    body: dict[str, Any] = {
        "prompt": req.prompt,
        "n_predict": req.max_tokens,
        "stream": stream,
        "stop": list(req.stop),
        "cache_prompt": req.reuse_prompt_cache,
        "temperature": sampler.temperature,
        "top_k": sampler.top_k,
        "top_p": sampler.top_p,
        "min_p": sampler.min_p,
        "typical_p": sampler.typical_p,
        "repeat_penalty": sampler.repetition_penalty,
        "repeat_last_n": sampler.repeat_last_n,
        "presence_penalty": sampler.presence_penalty,
        "frequency_penalty": sampler.frequency_penalty,
        "samplers": list(SAMPLER_ORDER),
        "dynatemp_range": 0.0,
        "dynatemp_exponent": 1.0,
        "top_n_sigma": -1.0,
        "xtc_probability": 0.0,
        "dry_multiplier": 0.0,
        "mirostat": 0,
        "ignore_eos": False,
        "n_probs": 0 if req.logprobs is None else max(1, req.logprobs),
        "min_keep": 0,
        "n_keep": 0,
    }
    if req.seed is not None:
        body["seed"] = engine_seed(req.seed)
    if req.json_schema is not None:
        body["json_schema"] = dict(req.json_schema)
    return body


def _alternative(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"token": entry["token"], "logprob": entry["logprob"], "bytes": entry.get("bytes")}


def token_logprobs(payload: Mapping[str, Any], top: int) -> tuple[dict[str, Any], ...]:
    """A frame's `completion_probabilities` as TokenLogprob objects with ``top``
    alternatives each (llama.cpp is asked for at least one: it sends none for 0)."""
    entries = payload.get("completion_probabilities")
    if not isinstance(entries, list):
        return ()
    try:
        return tuple(
            {
                **_alternative(entry),
                "top_logprobs": [_alternative(alt) for alt in entry.get("top_logprobs", ())[:top]],
            }
            for entry in entries
        )
    except (KeyError, TypeError, AttributeError):
        raise EngineError(
            ErrorKind.ENGINE_ERROR,
            "malformed completion_probabilities in a stream frame",
            detail=repr(entries)[:200],
        ) from None


def _finish_reason(payload: Mapping[str, Any]) -> FinishReason:
    stop_type = payload.get("stop_type")
    if stop_type is None:  # builds before stop_type reported three flags
        if payload.get("stopped_limit") is True:
            return FinishReason.LENGTH
        if payload.get("stopped_eos") is True or payload.get("stopped_word") is True:
            return FinishReason.STOP
    reason = _FINISH_REASONS.get(stop_type) if isinstance(stop_type, str) else None
    if reason is None:
        raise EngineError(
            ErrorKind.ENGINE_ERROR,
            "the engine's final frame has an unknown stop_type",
            detail=repr(stop_type)[:200],
        )
    return reason


def _final_chunk(payload: Mapping[str, Any]) -> FinalChunk:
    settings = payload.get("generation_settings")
    seed = settings.get("seed") if isinstance(settings, Mapping) else None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed == RANDOM_SEED:
        seed = None
    return FinalChunk(
        finish_reason=_finish_reason(payload),
        tokens_in=count(payload, "tokens_evaluated", "final frame"),
        tokens_out=count(payload, "tokens_predicted", "final frame"),
        seed=seed,
    )


def _model_name(alias: object, model_path: str | None) -> str:
    """The alias the server was given, else the model file's name."""
    if isinstance(alias, str) and alias and alias != model_path:
        return alias
    return os.path.basename(model_path or "") or "unknown"


def chunks_from_event(event: SseEvent, top_logprobs: int | None = None) -> list[StreamChunk]:
    """The chunks one ``/completion`` stream event carries (zero, one or two).

    A token frame with text gives a :class:`TokenChunk`, with its log-probabilities when
    ``top_logprobs`` is set (frames without text, such as prompt progress, give none); the
    final frame gives its remaining text, if any, and a :class:`FinalChunk`. An error
    event raises the engine's error.
    """
    payload = frame_object(event)
    if event.event == "error" or "error" in payload:
        raise error_from_payload(payload, None)
    content = payload.get("content", "")
    stop = payload.get("stop", False)
    if not isinstance(content, str) or not isinstance(stop, bool):
        raise EngineError(
            ErrorKind.ENGINE_ERROR, "malformed stream frame", detail=repr(event.data[:200])
        )
    chunks: list[StreamChunk] = []
    if content:
        logprobs = None if top_logprobs is None else token_logprobs(payload, top_logprobs)
        chunks.append(TokenChunk(content, logprobs=logprobs))
    if stop:
        chunks.append(_final_chunk(payload))
    return chunks


class LlamaCppAdapter(HttpAdapter):
    """One llama.cpp server at ``settings.base_url`` (ORCH-3054).

    ``settings.model_path``: the GGUF file the server runs, when it is on this machine, for
    the model digest. ``settings.engine_version``: overrides ``build_info`` (see the module
    doc). The HTTP session is created on first use, inside the running event loop.
    """

    engine = Engine.LLAMACPP
    features = frozenset({Feature.STRUCTURED_OUTPUT, Feature.LOGPROBS, Feature.EMBEDDINGS})

    def __init__(
        self, settings: AdapterSettings, timeouts: HttpTimeouts = DEFAULT_TIMEOUTS
    ) -> None:
        # llama.cpp closes idle keep-alive connections after 5 s; ours go before that.
        super().__init__(settings, timeouts, keepalive_s=4.0)

    async def props(self) -> EngineProps:
        props = await self._http.json("GET", "/props")
        if not isinstance(props, Mapping):
            raise EngineError(ErrorKind.ENGINE_ERROR, "/props is not an object")
        settings = props.get("default_generation_settings")
        ctx = settings.get("n_ctx") if isinstance(settings, Mapping) else None
        slots_total = props.get("total_slots")
        if not isinstance(ctx, int) or not isinstance(slots_total, int):
            raise EngineError(ErrorKind.ENGINE_ERROR, "/props lacks total_slots or n_ctx")
        engine_model = props.get("model_path")
        model_path = str(engine_model) if isinstance(engine_model, str) else None
        alias = props.get("model_alias")
        build = props.get("build_info")
        return EngineProps(
            engine=self.engine,
            engine_version=self.settings.engine_version
            or (build if isinstance(build, str) else "unknown"),
            slots_total=slots_total,
            ctx_limit=ctx,
            model_name=_model_name(alias, model_path),
            model_path=model_path,
            model_digest=await self.model_digest(model_path),
        )

    async def slots(self) -> SlotUsage:
        slots = await self._http.json("GET", "/slots")
        if not isinstance(slots, list) or not all(isinstance(s, Mapping) for s in slots):
            raise EngineError(ErrorKind.ENGINE_ERROR, "/slots is not a list of slots")
        busy = sum(1 for slot in slots if slot.get("is_processing") is True)
        return SlotUsage(total=len(slots), busy=busy)

    async def count_tokens(self, text: str) -> int:
        """Tokens the prompt ``text`` costs, BOS included when the model adds one."""
        answer = await self._http.json("POST", "/tokenize", {"content": text, "add_special": True})
        tokens = answer.get("tokens") if isinstance(answer, Mapping) else None
        if not isinstance(tokens, list):
            raise EngineError(ErrorKind.ENGINE_ERROR, "/tokenize answered without tokens")
        return len(tokens)

    async def apply_template(self, messages: Sequence[Mapping[str, str]]) -> str | None:
        """The prompt llama.cpp renders ``messages`` to; None when the build lacks the route."""
        body = {"messages": list(messages)}
        answer = await optional(self._http.json("POST", "/apply-template", body))
        if answer is None:
            return None
        prompt = answer.get("prompt") if isinstance(answer, Mapping) else None
        if not isinstance(prompt, str):
            raise EngineError(ErrorKind.ENGINE_ERROR, "/apply-template answered without a prompt")
        return prompt

    async def relay(self, req: CompletionRequest, take: Callable[[StreamChunk], bool]) -> None:
        """The completion stream read from the socket's callback (`push_stream`)."""
        await push_stream(
            self._http,
            "/completion",
            completion_body(req, stream=True),
            lambda event: chunks_from_event(event, req.logprobs),
            take,
            "completion stream",
        )

    def stream(self, req: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        return pulled(lambda take: self.relay(req, take))
