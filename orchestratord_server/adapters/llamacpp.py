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

Cancel (ORCH-3017): closing the stream's async generator closes its HTTP connection;
llama.cpp notices at its next write and frees the slot.

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

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from pydantic_core import from_json

from orchestratord_server.adapters.base import (
    CompletionRequest,
    EngineError,
    EngineErrorKind,
    EngineHealth,
    EngineName,
    EngineProps,
    FinalChunk,
    FinishReason,
    SlotUsage,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.digest import sha256_file
from orchestratord_server.adapters.sse import SseDecoder, SseError, SseEvent

#: llama.cpp's "pick a random seed" value (``LLAMA_DEFAULT_SEED``); never sent for a seed.
RANDOM_SEED = 0xFFFFFFFF
#: The samplers profile v1 uses, in the order they run.
SAMPLER_ORDER = ("penalties", "top_k", "typ_p", "top_p", "min_p", "temperature")
_FINISH_REASONS: Mapping[str, FinishReason] = {"limit": "length", "eos": "stop", "word": "stop"}
# llama.cpp closes idle keep-alive connections after 5 s; drop ours before it does, so a
# request never goes out on a socket the server is closing.
_KEEPALIVE_S = 4.0
# llama.cpp closes the connection after a streamed answer although it announces
# keep-alive; a request sent on that socket right away fails. Streams therefore ask for
# their own connection, and closing it is also how a stream is cancelled.
_STREAM_HEADERS = {"Connection": "close"}
#: Statuses of a server that has no such route (an older or stripped-down build).
_NO_ROUTE = (404, 405, 501)


@dataclass(frozen=True, slots=True)
class LlamaCppTimeouts:
    """Seconds. ``stream_read_s`` is the longest silence tolerated inside a stream."""

    connect_s: float = 5.0
    request_s: float = 30.0
    health_s: float = 2.0
    stream_read_s: float = 120.0


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
        "n_probs": 0,
        "min_keep": 0,
        "n_keep": 0,
    }
    if req.seed is not None:
        body["seed"] = engine_seed(req.seed)
    return body


def kind_for_status(status: int) -> EngineErrorKind:
    """The error code an engine HTTP status maps to."""
    if status in (400, 413, 422):
        return "INVALID_PARAMS"
    if status >= 500 and status != 501:
        return "WORKER_RESET"
    return "INTERNAL"


def _error_from_payload(payload: Mapping[str, Any], default_status: int | None) -> EngineError:
    error = payload.get("error", payload)
    if isinstance(error, Mapping):
        code = error.get("code")
        status = code if isinstance(code, int) and not isinstance(code, bool) else default_status
        message = str(error.get("message") or "the engine reported an error")
    else:
        status, message = default_status, str(error)
    kind = "INTERNAL" if status is None else kind_for_status(status)
    return EngineError(kind, message, status)


def _error_from_response(status: int, text: str) -> EngineError:
    with contextlib.suppress(ValueError):
        payload = json.loads(text)
        if isinstance(payload, Mapping):
            return _error_from_payload(payload, status)
    return EngineError(kind_for_status(status), text.strip()[:500] or f"HTTP {status}", status)


def _count(payload: Mapping[str, Any], key: str) -> int:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EngineError("INTERNAL", f"final frame has no valid {key!r}: {value!r}")
    return value


def _finish_reason(payload: Mapping[str, Any]) -> FinishReason:
    stop_type = payload.get("stop_type")
    if stop_type is None:  # builds before stop_type reported three flags
        if payload.get("stopped_limit") is True:
            return "length"
        if payload.get("stopped_eos") is True or payload.get("stopped_word") is True:
            return "stop"
    reason = _FINISH_REASONS.get(stop_type) if isinstance(stop_type, str) else None
    if reason is None:
        raise EngineError("INTERNAL", f"final frame has an unknown stop_type {stop_type!r}")
    return reason


def _final_chunk(payload: Mapping[str, Any]) -> FinalChunk:
    settings = payload.get("generation_settings")
    seed = settings.get("seed") if isinstance(settings, Mapping) else None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed == RANDOM_SEED:
        seed = None
    return FinalChunk(
        finish_reason=_finish_reason(payload),
        tokens_in=_count(payload, "tokens_evaluated"),
        tokens_out=_count(payload, "tokens_predicted"),
        seed=seed,
    )


