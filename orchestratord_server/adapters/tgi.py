"""Text Generation Inference (TGI) adapter over TGI's own HTTP API (ORCH-3056, ORCH-3058).

Follows TGI v3.3.7 (tag ``v3.3.7``, commit ``dfb3fbe7``; its workspace ``Cargo.toml`` still
says ``3.3.6-dev0``, which is what that build's ``/info`` reports as ``version``). Every
fact below was read in that tag's source:

- ``GET /health`` (``router/src/server.rs`` ``health``, ~l.230): 200 with an empty body when
  the backend is healthy, else 503 ``{"error":"unhealthy","error_type":"healthcheck"}``.
- ``GET /info`` (``Info``, ``router/src/lib.rs`` ~l.261; filled in ``server.rs`` ~l.2122):
  ``model_id``, ``model_sha`` (a Hub git revision, not a file digest), ``max_concurrent_requests``,
  ``max_stop_sequences``, ``max_input_tokens``, ``max_total_tokens``, ``router``, ``version``
  (``CARGO_PKG_VERSION``), ``sha`` (the build's git commit, or null).
- ``POST /tokenize`` (``server.rs`` ``tokenize``, ~l.1317) takes a GenerateRequest and answers
  a JSON array of ``{"id","text","start","stop"}``, one per prompt token, special tokens
  added exactly as for a generation (``add_special_tokens`` defaults to true).
- ``POST /chat_tokenize`` (``get_chat_tokenize``, ~l.199) takes a chat request and answers
  ``{"tokenize_response": [...], "templated_text": ...}``; a model without a chat template
  gives 422 ``{"error":"Template error: template not found","error_type":"template_error"}``.
- ``GET /metrics``: Prometheus text; the gauges ``tgi_queue_size``
  (``backends/v3/src/queue.rs`` l.143, l.158) and ``tgi_batch_current_size``
  (``backends/v3/src/backend.rs`` l.170, l.290) appear once first set.
- ``POST /generate_stream`` with ``{"inputs", "parameters": GenerateParameters}``
  (``lib.rs`` ~l.303, ~l.1337). Unknown parameters are ignored by serde, not refused. The
  answer is always HTTP 200 ``text/event-stream`` (axum 0.7.9 ``Sse``), framed as
  ``data: {json}\\n\\n`` with a ``:\\n\\n`` keep-alive every 15 s (``server.rs`` ~l.476-505).
  Each frame is a ``StreamResponse`` (``lib.rs`` ~l.1504): ``index``, ``token``
  (``{"id","text","logprob","special"}``), ``generated_text`` and ``details``, both null
  except on the last frame, where ``details`` (when ``details: true`` was asked) is
  ``StreamDetails``: ``finish_reason`` (``length`` | ``eos_token`` | ``stop_sequence``),
  ``generated_tokens``, ``seed`` (null for greedy decoding), ``input_length`` (prompt
  tokens). The last frame also carries the last token. Failures (validation,
  ``overloaded``, ``generation``...) arrive in-band as a frame ``{"error", "error_type"}``
  (``server.rs`` ``From<InferError> for Event``, ~l.2428), after which the stream ends;
  only a body the JSON extractor rejects gets a non-200 answer (axum: 422 or 400, plain
  text). ``InferError::error_type`` (``router/src/infer/mod.rs`` ~l.431) names the types.

Determinism (ORCH-3045, ORCH-3058): TGI samples with a fixed chain (``server/
text_generation_server/utils/tokens.py``): repetition penalty over the whole sequence,
frequency penalty, then temperature, top-k, top-p, typical-p and a ``torch.Generator``
seeded with the request's 64-bit seed. A profile value TGI has an exact counterpart for is
sent; a neutral value is left out (TGI refuses ``top_p: 1.0``, ``top_k: 0`` and
``temperature: 0``); a non-neutral value TGI cannot honour raises INVALID_PARAMS instead of
being dropped: ``min_p`` (TGI has none, and would silently ignore the field),
``presence_penalty`` (none), ``frequency_penalty`` (TGI's formula is not the count-based
one), and a repetition penalty limited to the last ``repeat_last_n`` tokens (TGI penalises
the whole sequence, i.e. only ``repeat_last_n`` -1 matches). Temperature 0 is greedy
decoding (``do_sample: false``); the truncating filters cannot change the arg-max then, so
only ``typical_p`` (which can drop it) must be neutral. TGI applies temperature before the
filters, a fixed order, so a seed still selects one stream within a replica set. Prompt
caching is a launch setting of TGI (``PREFIX_CACHING``), not a per-request one.

Detokenisation (ORCH-3058): chunks are the tokens' own text, untouched; special tokens
(the EOS token of an ``eos_token`` finish) and empty texts are dropped. TGI keeps a stop
sequence in its output, while a :class:`CompletionRequest` promises the stop string is not
part of it: text that could be the start of a stop string is held back until the next
token tells, and a ``stop_sequence`` finish cuts the stop string off.

Engine identity (ORCH-3032): ``engine_version`` is ``/info`` ``version`` plus ``+<sha>``
when the build reports its git commit (so two builds that share a dev version do not
mix), unless the owner of the process states it. ``model_digest`` is the digest of the
local model file or directory the adapter is told about, else None: ``model_sha`` is a
Hub revision and says nothing about the bytes TGI loaded.

Cancel (ORCH-3017): closing the stream's async generator closes its HTTP connection; TGI
drops the request from its batch at the next decode step.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import aiohttp

from orchestrator_core import Engine, ErrorKind, FinishReason
from orchestratord_server.adapters.base import (
    AdapterSettings,
    CompletionRequest,
    EngineError,
    EngineProps,
    FinalChunk,
    SamplerProfile,
    SlotUsage,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.http import (
    DEFAULT_TIMEOUTS,
    NO_ROUTE,
    HttpAdapter,
    HttpTimeouts,
    count,
    frame_object,
    metric_samples,
    sse_stream,
)
from orchestratord_server.adapters.sse import SseEvent

#: TGI seeds are ``u64``.
SEED_RANGE = 2**64
#: The gauges whose sum is the requests TGI holds: waiting in its queue, or in the batch.
BUSY_GAUGES = ("tgi_queue_size", "tgi_batch_current_size")
_FINISH_REASONS: Mapping[str, FinishReason] = {
    "length": FinishReason.LENGTH,
    "eos_token": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
}
_INVALID, _RESET, _ENGINE = ErrorKind.INVALID_PARAMS, ErrorKind.WORKER_RESET, ErrorKind.ENGINE_ERROR
#: ``error_type`` of TGI's error bodies → (error code, the HTTP status TGI gives it).
_ERROR_TYPES: Mapping[str, tuple[ErrorKind, int]] = {
    "validation": (_INVALID, 422),
    "template_error": (_INVALID, 422),
    "missing_template_variable": (_INVALID, 422),
    "tool_error": (_INVALID, 422),
    "generation": (_RESET, 424),
    "incomplete_generation": (_RESET, 500),
    "incomplete_generation_stream": (_RESET, 500),
    "overloaded": (_ENGINE, 429),
    "stream_serialization_error": (_ENGINE, 500),
}
#: What ``/chat_tokenize`` says for a model that has no chat template.
NO_TEMPLATE = "Template error: template not found"


def engine_seed(seed: int) -> int:
    """Map any integer seed into TGI's ``u64`` range."""
    return seed % SEED_RANGE


