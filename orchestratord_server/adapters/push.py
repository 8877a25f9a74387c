"""A streamed engine answer relayed from the socket's callback (issue 18).

`push_stream` sends one POST on its own connection (``Connection: close``) and reads the
SSE answer with an asyncio protocol: each ``data_received`` parses the HTTP framing
(httptools: status, chunked or length- or close-delimited body), decodes the events,
parses them into chunks and hands each to ``take``, all in that one callback. There is
no reader task to wake per read, no stream buffer, no generator between the engine and
the relay, and one silence watchdog per stream, re-armed only when it fires.

The semantics are those of `http.sse_stream`, with its error mapping (`translated`,
`error_from_response`): a refused or dropped connection, or a body that ends before the
final chunk, is WORKER_RESET; a non-200 answer is the engine's error; silence longer
than ``stream_read_s`` is DECODE_TIMEOUT; malformed framing or frames are ENGINE_ERROR.
The relay ends after the final chunk or when ``take`` returns False; cancelling the
awaiting task closes the connection, which is how a generation is cancelled upstream
(ORCH-3017). `pulled` offers the same stream as an async generator.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httptools

from orchestratord_server.adapters.base import FinalChunk, StreamChunk
from orchestratord_server.adapters.http import (
    EngineHttp,
    cannot_connect,
    ended_early,
    error_from_response,
    translated,
)
from orchestratord_server.adapters.sse import SseDecoder, SseEvent

#: Takes one chunk; False: relay no more (the connection is closed).
Take = Callable[[StreamChunk], bool]
Parse = Callable[[SseEvent], Iterable[StreamChunk]]


class StreamProtocol(asyncio.Protocol):
    """One streamed answer: request out, events relayed as they arrive."""

    def __init__(
        self, request: bytes, parse: Parse, take: Take, what: str, silence_s: float
    ) -> None:
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self._request, self._parse, self._take, self._what = request, parse, take, what
        self._silence_s = silence_s
        self._now = loop.time
        self._last = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._decoder = SseDecoder()
        self._status = 0
        self._error_body: list[bytes] = []
        self._transport: asyncio.Transport | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._request)
        self._last = self._now()
        self._watchdog = asyncio.get_running_loop().call_at(
            self._last + self._silence_s, self._watch
        )

    def data_received(self, data: bytes) -> None:
        self._last = self._now()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:  # the callbacks below never raise
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self._end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._fail(exc)
        else:
            self._end()
        self.close()

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self.done.done():
            return
        if self._status != 200:
            self._error_body.append(body)
            return
        try:
            self._relay(self._decoder.feed(body))
            self._decoder.check()
        except Exception as exc:  # handed to the awaiting task
            self._fail(exc)

    def on_message_complete(self) -> None:
        self._end()

    # the stream

    def _relay(self, events: Iterable[SseEvent]) -> None:
        parse, take = self._parse, self._take
        for event in events:
            for chunk in parse(event):
                if self.done.done():
                    return
                if not take(chunk) or isinstance(chunk, FinalChunk):
                    self._settle()
                    return

    def _end(self) -> None:
        """The body (or the connection) ended."""
        if self.done.done():
            return
        try:
            if self._status == 0:
                raise ConnectionError(f"{self._what}: the engine closed before answering")
            if self._status != 200:
                text = b"".join(self._error_body).decode("utf-8", errors="replace")
                raise error_from_response(self._status, text)
            self._relay(self._decoder.finish())
            if not self.done.done():
                raise ended_early(self._what)
        except Exception as exc:  # handed to the awaiting task
            self._fail(exc)

    def _watch(self) -> None:
        if self.done.done():
            return
        due = self._last + self._silence_s
        if self._now() >= due:
            self._fail(TimeoutError(f"no data for {self._silence_s} s"))
        else:
            self._watchdog = asyncio.get_running_loop().call_at(due, self._watch)

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
        self.close()

    def _settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        self.close()

    def close(self) -> None:
        """Close the connection (cancelling the generation upstream) and the watchdog."""
        if not self.done.done():
            self.done.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._transport is not None:
            self._transport.close()


def _request(http: EngineHttp, path: str, body: Any) -> bytes:
    payload = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {urlsplit(http.base_url).netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Accept: text/event-stream",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


async def push_stream(
    http: EngineHttp,
    path: str,
    body: Any,
    parse: Parse,
    take: Take,
    what: str,
) -> None:
    """POST ``body`` to ``path`` and hand ``take`` the chunks ``parse`` makes of each
    event of the answer, up to and including the final chunk (or until ``take`` returns
    False). Raises EngineError; cancelling closes the connection."""
    url = urlsplit(http.base_url)
    secure = url.scheme == "https"
    port = url.port or (443 if secure else 80)
    timeouts = http.timeouts
    protocol = StreamProtocol(_request(http, path, body), parse, take, what, timeouts.stream_read_s)
    loop = asyncio.get_running_loop()
    try:
        with translated(what):
            try:
                async with asyncio.timeout(timeouts.connect_s):
                    await loop.create_connection(
                        lambda: protocol, url.hostname or "", port, ssl=True if secure else None
                    )
            except TimeoutError as exc:
                raise cannot_connect(what, exc) from exc
            except OSError as exc:
                raise ConnectionError(f"{what}: {exc}") from exc
            await protocol.done
    finally:
        protocol.close()


async def pulled(relay: Callable[[Take], Awaitable[None]]) -> AsyncGenerator[StreamChunk, None]:
    """The chunks ``relay`` hands over, as an async generator for callers that pull them;
    closing the generator early cancels the relay (and so the upstream request)."""
    chunks: asyncio.Queue[StreamChunk | None] = asyncio.Queue()

    def take(chunk: StreamChunk) -> bool:
        chunks.put_nowait(chunk)
        return True

    run = asyncio.ensure_future(relay(take))
    run.add_done_callback(lambda _: chunks.put_nowait(None))
    try:
        while (chunk := await chunks.get()) is not None:
            yield chunk
            if isinstance(chunk, FinalChunk):
                return
        await run
    finally:
        if not run.done():
            run.cancel()
            await asyncio.wait([run])
        if not run.cancelled():
            run.exception()
