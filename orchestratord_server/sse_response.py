"""The HTTP response of a task stream: its transcript as Server-Sent Events (ORCH-2002).

One task per open stream, the request's own: no second task to watch for a disconnect
(Starlette's `StreamingResponse` runs one per response, in an anyio task group) and no
generator layers between the transcript and the socket. Behind the daemon's own HTTP
protocol (`http_protocol.stream_connection`), the response learns of a disconnect from the
connection and, while its client keeps up, parks on the transcript (`Transcript.park`),
which writes each loop turn's frames to the socket in one chunk without waking this
task. Under another server (a test client) it waits for each frame and watches `receive`
for the disconnect in a helper task, as Starlette does.

While the task is queued, a stream asked for queue updates can send frames of its own:
``first`` right after the response starts, then whatever ``idle`` returns each
``idle_s`` without a transcript frame, until the first transcript frame goes out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from orchestratord_server.http_protocol import StreamConnection, stream_connection
from orchestratord_server.transcripts import Transcript

#: The media type, with the charset Starlette adds to a text type.
_CONTENT_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")


def raw_headers(headers: Mapping[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """``headers`` and the content type as an event stream's response sends them (in
    Starlette's order and encoding); build them once, reuse them for every response."""
    fields = tuple(
        (name.lower().encode("latin-1"), v.encode("latin-1")) for name, v in headers.items()
    )
    return (*fields, _CONTENT_TYPE)


class TranscriptResponse(Response):
    """Stream ``transcript`` from frame ``start`` until its terminal frame or until the
    client goes away; ``on_end`` runs as the stream closes, either way. ``headers``: from
    `raw_headers`."""

    __slots__ = (
        "_first",
        "_idle",
        "_idle_s",
        "_lost",
        "_on_end",
        "_start",
        "_transcript",
        "_waiter",
        "background",
        "raw_headers",
        "status_code",
    )
    media_type = "text/event-stream"

    def __init__(
        self,
        transcript: Transcript,
        start: int,
        headers: tuple[tuple[bytes, bytes], ...],
        *,
        on_end: Callable[[], None],
        first: bytes | None = None,
        idle: Callable[[], bytes | None] | None = None,
        idle_s: float | None = None,
    ) -> None:
        # Response.__init__ would render a body and headers this response does not keep.
        self.status_code = 200
        self.background = None
        self.raw_headers = list(headers)
        self._transcript = transcript
        self._start = start
        self._on_end = on_end
        self._first = first
        self._idle = idle
        self._idle_s = idle_s
        self._lost = False
        self._waiter: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        connection = stream_connection()
        listener = None
        if connection is None:
            listener = asyncio.ensure_future(self._listen(receive))
        else:
            connection.on_lost(self._disconnected)
        transcript = self._transcript
        transcript.subscribers += 1
        try:
            await self._stream(send, connection if connection and connection.direct else None)
        finally:
            transcript.subscribers -= 1
            if listener is not None:
                listener.cancel()
            elif connection is not None:
                connection.on_lost(None)
            self._on_end()
        if not self._lost:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send, connection: StreamConnection | None) -> None:
        transcript = self._transcript
        frames = transcript.frames
        sent = self._start
        idle_s = None
        if self._first is not None:
            await send({"type": "http.response.body", "body": self._first, "more_body": True})
            idle_s = self._idle_s
        waiter = None
        while not self._lost:
            end = len(frames)
            if end > sent:
                body = frames[sent] if end - sent == 1 else b"".join(frames[sent:end])
                await send({"type": "http.response.body", "body": body, "more_body": True})
                sent = end
                idle_s = None
                continue
            if transcript.closed:
                return
            if connection is not None and idle_s is None:
                parked = transcript.park(sent, connection.write)
                self._waiter = parked.woken
                try:
                    await parked.woken
                finally:
                    transcript.unpark(parked)
                sent = parked.sent
                continue
            if waiter is None or waiter.done():
                waiter = self._waiter = transcript.next_frame()
            if idle_s is None:
                await waiter
                continue
            try:
                await asyncio.wait_for(asyncio.shield(waiter), idle_s)
            except TimeoutError:
                update = self._idle() if self._idle is not None else None
                if update is not None and not self._lost:
                    await send({"type": "http.response.body", "body": update, "more_body": True})

    def _disconnected(self) -> None:
        self._lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _listen(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._disconnected()