def _refuse(name: str, value: float, why: str) -> EngineError:
    return EngineError(ErrorKind.INVALID_PARAMS, f"TGI cannot honour {name}={value}: {why}")


def sampling_parameters(sampler: SamplerProfile) -> dict[str, Any]:
    """The GenerateParameters that sample as ``sampler`` does; INVALID_PARAMS when TGI
    cannot honour one of its values exactly (see the module doc)."""
    if sampler.presence_penalty != 0.0:
        raise _refuse("presence_penalty", sampler.presence_penalty, "TGI has no presence penalty")
    if sampler.frequency_penalty != 0.0:
        raise _refuse(
            "frequency_penalty",
            sampler.frequency_penalty,
            "TGI's frequency penalty is not the count-based one",
        )
    params: dict[str, Any] = {}
    if sampler.repetition_penalty != 1.0:
        if sampler.repetition_penalty <= 0.0:
            raise _refuse("repetition_penalty", sampler.repetition_penalty, "must be positive")
        if sampler.repeat_last_n != -1:
            raise _refuse(
                "repeat_last_n",
                sampler.repeat_last_n,
                "TGI penalises repetitions over the whole sequence (repeat_last_n -1)",
            )
        params["repetition_penalty"] = sampler.repetition_penalty
    if sampler.typical_p != 1.0 and not 0.0 < sampler.typical_p < 1.0:
        raise _refuse("typical_p", sampler.typical_p, "must be in (0, 1]")
    if sampler.temperature < 0.0:
        raise _refuse("temperature", sampler.temperature, "must not be negative")
    if sampler.temperature == 0.0:
        if sampler.typical_p != 1.0:
            raise _refuse("typical_p", sampler.typical_p, "TGI has no typical-p greedy decoding")
        params["do_sample"] = False
        return params
    if sampler.min_p != 0.0:
        raise _refuse("min_p", sampler.min_p, "TGI has no min-p sampling")
    if sampler.top_k < 0:
        raise _refuse("top_k", sampler.top_k, "must not be negative")
    if sampler.top_p != 1.0 and not 0.0 < sampler.top_p < 1.0:
        raise _refuse("top_p", sampler.top_p, "must be in (0, 1]")
    params["do_sample"] = True
    params["temperature"] = sampler.temperature
    if sampler.top_k > 0:
        params["top_k"] = sampler.top_k
    if sampler.top_p != 1.0:
        params["top_p"] = sampler.top_p
    if sampler.typical_p != 1.0:
        params["typical_p"] = sampler.typical_p
    return params


