"""Triton Inference Server adapter over its HTTP/REST API (ORCH-3057, ORCH-3058, ORCH-3032).

Triton serves models, not one LLM, so this adapter speaks to one *text streaming model*
on a Triton server: a decoupled model (``model_transaction_policy.decoupled``) taking a
prompt in ``text_input`` and answering one response per token in ``text_output``, the
contract of ``scripts/engines/triton_smollm2.py`` (which documents every input and output).

Routes used (Triton 2.51; KServe v2 protocol plus Triton's extensions):

- ``GET /v2/health/ready`` and ``/v2/health/live`` (200 or not, no body) and
  ``GET /v2/models/{m}/ready``: a replica is ready when the server and its model are.
- ``GET /v2`` → ``{"name": "triton", "version": "2.51.0", "extensions": [...]}``: the
  engine version (ORCH-3032).
- ``GET /v2/models/{m}`` (metadata: ``inputs``/``outputs`` with ``name``, ``datatype``,
  ``shape``) and ``GET /v2/models/{m}/config`` (the model config as JSON). Concurrent
  generations: ``parameters.slots.string_value`` when the model publishes it (a model
  whose one instance runs many requests at once), else the ``instance_group`` counts
  (times ``max_batch_size`` when batching). Context: ``parameters.ctx_limit.string_value``,
  as the model publishes it; nothing is assumed when it is missing.
- ``POST /v2/repository/index`` → ``[{"name", "version", "state"}]``, only when no model
  name is configured: the one READY model whose metadata has a ``text_input`` input and a
  ``text_output`` output is used.
- ``POST /v2/models/{m}/generate_stream`` (the generate extension): the request is one
  JSON object whose keys are the model's inputs (scalars or 1-D arrays); the answer is
  ``text/event-stream`` with one ``data: {json}\\n\\n`` event per model response, carrying
  ``model_name``, ``model_version`` and each output (one-element tensors as scalars).
  There is no ``[DONE]`` sentinel: the body ends with the final response, which carries
  ``finish_reason``, ``tokens_in``, ``tokens_out`` and ``seed``. A failure is
  ``data: {"error": "..."}``, or, when the very first response fails, the same event
  with the HTTP status of the error (400 for a refused request).
- ``POST /v2/models/{m}_tokenize/generate`` ``{"text_input": ...}`` → ``{"tokens_in": n}``:
  prompt token counts (ORCH-3015), when the server has such a tokenizer model.
- ``GET /metrics`` on Triton's metrics port (Prometheus text, ``nv_inference_*``).

Metrics port: Triton serves metrics on their own port, which nothing in the HTTP API
reveals. Unless ``metrics_url`` is given, the adapter follows Triton's default port
layout (HTTP 8000, gRPC 8001, metrics 8002): the metrics port is the HTTP port + 2.

Busy slots: Triton's ``nv_inference_pending_request_count`` counts requests waiting for
a model instance; a decoupled Python model takes a request at once and generates after
its ``execute`` returned, which Triton's metrics do not see. Busy is therefore the
pending count plus the streams this adapter has open, capped at the slot count.

Cancel (ORCH-3017): closing the stream's async generator closes its HTTP connection;
Triton then cancels the request (its HTTP request-fini hook). Whether the model stops
generating is up to the model; the SmolLM2 model server under pytriton 0.7.0 finishes
the generation (at most ``max_tokens``) before its slot is free.

Determinism (ORCH-3045, ORCH-3058): every request sends all parameters of its
:class:`SamplerProfile` as inputs, so a model that lacks one refuses the request (400 →
INVALID_PARAMS) instead of sampling differently; the seed is mapped into llama.cpp's
32-bit range (the model server wraps llama.cpp). Token text is passed through untouched.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from pydantic_core import from_json

from orchestrator_core import Engine, ErrorKind
from orchestratord_server.adapters.base import (
    AdapterSettings,
    CompletionRequest,
    EngineError,
    EngineHealth,
    EngineProps,
    FinalChunk,
    SlotUsage,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.http import (
    DEFAULT_TIMEOUTS,
    OPENAI_FINISH_REASONS,
    EngineHttp,
    HttpAdapter,
    HttpTimeouts,
    count,
    error_from_payload,
    frame_object,
    metric_samples,
    sse_stream,
)
from orchestratord_server.adapters.llamacpp import RANDOM_SEED, engine_seed
from orchestratord_server.adapters.sse import SseDecoder, SseEvent

#: Triton's default ports put metrics two above HTTP (8000 → 8002).
METRICS_PORT_OFFSET = 2
#: The model config parameter a text model publishes its per-request context in.
CTX_PARAMETER = "ctx_limit"
#: The model config parameter a model running many requests per instance publishes.
SLOTS_PARAMETER = "slots"
#: Suffix of the tokenizer model that belongs to a text model.
TOKENIZE_SUFFIX = "_tokenize"
PENDING_METRIC = "nv_inference_pending_request_count"
#: Statuses of a request for a model Triton does not have.
_NO_MODEL = (400, 404)


def metrics_url_for(base_url: str) -> str:
    """Triton's metrics base URL by its default port layout (the HTTP port + 2)."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, f"{host}:{port + METRICS_PORT_OFFSET}", "", "", ""))


