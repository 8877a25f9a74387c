"""vLLM adapter over its OpenAI-compatible server (ORCH-3055, ORCH-3058, ORCH-3032).

Routes used (vLLM 0.32, ``vllm/entrypoints``): ``GET /health`` (200, or 503 once the
engine core is dead), ``GET /version`` (``{"version": "0.32.0"}``), ``GET /v1/models``
(one card per served model: ``id``, ``root`` = the model it loaded, ``max_model_len``),
``POST /tokenize`` (``{"prompt"}`` or ``{"messages"}`` → ``{"tokens", "count",
"max_model_len"}``), ``POST /detokenize`` (``{"tokens"}`` → ``{"prompt"}``), ``GET
/metrics`` (Prometheus text, ``vllm:`` prefix) and ``POST /v1/completions`` with
``"stream": true`` and ``stream_options.include_usage``: ``data: {json}`` chunks whose
``choices[0].text`` is the text delta, the last token chunk carrying ``finish_reason``
(``stop`` | ``length``; ``abort`` when the engine dropped the request), then one chunk with
``choices: []`` and ``usage`` (``prompt_tokens``, ``completion_tokens``), then ``data:
[DONE]``. A failure inside the stream is a ``data: {"error": {"message", "type", "code"}}``
chunk followed by ``[DONE]``; a refused request is an HTTP 400 with the same body.

Cancel (ORCH-3017): closing the stream's async generator closes its HTTP connection;
vLLM's route notices the disconnect and aborts the request (``num_requests_running``
drops).

Slots (ORCH-3019): vLLM does not report ``max_num_seqs`` over HTTP. ``slots_total`` is
``AdapterSettings.slots`` when given; otherwise ``kv_cache_max_concurrency`` of the
``vllm:cache_config_info`` metric, rounded down: how many ``max_model_len``-token requests
vLLM's KV cache holds at once, as vLLM computes it; otherwise :data:`DEFAULT_SLOTS`. Busy
slots are ``vllm:num_requests_running``.

Determinism (ORCH-3045, ORCH-3058): every request states all sampler parameters of its
:class:`SamplerProfile` (vLLM fills unstated ones from the model's generation config), and
pins vLLM's other output-shaping knobs to their neutral values. A profile vLLM cannot
honour exactly is refused with INVALID_PARAMS (see :func:`sampler_fields`). vLLM applies
its samplers in a fixed order (penalties, temperature, min-p, top-k, top-p), so a profile
samples the same way on every vLLM replica of a set, though not as llama.cpp does. Seeds
map into vLLM's signed 64-bit range without hitting its "random" value ``-1``. Without
``reuse_prompt_cache`` each request carries a fresh ``cache_salt``, so it never reads KV
that an earlier request left in vLLM's prefix cache. The token chunks are the chunks'
``text`` strings, untouched; empty deltas are dropped; token counts are vLLM's ``usage``.

Features: structured output (a ``json_schema`` goes as ``"structured_outputs": {"json":
schema}``, enforced by vLLM's grammar backend, xgrammar by default; the legacy
``guided_json`` field is ignored by 0.32 without an error, so it is never sent),
log-probabilities (``logprobs: k``, at most 20, gives each chunk OpenAI's legacy
``{tokens, token_logprobs, top_logprobs, text_offset}``; see :func:`logprob_entries`) and
embeddings (``POST /v1/embeddings``, served only by a server started with ``--runner
pooling``, which in turn serves no completions; vLLM refuses ``dimensions`` for models
without Matryoshka embeddings, so it is never sent).

Engine identity (ORCH-3032): ``engine_version`` is ``/version`` unless the owner of the
process knows better; ``model_digest`` is
:func:`~orchestratord_server.adapters.digest.sha256_path` of ``AdapterSettings.model_path``
(a Hugging Face model directory, or a file), computed once in a worker thread.
"""

from __future__ import annotations

import math
import operator
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import aiohttp

