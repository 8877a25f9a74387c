"""HTTP plumbing every engine adapter shares (ORCH-3054..3057).

One pooled aiohttp session per engine base URL (connection reuse), the timeouts, the
one mapping of transport failures and HTTP statuses onto :class:`EngineError` kinds (so
a refused request, a crashed worker and a silent one mean the same on every engine), the
one loop that turns a streamed SSE response into chunks (`sse_stream`), which each
adapter feeds with its own frame parser (llama.cpp's stream is read by `push.py`
instead, with the same mapping), and `HttpAdapter`, the base every adapter builds on:
settings, session, health, the model digest (computed once, off the event loop), the
engine's metrics text, the relay of a stream's chunks, optional routes, close. The
helpers below it read what every engine sends alike: a JSON frame, a count, a
Prometheus sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from httptools import HttpParserError
from prometheus_client.parser import text_string_to_metric_families
from pydantic_core import from_json

from orchestrator_core import Engine, ErrorKind, FinishReason
from orchestratord_server.adapters import embeddings
from orchestratord_server.adapters.base import (
    AdapterSettings,
    CompletionRequest,
    Embeddings,
    EngineError,
    EngineHealth,
    FinalChunk,
    StreamChunk,
)
from orchestratord_server.adapters.chat import Feature
from orchestratord_server.adapters.digest import sha256_path
from orchestratord_server.adapters.sse import SseDecoder, SseError, SseEvent

#: Statuses of a server that has no such route (an older or stripped-down build).
NO_ROUTE = frozenset({404, 405, 501})
#: The finish reasons of engines that name them as OpenAI does (vLLM, the Triton model).
OPENAI_FINISH_REASONS: Mapping[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class HttpTimeouts:
    """Seconds. ``stream_read_s`` is the longest silence tolerated inside a stream."""

    connect_s: float = 5.0
    request_s: float = 30.0
    health_s: float = 2.0
    stream_read_s: float = 120.0


#: The timeouts adapters use unless told otherwise.
DEFAULT_TIMEOUTS = HttpTimeouts()


def kind_for_status(status: int) -> ErrorKind:
    """The error code an engine HTTP status maps to."""
    if status in (400, 413, 422):
        return ErrorKind.INVALID_PARAMS
    if status >= 500 and status != 501:
        return ErrorKind.WORKER_RESET
    return ErrorKind.ENGINE_ERROR


def error_from_payload(payload: Mapping[str, Any], default_status: int | None) -> EngineError:
    """An engine's JSON error body as an :class:`EngineError`.

    Understands the shapes the engines use: ``{"error": {"code", "message"}}`` (llama.cpp,
    newer vLLM), ``{"message", "code"}`` (older vLLM), ``{"error": "text", "error_type"}``
    (TGI, Triton) and ``{"detail": ...}`` (FastAPI). A numeric ``code`` wins over the
    HTTP status, since llama.cpp reports the real status there inside a stream.
    """
    error = payload.get("error", payload)
    status = default_status
    if isinstance(error, Mapping):
        code = error.get("code")
        if isinstance(code, int) and not isinstance(code, bool):
            status = code
        message = error.get("message") or error.get("detail")
        text = str(message) if message else "the engine reported an error"
    else:
        text = str(error)
    kind = ErrorKind.ENGINE_ERROR if status is None else kind_for_status(status)
    return EngineError(kind, text, status)


def error_from_response(status: int, text: str) -> EngineError:
    """A non-2xx answer as an :class:`EngineError`; JSON bodies give their message."""
    with contextlib.suppress(ValueError):
        payload = json.loads(text)
        if isinstance(payload, Mapping):
            return error_from_payload(payload, status)
    return EngineError(kind_for_status(status), text.strip()[:500] or f"HTTP {status}", status)


def cannot_connect(what: str, exc: BaseException) -> EngineError:
    """No connection to the engine within the connect timeout."""
    return EngineError(
        ErrorKind.WORKER_RESET, f"{what}: cannot connect to the engine", detail=repr(exc)
    )


def ended_early(what: str) -> EngineError:
    """A stream's body ended before its final chunk."""
    return EngineError(
        ErrorKind.WORKER_RESET, f"{what}: the engine closed the stream before its end"
    )


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn transport and framing failures into :class:`EngineError`."""
    try:
        yield
    except EngineError:
        raise
    except aiohttp.ConnectionTimeoutError as exc:
        raise cannot_connect(what, exc) from exc
    except TimeoutError as exc:
        raise EngineError(
            ErrorKind.DECODE_TIMEOUT, f"{what}: the engine stopped answering"
        ) from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as exc:
        raise EngineError(
            ErrorKind.WORKER_RESET,
            f"{what}: the connection to the engine was lost",
            detail=repr(exc),
        ) from exc
    except (aiohttp.ClientError, SseError, UnicodeDecodeError, HttpParserError) as exc:
        raise EngineError(
            ErrorKind.ENGINE_ERROR, f"{what}: the engine's answer is malformed", detail=repr(exc)
        ) from exc


class EngineHttp:
    """A pooled HTTP session to one engine at ``base_url``.

    The session is created on first use, inside the running event loop. ``keepalive_s``
    should be below the engine's own idle-connection timeout, so a request never goes out
    on a socket the server is closing.
    """

    def __init__(
        self, base_url: str, timeouts: HttpTimeouts = DEFAULT_TIMEOUTS, keepalive_s: float = 4.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The shared session (created on first use)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(keepalive_timeout=self._keepalive_s),
                timeout=aiohttp.ClientTimeout(
                    total=self.timeouts.request_s, connect=self.timeouts.connect_s
                ),
                raise_for_status=False,
            )
        return self._session

    async def request(self, method: str, path: str, body: Any = None) -> aiohttp.ClientResponse:
        """Send a control call and read its body; non-2xx answers raise EngineError."""
        response = await self.session().request(method, self.base_url + path, json=body)
        async with response:
            await response.read()
            if not 200 <= response.status < 300:
                raise error_from_response(response.status, await response.text(errors="replace"))
        return response

    async def json(self, method: str, path: str, body: Any = None) -> Any:
        """A control call's JSON answer; every failure is an EngineError."""
        with translated(f"{method} {path}"):
            response = await self.request(method, path, body)
            try:
                return await response.json(content_type=None)
            except ValueError:
                text = (await response.text(errors="replace"))[:200]
                raise EngineError(
                    ErrorKind.ENGINE_ERROR, f"{path} answered non-JSON", detail=repr(text[:200])
                ) from None

    async def text(self, path: str) -> str:
        """A GET's body as text (metrics); every failure is an EngineError."""
        with translated(f"GET {path}"):
            response = await self.request("GET", path)
            return await response.text()

    async def health(self, path: str) -> EngineHealth:
        """Probe ``path``: 2xx is ready, another answer is live but not ready; never raises."""
        timeout = aiohttp.ClientTimeout(total=self.timeouts.health_s)
        try:
            async with self.session().get(self.base_url + path, timeout=timeout) as response:
                text = await response.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            return EngineHealth(live=False, ready=False, detail=f"unreachable: {exc!r}")
        if 200 <= response.status < 300:
            return EngineHealth(live=True, ready=True, detail="ok")
        error = error_from_response(response.status, text)
        return EngineHealth(
            live=True, ready=False, detail=f"HTTP {response.status}: {error.message}"
        )

    async def open_stream(
        self, path: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """POST ``body`` and return the open streaming response (status 200 checked).

        The caller reads it and must ``close()`` it; closing is also how a stream is
        cancelled upstream. Raises EngineError.
        """
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.timeouts.connect_s, sock_read=self.timeouts.stream_read_s
        )
        with translated(f"POST {path} (stream)"):
            response = await self.session().post(
                self.base_url + path, json=body, headers=headers, timeout=timeout
            )
            if response.status != 200:
                text = await response.text(errors="replace")
                response.close()
                raise error_from_response(response.status, text)
        return response

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def sse_stream(
    open_response: Callable[[], Awaitable[aiohttp.ClientResponse]],
    parse: Callable[[SseEvent], Iterable[StreamChunk]],
    what: str,
    on_close: Callable[[], None] | None = None,
) -> AsyncGenerator[StreamChunk, None]:
    """The chunks ``parse`` makes of each event of a streamed response, up to and
    including the final chunk (ORCH-3017 cancel, ORCH-3018 failures).

    ``open_response`` sends the request (when the generator is first advanced). The
    response is closed when the final chunk has been yielded, on any failure, and when the
    consumer closes the generator early, which is how a generation is cancelled upstream;
    ``on_close`` runs then. A response that ends before its final chunk is WORKER_RESET;
    framing faults are INTERNAL.
    """
    response = await open_response()
    try:
        with translated(what):
            decoder = SseDecoder()
            while True:
                data = await response.content.readany()
                for event in decoder.feed(data) if data else decoder.finish():
                    for chunk in parse(event):
                        yield chunk
                        if isinstance(chunk, FinalChunk):
                            return
                decoder.check()
                if not data:
                    raise ended_early(what)
    finally:
        response.close()
        if on_close is not None:
            on_close()