def request_inputs(req: CompletionRequest) -> dict[str, Any]:
    """The ``generate_stream`` body for ``req``: one key per model input (ORCH-3058)."""
    sampler = req.sampler
    body: dict[str, Any] = {
        "text_input": req.prompt,
        "max_tokens": req.max_tokens,
        "temperature": sampler.temperature,
        "top_k": sampler.top_k,
        "top_p": sampler.top_p,
        "min_p": sampler.min_p,
        "typical_p": sampler.typical_p,
        "repetition_penalty": sampler.repetition_penalty,
        "repeat_last_n": sampler.repeat_last_n,
        "presence_penalty": sampler.presence_penalty,
        "frequency_penalty": sampler.frequency_penalty,
    }
    if req.seed is not None:
        body["seed"] = engine_seed(req.seed)
    if req.stop:
        body["stop"] = list(req.stop)
    return body


def condensed(message: str) -> str:
    """A model's error text without the Python traceback pytriton puts before it."""
    if not message.startswith("Traceback"):
        return message
    lines = [line for line in message.splitlines() if line.strip()]
    return lines[-1].strip() if lines else message


def _final_chunk(payload: Mapping[str, Any]) -> FinalChunk:
    reason = payload.get("finish_reason")
    finish = OPENAI_FINISH_REASONS.get(reason) if isinstance(reason, str) else None
    if finish is None:
        raise EngineError(
            ErrorKind.ENGINE_ERROR,
            "final response has an unknown finish_reason",
            detail=repr(reason)[:200],
        )
    seed = payload.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed == RANDOM_SEED:
        seed = None
    return FinalChunk(
        finish_reason=finish,
        tokens_in=count(payload, "tokens_in", "final response"),
        tokens_out=count(payload, "tokens_out", "final response"),
        seed=seed,
    )


def _error(payload: Mapping[str, Any], status: int | None) -> EngineError:
    error = error_from_payload(payload, status)
    return EngineError(error.kind, condensed(error.message), error.status)


def chunks_from_event(event: SseEvent) -> list[StreamChunk]:
    """The chunks one ``generate_stream`` event carries (zero, one or two).

    A response with text gives a :class:`TokenChunk`; the final response (the one with
    ``finish_reason``) also gives the :class:`FinalChunk`. An error event raises it.
    """
    payload = frame_object(event, "stream event")
    if "error" in payload:
        raise _error(payload, None)
    text = payload.get("text_output", "")
    if not isinstance(text, str):
        raise EngineError(
            ErrorKind.ENGINE_ERROR, "malformed stream event", detail=repr(event.data[:200])
        )
    chunks: list[StreamChunk] = [TokenChunk(text)] if text else []
    if "finish_reason" in payload:
        chunks.append(_final_chunk(payload))
    return chunks


def _refusal(exc: EngineError) -> EngineError:
    """A stream refused at its first response carries an SSE error event as its body."""
    if not exc.message.startswith("data:"):
        return exc
    for event in SseDecoder().feed(exc.message.encode() + b"\n\n"):
        try:
            payload = from_json(event.data)
        except ValueError:  # the body was cut short; keep it as it is
            return exc
        if isinstance(payload, dict) and "error" in payload:
            return _error(payload, exc.status)
    return exc


def pending_requests(metrics: str, model: str) -> int:
    """``nv_inference_pending_request_count`` of ``model`` (all versions) in ``metrics``."""
    total = sum(
        value
        for labels, value in metric_samples(metrics, PENDING_METRIC)
        if labels.get("model") == model
    )
    if not math.isfinite(total) or total < 0:
        raise EngineError(ErrorKind.ENGINE_ERROR, f"pending request count of {model} is {total}")
    return int(total)