def _model_name(alias: object, model_path: str | None) -> str:
    """The alias the server was given, else the model file's name."""
    if isinstance(alias, str) and alias and alias != model_path:
        return alias
    return os.path.basename(model_path or "") or "unknown"


def chunks_from_event(event: SseEvent) -> list[StreamChunk]:
    """The chunks one ``/completion`` stream event carries (zero, one or two).

    A token frame with text gives a :class:`TokenChunk` (frames without text, such as
    prompt progress, give none); the final frame gives its remaining text, if any, and a
    :class:`FinalChunk`. An error event raises the engine's error.
    """
    try:
        payload = from_json(event.data)  # pydantic's parser: ~3x json.loads, once per token
    except ValueError:
        raise EngineError("INTERNAL", f"unparseable stream frame: {event.data[:200]!r}") from None
    if not isinstance(payload, dict):
        raise EngineError("INTERNAL", f"stream frame is not an object: {event.data[:200]!r}")
    if event.event == "error" or "error" in payload:
        raise _error_from_payload(payload, None)
    content = payload.get("content", "")
    stop = payload.get("stop", False)
    if not isinstance(content, str) or not isinstance(stop, bool):
        raise EngineError("INTERNAL", f"malformed stream frame: {event.data[:200]!r}")
    chunks: list[StreamChunk] = [TokenChunk(content)] if content else []
    if stop:
        chunks.append(_final_chunk(payload))
    return chunks


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn transport and framing failures into :class:`EngineError`."""
    try:
        yield
    except EngineError:
        raise
    except aiohttp.ConnectionTimeoutError as exc:
        raise EngineError("WORKER_RESET", f"{what}: cannot connect: {exc}") from exc
    except TimeoutError as exc:
        raise EngineError("DECODE_TIMEOUT", f"{what}: the engine stopped answering") from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
        raise EngineError("WORKER_RESET", f"{what}: connection lost: {exc!r}") from exc
    except (aiohttp.ClientError, SseError, UnicodeDecodeError) as exc:
        raise EngineError("INTERNAL", f"{what}: {exc}") from exc


class LlamaCppAdapter:
    """One llama.cpp server at ``base_url`` (ORCH-3054).

    ``model_path``: the GGUF file the server runs, when it is on this machine, for the
    model digest. ``engine_version``: overrides ``build_info`` (see the module doc).
    The HTTP session is created on first use, inside the running event loop.
    """

    engine: EngineName = "llamacpp"

    def __init__(
        self,
        base_url: str,
        *,
        model_path: Path | None = None,
        engine_version: str | None = None,
        timeouts: LlamaCppTimeouts = LlamaCppTimeouts(),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._model_path = model_path
        self._engine_version = engine_version
        self._timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None
        self._digest: str | None = None
        self._digest_lock = asyncio.Lock()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(keepalive_timeout=_KEEPALIVE_S),
                timeout=aiohttp.ClientTimeout(
                    total=self._timeouts.request_s, connect=self._timeouts.connect_s
                ),
                raise_for_status=False,
            )
        return self._session

    async def _request(self, method: str, path: str, body: Any = None) -> aiohttp.ClientResponse:
        """Send a control call and read its body; non-2xx answers raise."""
        response = await self._http().request(method, self.base_url + path, json=body)
        async with response:
            await response.read()
            if response.status != 200:
                raise _error_from_response(response.status, await response.text(errors="replace"))
        return response

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        with _translated(f"{method} {path}"):
            response = await self._request(method, path, body)
            try:
                return await response.json(content_type=None)
            except ValueError:
                text = (await response.text(errors="replace"))[:200]
                raise EngineError("INTERNAL", f"{path} answered non-JSON: {text!r}") from None

    async def health(self) -> EngineHealth:
        timeout = aiohttp.ClientTimeout(total=self._timeouts.health_s)
        try:
            async with self._http().get(self.base_url + "/health", timeout=timeout) as response:
                text = await response.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            return EngineHealth(live=False, ready=False, detail=f"unreachable: {exc!r}")
        if response.status == 200:
            return EngineHealth(live=True, ready=True, detail="ok")
        error = _error_from_response(response.status, text)
        detail = f"HTTP {response.status}: {error.message}"
        return EngineHealth(live=True, ready=False, detail=detail)

    async def props(self) -> EngineProps:
        props = await self._json("GET", "/props")
        if not isinstance(props, Mapping):
            raise EngineError("INTERNAL", "/props is not an object")
        settings = props.get("default_generation_settings")
        ctx = settings.get("n_ctx") if isinstance(settings, Mapping) else None
        slots_total = props.get("total_slots")
        if not isinstance(ctx, int) or not isinstance(slots_total, int):
            raise EngineError("INTERNAL", "/props lacks total_slots or n_ctx")
        engine_model = props.get("model_path")
        model_path = str(engine_model) if isinstance(engine_model, str) else None
        alias = props.get("model_alias")
        build = props.get("build_info")
        return EngineProps(
            engine=self.engine,
            engine_version=self._engine_version or (build if isinstance(build, str) else "unknown"),
            slots_total=slots_total,
            ctx_limit=ctx,
            model_name=_model_name(alias, model_path),
            model_path=model_path,
            model_digest=await self._model_digest(model_path),
        )

    async def _model_digest(self, engine_model_path: str | None) -> str | None:
        if self._model_path is None:
            return None
        if (
            engine_model_path is not None
            and os.path.exists(engine_model_path)
            and not os.path.samefile(engine_model_path, self._model_path)
        ):
            raise EngineError(
                "INTERNAL",
                f"the engine serves {engine_model_path}, not {self._model_path}",
            )
        async with self._digest_lock:
            if self._digest is None:
                self._digest = await asyncio.to_thread(sha256_file, self._model_path)
        return self._digest

    async def slots(self) -> SlotUsage:
        slots = await self._json("GET", "/slots")
        if not isinstance(slots, list) or not all(isinstance(s, Mapping) for s in slots):
            raise EngineError("INTERNAL", "/slots is not a list of slots")
        busy = sum(1 for slot in slots if slot.get("is_processing") is True)
        return SlotUsage(total=len(slots), busy=busy)

    async def count_tokens(self, text: str) -> int:
        """Tokens the prompt ``text`` costs, BOS included when the model adds one."""
        answer = await self._json("POST", "/tokenize", {"content": text, "add_special": True})
        tokens = answer.get("tokens") if isinstance(answer, Mapping) else None
        if not isinstance(tokens, list):
            raise EngineError("INTERNAL", "/tokenize answered without tokens")
        return len(tokens)

    async def apply_template(self, messages: Sequence[Mapping[str, str]]) -> str | None:
        """The prompt llama.cpp renders ``messages`` to; None when the build lacks the route."""
        try:
            answer = await self._json("POST", "/apply-template", {"messages": list(messages)})
        except EngineError as exc:
            if exc.status in _NO_ROUTE:
                return None
            raise
        prompt = answer.get("prompt") if isinstance(answer, Mapping) else None
        if not isinstance(prompt, str):
            raise EngineError("INTERNAL", "/apply-template answered without a prompt")
        return prompt

    async def metrics_text(self) -> str:
        with _translated("GET /metrics"):
            response = await self._request("GET", "/metrics")
            return await response.text()

    async def stream(self, req: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self._timeouts.connect_s, sock_read=self._timeouts.stream_read_s
        )
        with _translated("completion stream"):
            response = await self._http().post(
                self.base_url + "/completion",
                json=completion_body(req, stream=True),
                headers=_STREAM_HEADERS,
                timeout=timeout,
            )
        try:
            with _translated("completion stream"):
                if response.status != 200:
                    raise _error_from_response(
                        response.status, await response.text(errors="replace")
                    )
                decoder = SseDecoder()
                final = False
                while not final:
                    data = await response.content.readany()
                    for event in decoder.feed(data) if data else decoder.finish():
                        for chunk in chunks_from_event(event):
                            final = isinstance(chunk, FinalChunk)
                            yield chunk
                        if final:
                            break
                    if not final:
                        decoder.check()
                    if not data and not final:
                        raise EngineError(
                            "WORKER_RESET", "the engine closed the stream before its final frame"
                        )
        finally:
            response.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