class HttpAdapter:
    """What every engine adapter has in common: its settings, its HTTP session, health at
    `HEALTH_PATH`, metrics text at `METRICS_PATH`, the digest of its local model, close.

    Subclasses name their `engine` and implement the engine's own calls (properties,
    slots, tokens, templates, the stream). `kv_cache_usage` is None unless an engine's
    metrics report it. `features` is empty unless a subclass honours more than text
    generation.
    """

    engine: Engine
    features: frozenset[Feature] = frozenset()
    HEALTH_PATH = "/health"
    METRICS_PATH = "/metrics"

    def __init__(
        self,
        settings: AdapterSettings,
        timeouts: HttpTimeouts = DEFAULT_TIMEOUTS,
        *,
        keepalive_s: float = 4.0,
    ) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self._http = EngineHttp(self.base_url, timeouts, keepalive_s=keepalive_s)
        self._digest: str | None = None
        self._digest_lock = asyncio.Lock()

    async def health(self) -> EngineHealth:
        return await self._http.health(self.HEALTH_PATH)

    async def metrics_text(self) -> str:
        return await self._http.text(self.METRICS_PATH)

    async def kv_cache_usage(self) -> float | None:
        """None: this engine's metrics report no KV-cache usage."""
        return None

    async def embed(self, inputs: Sequence[str]) -> Embeddings:
        """Embeddings over the engine's OpenAI-style route, for engines that list
        `Feature.EMBEDDINGS`; the others refuse."""
        if Feature.EMBEDDINGS not in self.features:
            raise EngineError(
                ErrorKind.INVALID_PARAMS, f"engine {self.engine.value} does not serve embeddings"
            )
        body = embeddings.request_body(inputs, self.settings.model)
        return embeddings.parse(await self._http.json("POST", embeddings.PATH, body), len(inputs))

    async def model_digest(self, served_path: str | None = None) -> str | None:
        """``sha256:<hex>`` of the local model (`settings.model_path`), computed once in a
        worker thread; None without a local path. ``served_path``, the model the engine
        says it loaded, must be that same file when it is on this machine."""
        local = self.settings.model_path
        if local is None:
            return None
        if (
            served_path is not None
            and os.path.exists(served_path)
            and not os.path.samefile(served_path, local)
        ):
            raise EngineError(
                ErrorKind.ENGINE_ERROR, f"the engine serves {served_path}, not {local}"
            )
        async with self._digest_lock:
            if self._digest is None:
                try:
                    self._digest = await asyncio.to_thread(sha256_path, local)
                except OSError as exc:
                    raise EngineError(
                        ErrorKind.ENGINE_ERROR,
                        "cannot digest the engine's model file",
                        detail=f"{local}: {exc!r}",
                    ) from None
        return self._digest

    async def relay(self, req: CompletionRequest, take: Callable[[StreamChunk], bool]) -> None:
        """Hand `take` the chunks of `stream` up to the final one, or until it returns
        False (then the stream is closed, which cancels it upstream)."""
        chunks = self.stream(req)
        try:
            async for chunk in chunks:
                if not take(chunk):
                    return
        finally:
            await chunks.aclose()

    def stream(self, req: CompletionRequest) -> AsyncGenerator[StreamChunk, None]:
        """Token chunks, then exactly one final chunk (each engine's own)."""
        raise NotImplementedError

    async def close(self) -> None:
        await self._http.close()