def generate_body(req: CompletionRequest) -> dict[str, Any]:
    """The ``POST /generate_stream`` body for ``req``, every sampler pinned (ORCH-3058)."""
    parameters: dict[str, Any] = {
        **sampling_parameters(req.sampler),
        "max_new_tokens": req.max_tokens,
        "stop": list(req.stop),
        "return_full_text": False,
        "watermark": False,
        "details": True,
        "decoder_input_details": False,
    }
    if req.seed is not None:
        parameters["seed"] = engine_seed(req.seed)
    return {"inputs": req.prompt, "parameters": parameters}


def error_from_frame(payload: Mapping[str, Any]) -> EngineError:
    """TGI's ``{"error", "error_type"}`` body as an :class:`EngineError`."""
    message = str(payload.get("error") or "the engine reported an error")
    error_type = payload.get("error_type")
    known = _ERROR_TYPES.get(str(error_type))
    if known is None:
        return EngineError(ErrorKind.ENGINE_ERROR, f"{message} (unknown error_type {error_type!r})")
    kind, status = known
    return EngineError(kind, f"{message} ({error_type})", status)


class StopTrimmer:
    """Keeps stop strings out of the text (see the module doc).

    :meth:`push` takes a token's text and returns what can be passed on: all but the
    longest tail that is the beginning of a stop string. :meth:`finish` returns the held
    tail at the end, without the stop string when the generation ended on one.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._held = ""

    def push(self, text: str) -> str:
        if not self._stops:
            return text
        pending = self._held + text
        keep = max(
            (
                k
                for stop in self._stops
                for k in range(1, len(stop) + 1)
                if pending.endswith(stop[:k])
            ),
            default=0,
        )
        self._held = pending[len(pending) - keep :]
        return pending[: len(pending) - keep]

    def finish(self, stopped_on_sequence: bool) -> str:
        held, self._held = self._held, ""
        if stopped_on_sequence:
            ending = max((s for s in self._stops if held.endswith(s)), key=len, default="")
            return held[: len(held) - len(ending)]
        return held


def _final_chunk(details: object) -> tuple[FinalChunk, bool]:
    """The final chunk of the last frame's ``details``, and whether a stop sequence ended it."""
    if not isinstance(details, Mapping):
        raise EngineError(
            ErrorKind.ENGINE_ERROR,
            "the last stream frame has no details",
            detail=repr(details)[:200],
        )
    reason = details.get("finish_reason")
    finish = _FINISH_REASONS.get(reason) if isinstance(reason, str) else None
    if finish is None:
        raise EngineError(
            ErrorKind.ENGINE_ERROR, "unknown finish_reason", detail=repr(reason)[:200]
        )
    seed = details.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise EngineError(
            ErrorKind.ENGINE_ERROR, "stream details have an invalid seed", detail=repr(seed)[:200]
        )
    final = FinalChunk(
        finish_reason=finish,
        tokens_in=count(details, "input_length", "stream details"),
        tokens_out=count(details, "generated_tokens", "stream details"),
        seed=seed,
    )
    return final, reason == "stop_sequence"


def parse_frame(event: SseEvent) -> tuple[str, tuple[FinalChunk, bool] | None]:
    """One ``/generate_stream`` frame: its token's text ("" for a special token) and, on
    the last frame, the final chunk; an error frame raises the engine's error."""
    payload = frame_object(event)
    if "error" in payload:
        raise error_from_frame(payload)
    token = payload.get("token")
    text = token.get("text") if isinstance(token, dict) else None
    special = token.get("special") if isinstance(token, dict) else None
    generated = payload.get("generated_text")
    if (
        not isinstance(text, str)
        or not isinstance(special, bool)
        or not (generated is None or isinstance(generated, str))
    ):
        raise EngineError(
            ErrorKind.ENGINE_ERROR, "malformed stream frame", detail=repr(event.data[:200])
        )
    text = "" if special else text
    if generated is None:
        return text, None
    return text, _final_chunk(payload.get("details"))