from orchestrator_core import Engine, ErrorKind, FinishReason
from orchestratord_server.adapters import embeddings
from orchestratord_server.adapters.base import (
    AdapterSettings,
    CompletionRequest,
    Embeddings,
    EngineError,
    EngineProps,
    FinalChunk,
    SamplerProfile,
    SlotUsage,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.chat import Feature
from orchestratord_server.adapters.http import (
    DEFAULT_TIMEOUTS,
    NO_ROUTE,
    OPENAI_FINISH_REASONS,
    HttpAdapter,
    HttpTimeouts,
    count,
    error_from_payload,
    frame_object,
    metric_samples,
    optional,
    sse_stream,
)
from orchestratord_server.adapters.sse import SseEvent

#: vLLM's seeds are signed 64-bit; ``-1`` means "random" and is never produced here.
SEED_RANGE = 2**63
#: vLLM raises a temperature in (0, 0.01) to 0.01 (``_MAX_TEMP`` in sampling_params.py).
MIN_SAMPLED_TEMPERATURE = 0.01
#: The most alternatives per token vLLM reports (``max_logprobs``, 20 by default).
MAX_LOGPROBS = 20
#: Slots reported when neither the settings nor the engine say (one request at a time).
DEFAULT_SLOTS = 1
RUNNING_METRIC = "vllm:num_requests_running"
KV_USAGE_METRIC = "vllm:kv_cache_usage_perc"
CACHE_INFO_METRIC = "vllm:cache_config_info"
_DONE = "[DONE]"


def engine_seed(seed: int) -> int:
    """Map any integer seed into vLLM's seed range (non-negative, so never ``-1``)."""
    return seed % SEED_RANGE


def sampler_fields(sampler: SamplerProfile) -> dict[str, Any]:
    """The ``/v1/completions`` sampler fields of ``sampler``; INVALID_PARAMS if vLLM
    cannot sample exactly as the profile says.

    The profile uses llama.cpp's conventions, which vLLM shares for temperature (at most
    0 is greedy), top-k (0 disables), top-p, min-p and the penalty values. It cannot
    honour: a ``typical_p`` other than 1 (vLLM has no typical sampling); a temperature in
    (0, 0.01), which vLLM raises to 0.01; and a penalty window. The profile's penalties
    look at the last ``repeat_last_n`` tokens of the sequence (-1: all of it, 0: none,
    which makes every penalty neutral), while vLLM's repetition penalty always sees the
    whole prompt and output and its presence and frequency penalties only the output. So
    a non-neutral repetition penalty needs ``repeat_last_n`` -1, and non-neutral presence
    or frequency penalties cannot be honoured with any window.
    """
    if sampler.typical_p != 1.0:
        raise EngineError(
            ErrorKind.INVALID_PARAMS,
            f"vLLM has no typical-p sampling (typical_p {sampler.typical_p})",
        )
    if 0.0 < sampler.temperature < MIN_SAMPLED_TEMPERATURE:
        raise EngineError(
            ErrorKind.INVALID_PARAMS,
            f"vLLM raises a temperature below {MIN_SAMPLED_TEMPERATURE} to that value "
            f"(temperature {sampler.temperature})",
        )
    penalties = sampler.repeat_last_n != 0
    repetition = sampler.repetition_penalty if penalties else 1.0
    presence = sampler.presence_penalty if penalties else 0.0
    frequency = sampler.frequency_penalty if penalties else 0.0
    if repetition != 1.0 and sampler.repeat_last_n != -1:
        raise EngineError(
            ErrorKind.INVALID_PARAMS,
            "vLLM's repetition penalty covers the whole sequence, not the last "
            f"{sampler.repeat_last_n} tokens (repeat_last_n must be -1)",
        )
    if presence != 0.0 or frequency != 0.0:
        raise EngineError(
            ErrorKind.INVALID_PARAMS,
            "vLLM's presence and frequency penalties count generated tokens only, not the "
            f"last {sampler.repeat_last_n} tokens of prompt and output",
        )
    return {
        "temperature": max(sampler.temperature, 0.0),
        "top_k": max(sampler.top_k, 0),
        "top_p": sampler.top_p,
        "min_p": sampler.min_p,
        "repetition_penalty": repetition,
        "presence_penalty": presence,
        "frequency_penalty": frequency,
    }


def completion_body(req: CompletionRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The ``POST /v1/completions`` body for ``req``, every sampler pinned (ORCH-3058)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": req.prompt,
        "max_tokens": req.max_tokens,
        "stream": stream,
        "stop": list(req.stop),
        "n": 1,
        "echo": False,
        **sampler_fields(req.sampler),
        "min_tokens": 0,
        "ignore_eos": False,
        "stop_token_ids": [],
        "bad_words": [],
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
        "spaces_between_special_tokens": True,
        "add_special_tokens": True,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
        # Each chunk names its tokens (see `token_pieces`), so ask for at least the
        # chosen token's log-probability.
        body["logprobs"] = max(req.logprobs or 0, 0)
    elif req.logprobs is not None:
        body["logprobs"] = max(req.logprobs, 0)
    if req.json_schema is not None:
        body["structured_outputs"] = {"json": dict(req.json_schema)}
    if req.seed is not None:
        body["seed"] = engine_seed(req.seed)
    if not req.reuse_prompt_cache:
        body["cache_salt"] = uuid.uuid4().hex
    return body


def token_pieces(text: str, tokens: Sequence[str]) -> list[str]:
    """A chunk's ``text`` split at the boundaries of the ``tokens`` it carries (ORCH-3058).

    vLLM merges the deltas of several tokens into one chunk when its server falls behind
    the engine, so chunk boundaries depend on timing; the chunk's logprobs name its tokens,
    each decoded on its own. Tokens whose own text is a clean prefix of what is left become
    one piece each. A token that decodes to U+FFFD holds part of a multi-byte character:
    it and the tokens up to the next clean one form one piece (the character, once whole),
    exactly as they would arrive one chunk at a time, where vLLM holds back an incomplete
    character. Where the tokens' texts do not line up with the chunk (tokenizers whose
    single-token decode drops a leading space, special tokens), the rest of the chunk is one
    piece: the text stays exact, only those boundaries follow vLLM's chunking. Empty pieces
    are dropped.
    """
    return [piece for piece, _ in token_spans(text, tokens)]


def token_spans(text: str, tokens: Sequence[str]) -> list[tuple[str, range]]:
    """:func:`token_pieces` with, for each piece, the indexes (into ``tokens``) of the
    tokens whose text it holds.

    The tokens of a multi-byte character (vLLM 0.32 names the first ones ``""`` in a
    stream, U+FFFD elsewhere) go with the piece that completes it; the tokens after the
    point where texts stop lining up go with the rest of the chunk. Tokens that end the
    chunk without text of their own in it (the start of a character vLLM holds back, a
    special token such as the end of sequence) belong to no piece: they are the indexes
    from the last span's ``stop`` on.
    """
    spans: list[tuple[str, range]] = []
    position = 0
    first = 0  # the first token not yet in a piece
    pending = False
    for index, token in enumerate(tokens):
        if not token or "\ufffd" in token:
            pending = pending or bool(token)
            continue
        if pending:
            found = text.find(token, position + 1)
            if found < 0:
                break
            spans.append((text[position:found], range(first, index)))
            position, first, pending = found, index, False
        if not text.startswith(token, position):
            break
        spans.append((token, range(first, index + 1)))
        position, first = position + len(token), index + 1
    if position < len(text):
        spans.append((text[position:], range(first, len(tokens))))
    return spans


def _alternatives(top: object, k: int) -> list[dict[str, Any]]:
    """One token's ``top_logprobs`` dict as the ``k`` likeliest alternatives."""
    if top is None and k == 0:
        return []
    if not isinstance(top, Mapping) or not all(
        isinstance(lp, (int, float)) and not isinstance(lp, bool) for lp in top.values()
    ):
        raise EngineError(
            ErrorKind.ENGINE_ERROR,
            "malformed top_logprobs in a stream chunk",
            detail=repr(top)[:200],
        )
    ranked = sorted(top.items(), key=operator.itemgetter(1), reverse=True)[:k]
    return [{"token": token, "logprob": float(lp), "bytes": None} for token, lp in ranked]


def logprob_entries(logprobs: Mapping[str, Any], k: int) -> list[dict[str, Any]]:
    """A chunk's legacy ``logprobs`` as one TokenLogprob object per token, with the ``k``
    likeliest alternatives each.

    vLLM lists the chosen token among the alternatives too, so a token outside the top
    ``k`` comes with ``k + 1`` of them: they are ranked by log-probability and the first
    ``k`` kept. vLLM keys the alternatives by their text, so alternatives that decode
    alike (parts of characters, all ``""``) come as one, and a token can have fewer than
    ``k``. vLLM does not send token bytes (a token's decoded text is not its bytes when it
    holds part of a character), so ``bytes`` is None.
    """
    tokens = logprobs.get("tokens")
    chosen = logprobs.get("token_logprobs")
    tops = logprobs.get("top_logprobs")
    if tops is None and k == 0 and isinstance(tokens, list):
        tops = [None] * len(tokens)
    if (
        not isinstance(tokens, list)
        or not isinstance(chosen, list)
        or not isinstance(tops, list)
        or not len(tokens) == len(chosen) == len(tops)
        or not all(isinstance(token, str) for token in tokens)
        or not all(isinstance(lp, (int, float)) and not isinstance(lp, bool) for lp in chosen)
    ):
        raise EngineError(
            ErrorKind.ENGINE_ERROR,
            "malformed logprobs in a stream chunk",
            detail=repr(logprobs)[:200],
        )
    return [
        {"token": token, "logprob": float(lp), "bytes": None, "top_logprobs": _alternatives(top, k)}
        for token, lp, top in zip(tokens, chosen, tops, strict=True)
    ]


class CompletionStream:
    """Turns the events of one ``/v1/completions`` stream into chunks.

    ``feed`` returns the chunks an event carries: a :class:`TokenChunk` per token piece of
    a non-empty text delta (:func:`token_pieces`), and the :class:`FinalChunk` at
    ``[DONE]``, built from the ``finish_reason`` and ``usage`` seen before it. ``done`` is
    True once ``[DONE]`` arrived. Error chunks and malformed or incomplete streams raise
    :class:`EngineError`.

    With ``top_logprobs`` set (the request's ``logprobs``), each token chunk carries the
    :func:`logprob_entries` of exactly the tokens whose text it holds, so the entries do
    not depend on how vLLM merged its deltas either: a token whose text a chunk does not
    show yet (the first bytes of a character) goes with the next piece. Tokens no text
    ever shows (the end-of-sequence token) are not reported, as OpenAI does not.
    """

    def __init__(self, seed: int | None, top_logprobs: int | None = None) -> None:
        self.seed = seed
        self.top_logprobs = top_logprobs
        self._waiting: list[dict[str, Any]] = []
        self.done = False
        self._finish_reason: FinishReason | None = None
        self._usage: tuple[int, int] | None = None

    def feed(self, event: SseEvent) -> list[StreamChunk]:
        if self.done:
            raise EngineError(
                ErrorKind.ENGINE_ERROR, "stream data after [DONE]", detail=repr(event.data[:200])
            )
        if event.data == _DONE:
            self.done = True
            return [self._final()]
        payload = frame_object(event, "stream chunk")
        if "error" in payload:
            raise error_from_payload(payload, None)
        chunks: list[StreamChunk] = []
        choices = payload.get("choices")
        if not isinstance(choices, list):
            raise EngineError(
                ErrorKind.ENGINE_ERROR,
                "stream chunk without choices",
                detail=repr(event.data[:200]),
            )
        if choices:
            chunks.extend(self._choice(choices[0], event.data))
        usage = payload.get("usage")
        if isinstance(usage, Mapping):
            self._usage = (
                count(usage, "prompt_tokens", "usage chunk"),
                count(usage, "completion_tokens", "usage chunk"),
            )
        return chunks

    def _choice(self, choice: object, data: str) -> list[StreamChunk]:
        if not isinstance(choice, Mapping):
            raise EngineError(
                ErrorKind.ENGINE_ERROR, "malformed stream chunk", detail=repr(data[:200])
            )
        text = choice.get("text", "")
        reason = choice.get("finish_reason")
        if not isinstance(text, str) or not (reason is None or isinstance(reason, str)):
            raise EngineError(
                ErrorKind.ENGINE_ERROR, "malformed stream chunk", detail=repr(data[:200])
            )
        if reason is not None:
            if self._finish_reason is not None:
                raise EngineError(ErrorKind.ENGINE_ERROR, "the stream finished twice")
            if reason == "abort":
                raise EngineError(ErrorKind.WORKER_RESET, "the engine aborted the request")
            mapped = OPENAI_FINISH_REASONS.get(reason)
            if mapped is None:
                raise EngineError(
                    ErrorKind.ENGINE_ERROR, "unknown finish_reason", detail=repr(reason)[:200]
                )
            self._finish_reason = mapped
        logprobs = choice.get("logprobs")
        tokens = logprobs.get("tokens") if isinstance(logprobs, Mapping) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            if self.top_logprobs is not None and text:
                raise EngineError(
                    ErrorKind.ENGINE_ERROR,
                    "stream chunk without the logprobs asked for",
                    detail=repr(data[:200]),
                )
            return [TokenChunk(text)] if text else []
        spans = token_spans(text, tokens)
        if self.top_logprobs is None or not isinstance(logprobs, Mapping):
            return [TokenChunk(piece) for piece, _ in spans]
        entries = logprob_entries(logprobs, self.top_logprobs)
        chunks: list[StreamChunk] = []
        for piece, taken in spans:
            carried = (*self._waiting, *entries[taken.start : taken.stop])
            self._waiting = []
            chunks.append(TokenChunk(piece, logprobs=carried))
        self._waiting.extend(entries[spans[-1][1].stop if spans else 0 :])
        return chunks

    def _final(self) -> FinalChunk:
        if self._finish_reason is None:
            raise EngineError(ErrorKind.ENGINE_ERROR, "the stream ended without a finish_reason")
        if self._usage is None:
            raise EngineError(ErrorKind.ENGINE_ERROR, "the stream ended without a usage chunk")
        tokens_in, tokens_out = self._usage
        return FinalChunk(
            finish_reason=self._finish_reason,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            seed=self.seed,
        )


def running_requests(metrics: str) -> int:
    """``vllm:num_requests_running`` summed over engines; INTERNAL when it is missing."""
    samples = metric_samples(metrics, RUNNING_METRIC)
    if not samples:
        raise EngineError(ErrorKind.ENGINE_ERROR, f"/metrics lacks {RUNNING_METRIC}")
    return round(sum(value for _, value in samples))


def kv_cache_usage(metrics: str) -> float | None:
    """``vllm:kv_cache_usage_perc`` averaged over engines, clamped to 0..1; None when absent."""
    values = [value for _, value in metric_samples(metrics, KV_USAGE_METRIC)]
    if not values or not all(math.isfinite(v) for v in values):
        return None
    return min(1.0, max(0.0, sum(values) / len(values)))


def kv_cache_concurrency(metrics: str) -> int | None:
    """Whole ``max_model_len`` requests the KV cache holds (summed over engines), if told."""
    total = 0.0
    for labels, _ in metric_samples(metrics, CACHE_INFO_METRIC):
        try:
            total += float(labels.get("kv_cache_max_concurrency", "nan"))
        except ValueError:
            return None
    if not math.isfinite(total) or total < 1:
        return None
    return math.floor(total)


def _served_card(models: object, wanted: str | None) -> Mapping[str, Any]:
    """The ``/v1/models`` card of ``wanted`` (the first card when None)."""
    data = models.get("data") if isinstance(models, Mapping) else None
    cards = [card for card in data if isinstance(card, Mapping)] if isinstance(data, list) else []
    if not cards:
        raise EngineError(ErrorKind.ENGINE_ERROR, "/v1/models lists no model")
    if wanted is None:
        return cards[0]
    for card in cards:
        if card.get("id") == wanted:
            return card
    served = ", ".join(str(card.get("id")) for card in cards)
    raise EngineError(
        ErrorKind.ENGINE_ERROR, f"the engine does not serve {wanted!r} (it serves {served})"
    )


class VllmAdapter(HttpAdapter):
    """One vLLM OpenAI-compatible server (ORCH-3055); see the module doc.

    The HTTP session is created on first use, inside the running event loop.
    """

    engine = Engine.VLLM
    features = frozenset({Feature.STRUCTURED_OUTPUT, Feature.LOGPROBS, Feature.EMBEDDINGS})

    def __init__(
        self, settings: AdapterSettings, timeouts: HttpTimeouts = DEFAULT_TIMEOUTS
    ) -> None:
        # uvicorn (vLLM's server) closes idle keep-alive connections after 5 s.
        super().__init__(settings, timeouts, keepalive_s=4.0)
        self._model: str | None = settings.model
        self._slots_total: int | None = settings.slots

    async def _card(self) -> Mapping[str, Any]:
        card = _served_card(await self._http.json("GET", "/v1/models"), self.settings.model)
        model = card.get("id")
        if not isinstance(model, str) or not model:
            raise EngineError(ErrorKind.ENGINE_ERROR, "/v1/models lists a model without an id")
        self._model = model
        return card

    async def _model_name(self) -> str:
        """The served model name requests carry: the settings', else the first served."""
        if self._model is None:
            await self._card()
        assert self._model is not None
        return self._model

    async def props(self) -> EngineProps:
        card = await self._card()
        ctx = card.get("max_model_len")
        if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx < 1:
            raise EngineError(
                ErrorKind.ENGINE_ERROR, f"/v1/models has no valid max_model_len: {ctx!r}"
            )
        root = card.get("root")
        served_path = root if isinstance(root, str) and root else None
        assert self._model is not None
        return EngineProps(
            engine=self.engine,
            engine_version=self.settings.engine_version or await self._engine_version(),
            slots_total=await self._slots_total_now(),
            ctx_limit=ctx,
            model_name=self._model,
            model_path=served_path,
            model_digest=await self.model_digest(served_path),
        )

    async def _engine_version(self) -> str:
        answer = await self._http.json("GET", "/version")
        version = answer.get("version") if isinstance(answer, Mapping) else None
        if not isinstance(version, str) or not version:
            raise EngineError(ErrorKind.ENGINE_ERROR, "/version answered without a version")
        return version

    async def _slots_total_now(self, metrics: str | None = None) -> int:
        """The settings' slots, else what the KV cache holds, else DEFAULT_SLOTS."""
        if self._slots_total is None:
            text = metrics if metrics is not None else await self._http.text("/metrics")
            concurrency = kv_cache_concurrency(text)
            self._slots_total = DEFAULT_SLOTS if concurrency is None else concurrency
        return self._slots_total

    async def slots(self) -> SlotUsage:
        metrics = await self._http.text("/metrics")
        total = await self._slots_total_now(metrics)
        return SlotUsage(total=total, busy=running_requests(metrics))

    async def _tokenize(self, body: Mapping[str, Any]) -> list[int]:
        answer = await self._http.json("POST", "/tokenize", dict(body))
        tokens = answer.get("tokens") if isinstance(answer, Mapping) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise EngineError(ErrorKind.ENGINE_ERROR, "/tokenize answered without tokens")
        return tokens

    async def count_tokens(self, text: str) -> int:
        """Tokens the prompt ``text`` costs as a completion prompt (special tokens added)."""
        model = await self._model_name()
        body = {"model": model, "prompt": text, "add_special_tokens": True}
        return len(await self._tokenize(body))

    async def apply_template(self, messages: Sequence[Mapping[str, str]]) -> str | None:
        """The prompt vLLM renders ``messages`` to with the model's chat template.

        vLLM's ``/tokenize`` renders the template but answers token ids; ``/detokenize``
        turns them back into text, special tokens included. The text is returned only if
        it tokenizes, as a completion prompt, to exactly those ids; otherwise (or without
        these routes) None, and the caller falls back to its own rendering.
        """
        model = await self._model_name()
        rendered = await optional(
            self._tokenize(
                {"model": model, "messages": list(messages), "add_generation_prompt": True}
            )
        )
        if rendered is None:
            return None
        body = {"model": model, "tokens": rendered}
        answer = await optional(self._http.json("POST", "/detokenize", body))
        if answer is None:
            return None
        prompt = answer.get("prompt") if isinstance(answer, Mapping) else None
        if not isinstance(prompt, str):
            raise EngineError(ErrorKind.ENGINE_ERROR, "/detokenize answered without a prompt")
        again = await self._tokenize({"model": model, "prompt": prompt, "add_special_tokens": True})
        return prompt if again == rendered else None

    def stream(self, req: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        parsers: list[CompletionStream] = []

        async def open_response() -> aiohttp.ClientResponse:
            body = completion_body(req, await self._model_name(), stream=True)
            parsers.append(CompletionStream(body.get("seed"), req.logprobs))
            return await self._http.open_stream("/v1/completions", body)

        return sse_stream(open_response, lambda event: parsers[0].feed(event), "completion stream")

    async def embed(self, inputs: Sequence[str]) -> Embeddings:
        """The embeddings of ``inputs`` from a pooling server (``--runner pooling``), asked
        under the served model's name; a generation server has no such route, which is
        INVALID_PARAMS."""
        body = embeddings.request_body(inputs, await self._model_name())
        try:
            answer = await self._http.json("POST", embeddings.PATH, body)
        except EngineError as exc:
            if exc.status in NO_ROUTE:
                raise EngineError(
                    ErrorKind.INVALID_PARAMS,
                    "this vLLM server serves no embeddings (start it with --runner pooling)",
                    exc.status,
                    detail=exc.message,
                ) from None
            raise
        return embeddings.parse(answer, len(inputs))

    async def kv_cache_usage(self) -> float | None:
        """``vllm:kv_cache_usage_perc`` (a fraction despite its name), averaged over engines."""
        return kv_cache_usage(await self.metrics_text())