async def optional(call: Awaitable[T]) -> T | None:
    """The result of an engine call, or None when the engine has no such route."""
    try:
        return await call
    except EngineError as exc:
        if exc.status in NO_ROUTE:
            return None
        raise


def frame_object(event: SseEvent, what: str = "stream frame") -> dict[str, Any]:
    """One stream event's JSON object (pydantic's parser: ~3x json.loads, once per token);
    INTERNAL when it is not one."""
    try:
        payload = from_json(event.data)
    except ValueError:
        raise EngineError(
            ErrorKind.ENGINE_ERROR, f"unparseable {what}", detail=repr(event.data[:200])
        ) from None
    if not isinstance(payload, dict):
        raise EngineError(
            ErrorKind.ENGINE_ERROR, f"{what} is not an object", detail=repr(event.data[:200])
        )
    return payload


def count(payload: Mapping[str, Any], key: str, where: str) -> int:
    """A non-negative integer field; INTERNAL naming ``where`` when it is not one."""
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EngineError(
            ErrorKind.ENGINE_ERROR, f"{where} has no valid {key!r}", detail=repr(value)[:200]
        )
    return value


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample named ``name`` in Prometheus ``text``."""
    try:
        return [
            (dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        ]
    except ValueError as exc:
        raise EngineError(
            ErrorKind.ENGINE_ERROR, "/metrics is not Prometheus text", detail=repr(exc)
        ) from None