def _instances(config: Mapping[str, Any]) -> int:
    groups = config.get("instance_group")
    if not isinstance(groups, list) or not groups:
        raise EngineError(ErrorKind.ENGINE_ERROR, "the model config has no instance_group")
    count = 0
    for group in groups:
        value = group.get("count") if isinstance(group, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise EngineError(
                ErrorKind.ENGINE_ERROR, f"instance_group has no valid count: {group!r}"
            )
        count += value
    batch = config.get("max_batch_size", 0)
    return count * batch if isinstance(batch, int) and batch > 1 else count


def _parameter(config: Mapping[str, Any], name: str) -> int | None:
    """A positive integer model config parameter, None when it is not published."""
    parameters = config.get("parameters")
    entry = parameters.get(name) if isinstance(parameters, Mapping) else None
    value = entry.get("string_value") if isinstance(entry, Mapping) else None
    if value is None:
        return None
    try:
        number = int(value) if isinstance(value, str) else 0
    except ValueError:
        number = 0
    if number < 1:
        raise EngineError(ErrorKind.ENGINE_ERROR, f"model config parameter {name} is {value!r}")
    return number


def slots_of(config: Mapping[str, Any]) -> int:
    """Concurrent generations of a model, by its config (see the module doc)."""
    published = _parameter(config, SLOTS_PARAMETER)
    return published if published is not None else _instances(config)


def _ctx_limit(config: Mapping[str, Any], model: str) -> int:
    ctx = _parameter(config, CTX_PARAMETER)
    if ctx is None:
        raise EngineError(
            ErrorKind.ENGINE_ERROR,
            f"model {model} publishes no context size (config parameters.{CTX_PARAMETER})",
        )
    return ctx


def _names(entries: object) -> set[str]:
    if not isinstance(entries, list):
        return set()
    return {e["name"] for e in entries if isinstance(e, Mapping) and isinstance(e.get("name"), str)}


def is_text_model(metadata: Mapping[str, Any]) -> bool:
    """The model takes ``text_input`` and answers ``text_output``."""
    return "text_input" in _names(metadata.get("inputs")) and "text_output" in _names(
        metadata.get("outputs")
    )


class TritonAdapter(HttpAdapter):
    """One text streaming model on a Triton server at ``settings.base_url`` (ORCH-3057).

    ``settings.model``: the Triton model name (discovered when None); ``settings.slots``
    overrides the instance count; ``settings.model_path`` gives the model digest.
    ``metrics_url``: where Triton's metrics are (default: see the module doc).
    """

    engine = Engine.TRITON

    def __init__(
        self,
        settings: AdapterSettings,
        timeouts: HttpTimeouts = DEFAULT_TIMEOUTS,
        *,
        metrics_url: str | None = None,
    ) -> None:
        super().__init__(settings, timeouts)
        self.metrics_url = (metrics_url or metrics_url_for(self.base_url)).rstrip("/")
        self._metrics = EngineHttp(self.metrics_url, timeouts)
        self._model_name = settings.model
        self._model_lock = asyncio.Lock()
        self._has_tokenizer = False
        self._open_streams = 0

    async def health(self) -> EngineHealth:
        ready = await self._http.health("/v2/health/ready")
        if not ready.ready:
            if not ready.live:
                return ready
            live = await self._http.health("/v2/health/live")
            return EngineHealth(live=live.ready, ready=False, detail=f"server: {ready.detail}")
        if self._model_name is None:
            return ready
        model = await self._http.health(f"/v2/models/{self._model_name}/ready")
        detail = "ok" if model.ready else f"model {self._model_name}: {model.detail}"
        return EngineHealth(live=True, ready=model.ready, detail=detail)

    async def model(self) -> str:
        """The Triton model this adapter streams from (configured or discovered)."""
        async with self._model_lock:
            if self._model_name is None:
                self._model_name = await self._discover()
            return self._model_name

    async def _discover(self) -> str:
        try:
            index = await self._http.json("POST", "/v2/repository/index", {"ready": True})
        except EngineError as exc:
            raise EngineError(
                exc.kind,
                f"cannot list the server's models ({exc.message}); configure the model name",
                exc.status,
            ) from None
        if not isinstance(index, list):
            raise EngineError(ErrorKind.ENGINE_ERROR, "/v2/repository/index is not a list")
        candidates = []
        for entry in index:
            name = entry.get("name") if isinstance(entry, Mapping) else None
            if not isinstance(name, str) or entry.get("state", "READY") != "READY":
                continue
            if is_text_model(await self._metadata(name)):
                candidates.append(name)
        if len(candidates) != 1:
            found = ", ".join(sorted(candidates)) or "none"
            raise EngineError(
                ErrorKind.ENGINE_ERROR,
                f"cannot pick the text model (text_input → text_output) among the server's "
                f"ready models (found: {found}); configure the model name",
            )
        return candidates[0]

    async def _metadata(self, model: str) -> Mapping[str, Any]:
        metadata = await self._http.json("GET", f"/v2/models/{model}")
        if not isinstance(metadata, Mapping):
            raise EngineError(ErrorKind.ENGINE_ERROR, f"metadata of model {model} is not an object")
        return metadata

    async def _config(self, model: str) -> Mapping[str, Any]:
        config = await self._http.json("GET", f"/v2/models/{model}/config")
        if not isinstance(config, Mapping):
            raise EngineError(ErrorKind.ENGINE_ERROR, f"config of model {model} is not an object")
        return config

    async def props(self) -> EngineProps:
        server = await self._http.json("GET", "/v2")
        version = server.get("version") if isinstance(server, Mapping) else None
        if not isinstance(version, str) or not version:
            raise EngineError(ErrorKind.ENGINE_ERROR, "/v2 reports no server version")
        model = await self.model()
        metadata = await self._metadata(model)
        if not is_text_model(metadata):
            raise EngineError(
                ErrorKind.ENGINE_ERROR, f"model {model} does not map text_input to text_output"
            )
        config = await self._config(model)
        policy = config.get("model_transaction_policy")
        if not (isinstance(policy, Mapping) and policy.get("decoupled") is True):
            raise EngineError(
                ErrorKind.ENGINE_ERROR, f"model {model} is not decoupled, so it cannot stream"
            )
        name = metadata.get("name")
        return EngineProps(
            engine=self.engine,
            engine_version=self.settings.engine_version or version,
            slots_total=self.settings.slots or slots_of(config),
            ctx_limit=_ctx_limit(config, model),
            model_name=name if isinstance(name, str) and name else model,
            model_path=None if self.settings.model_path is None else str(self.settings.model_path),
            model_digest=await self.model_digest(),
        )

    async def slots(self) -> SlotUsage:
        model = await self.model()
        total = self.settings.slots or slots_of(await self._config(model))
        pending = pending_requests(await self._metrics.text("/metrics"), model)
        return SlotUsage(total=total, busy=min(total, pending + self._open_streams))

    async def count_tokens(self, text: str) -> int:
        """Tokens of the prompt ``text``, from the model's tokenizer model ``{m}_tokenize``."""
        tokenizer = await self.model() + TOKENIZE_SUFFIX
        if not self._has_tokenizer:
            try:
                await self._metadata(tokenizer)
            except EngineError as exc:
                if exc.status not in _NO_MODEL:
                    raise
            else:
                self._has_tokenizer = True
        if not self._has_tokenizer:
            raise EngineError(
                ErrorKind.ENGINE_ERROR,
                f"the server has no tokenizer model {tokenizer}; Triton itself cannot count "
                "prompt tokens",
            )
        answer = await self._http.json(
            "POST", f"/v2/models/{tokenizer}/generate", {"text_input": text}
        )
        count = answer.get("tokens_in") if isinstance(answer, Mapping) else None
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise EngineError(
                ErrorKind.ENGINE_ERROR, f"{tokenizer} answered without tokens_in: {answer!r}"
            )
        return count

    async def apply_template(self, messages: Sequence[Mapping[str, str]]) -> str | None:
        """Triton has no chat-template route."""
        return None

    async def metrics_text(self) -> str:
        return await self._metrics.text("/metrics")

    def stream(self, req: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        async def open_response() -> aiohttp.ClientResponse:
            path = f"/v2/models/{await self.model()}/generate_stream"
            try:
                response = await self._http.open_stream(path, request_inputs(req))
            except EngineError as exc:
                raise _refusal(exc) from None
            self._open_streams += 1
            return response

        def closed() -> None:
            self._open_streams -= 1

        return sse_stream(open_response, chunks_from_event, "generate stream", closed)

    async def close(self) -> None:
        await super().close()
        await self._metrics.close()