def busy_from_metrics(text: str) -> int:
    """Requests queued or batched, from TGI's Prometheus text (absent gauges are 0)."""
    busy = sum(value for name in BUSY_GAUGES for _, value in metric_samples(text, name))
    return max(0, round(busy))


class TgiAdapter(HttpAdapter):
    """One TGI server at ``settings.base_url`` (ORCH-3056).

    ``settings.slots`` is the replica's concurrent requests (else TGI's
    ``max_concurrent_requests``); ``settings.model_path`` is the model file or directory
    TGI loaded, for the digest; ``settings.engine_version`` overrides what ``/info`` says.
    ``settings.model`` is not needed: a TGI server serves one model, named by ``model_id``.
    """

    engine = Engine.TGI

    def __init__(
        self, settings: AdapterSettings, timeouts: HttpTimeouts = DEFAULT_TIMEOUTS
    ) -> None:
        super().__init__(settings, timeouts)
        self._slots_total = settings.slots

    async def _info(self) -> Mapping[str, Any]:
        info = await self._http.json("GET", "/info")
        if not isinstance(info, Mapping):
            raise EngineError(ErrorKind.ENGINE_ERROR, "/info is not an object")
        return info

    async def props(self) -> EngineProps:
        info = await self._info()
        version, model_id = info.get("version"), info.get("model_id")
        ctx, concurrent = info.get("max_total_tokens"), info.get("max_concurrent_requests")
        if not isinstance(version, str) or not isinstance(model_id, str):
            raise EngineError(ErrorKind.ENGINE_ERROR, "/info lacks version or model_id")
        if not isinstance(ctx, int) or not isinstance(concurrent, int):
            raise EngineError(
                ErrorKind.ENGINE_ERROR, "/info lacks max_total_tokens or max_concurrent_requests"
            )
        sha = info.get("sha")
        reported = f"{version}+{sha}" if isinstance(sha, str) and sha else version
        model_path = self.settings.model_path
        return EngineProps(
            engine=self.engine,
            engine_version=self.settings.engine_version or reported,
            slots_total=self.settings.slots or concurrent,
            ctx_limit=ctx,
            model_name=model_id,
            model_path=None if model_path is None else str(model_path),
            model_digest=await self.model_digest(),
        )

    async def slots(self) -> SlotUsage:
        if self._slots_total is None:
            concurrent = (await self._info()).get("max_concurrent_requests")
            if not isinstance(concurrent, int):
                raise EngineError(ErrorKind.ENGINE_ERROR, "/info lacks max_concurrent_requests")
            self._slots_total = concurrent
        busy = busy_from_metrics(await self._http.text("/metrics"))
        return SlotUsage(total=self._slots_total, busy=busy)

    async def count_tokens(self, text: str) -> int:
        """Tokens the prompt ``text`` costs, special tokens included as for a generation."""
        tokens = await self._http.json("POST", "/tokenize", {"inputs": text})
        if not isinstance(tokens, list):
            raise EngineError(ErrorKind.ENGINE_ERROR, "/tokenize did not answer a list of tokens")
        return len(tokens)

    async def apply_template(self, messages: Sequence[Mapping[str, str]]) -> str | None:
        """The prompt TGI renders ``messages`` to; None without a chat template or route."""
        body = {"messages": [dict(message) for message in messages]}
        try:
            answer = await self._http.json("POST", "/chat_tokenize", body)
        except EngineError as exc:
            if exc.status in NO_ROUTE or (exc.status == 422 and exc.message == NO_TEMPLATE):
                return None
            raise
        prompt = answer.get("templated_text") if isinstance(answer, Mapping) else None
        if not isinstance(prompt, str):
            raise EngineError(
                ErrorKind.ENGINE_ERROR, "/chat_tokenize answered without templated_text"
            )
        return prompt

    def stream(self, req: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        trimmer = StopTrimmer(req.stop)

        async def open_response() -> aiohttp.ClientResponse:
            return await self._http.open_stream("/generate_stream", generate_body(req))

        def chunks(event: SseEvent) -> list[StreamChunk]:
            token_text, last = parse_frame(event)
            text = trimmer.push(token_text)
            if last is not None:
                text += trimmer.finish(last[1])
            found: list[StreamChunk] = [TokenChunk(text)] if text else []
            if last is not None:
                found.append(last[0])
            return found

        return sse_stream(open_response, chunks, "generate stream")
