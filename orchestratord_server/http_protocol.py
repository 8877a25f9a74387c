"""Connection hygiene: what one HTTP connection may cost the daemon.

uvicorn's httptools protocol leaves a connection open for as long as its client likes (one
that sends nothing, trickles its headers or never finishes its body holds a descriptor
forever), buffers headers of any size and number, and frames a response without a
length as chunked even for an HTTP/1.0 client, which cannot read that. `protocol_class`
returns uvicorn's `HttpToolsProtocol` with these rules, from `server.*` in the config:

- **Header deadline.** A request's line and headers must be in within `header_timeout_ms`
  of the connection opening, or of the previous response ending on a kept-alive
  connection. Bytes arriving do not extend it, so a trickle (slowloris) is cut on time.
- **Body deadline.** Each piece of a request body must follow the previous one (or the
  headers) within `body_timeout_ms`. While the daemon itself has paused reading (the
  application has not taken the body yet), the wait does not count.
- **Keep-alive.** uvicorn's own idle timer, set to `keepalive_timeout_ms` (at most the
  header deadline, so an idle connection is closed silently before it could get a 408).
- **Head limits.** A head (request line and header lines, counted as written with one
  space after each colon) over `max_header_bytes`, or with more than `max_headers` fields,
  is refused. An unfinished head is counted as its bytes arrive, so it is never buffered
  past the limit.
- **Connection cap.** A connection beyond `max_connections` is refused as it opens, before
  anything of it is read. (uvicorn's `limit_concurrency` does not do this: it answers 503
  only once a request's headers are in, and holds idle connections meanwhile.)
- **HTTP/1.0.** A response without a Content-Length to an HTTP/1.0 request (a stream) is
  sent close-delimited: raw body bytes, `connection: close`, closed at its end.

**Streams.** A streaming response may write its body chunks straight to the connection
and learn at once that the client went away, without a task waiting on `receive`
(`stream_connection`).

A refusal is the daemon's JSON ErrorEnvelope (408 REQUEST_TIMEOUT, 431 HEADERS_TOO_LARGE,
503 SERVER_BUSY; the retriable ones with `Retry-After`, `X-Backoff-Ms` and `retry_after_ms`)
whatever the route, since it can come before the route is known. It is logged once
(`http.refused`, with the peer and the reason) and ends in a lingering close: the daemon
stops writing, then reads and drops what the client still sends until the client closes or
`LINGER_S` passes, so the client reads the refusal rather than a connection reset. A
refused connection no longer counts toward the cap.

This depends on uvicorn internals (the parser callbacks, `_start_asgi_task`, the request
cycle's framing fields, its flow control), so pyproject.toml pins uvicorn to the 0.55 series.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from uvicorn._types import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from orchestrator_core import RETRIABLE
from orchestratord_server.config import ServerConfig
from orchestratord_server.errors import JSON, envelope_bytes
from orchestratord_server.generated.models import ErrorKind
from orchestratord_server.logs import log_event

log = logging.getLogger("orchestratord.http")

#: Longest a refused connection is read (and what it sends dropped) before it is closed.
LINGER_S = 1.0
#: The wait a retriable refusal (408, 503) asks for, in whole seconds (ORCH-2007).
RETRY_BACKOFF_MS = 1_000
_RETRY_FIELDS = (
    (b"retry-after", str(RETRY_BACKOFF_MS // 1000).encode()),
    (b"x-backoff-ms", str(RETRY_BACKOFF_MS).encode()),
)
#: Descriptors kept for everything but client connections: the listener, engine
#: connections, launched engines' pipes, log and model files, refusals lingering.
RESERVED_FDS = 256

_Wait = Literal["header", "body"]
#: The connection whose request the running ASGI task serves (set for the task only).
_CONNECTION: ContextVar[HygienicHttpProtocol | None] = ContextVar(
    "orchestratord_connection", default=None
)


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits one connection is held to, in the units the event loop takes."""

    header_timeout_s: float
    body_timeout_s: float
    keepalive_timeout_s: float
    max_connections: int
    max_header_bytes: int
    max_headers: int


def fit_connection_cap(wanted: int) -> int:
    """The connection cap the open-file limit allows, raising the soft RLIMIT_NOFILE toward
    the hard limit first.

    Each connection takes a descriptor, and `RESERVED_FDS` are kept for the rest. When even
    the hard limit leaves no room for `wanted` connections, the cap is lowered to what
    fits (keeping half the limit at most for the rest) and a warning says so: a daemon
    with a smaller cap is still protected, where one over its descriptor limit is not.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FDS
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised >= needed:
        return wanted
    fitted = max(raised // 2, raised - RESERVED_FDS)
    log_event(
        log,
        logging.WARNING,
        "server.max_connections_lowered",
        "server.max_connections lowered to fit the open-file limit",
        configured=wanted,
        effective=fitted,
        nofile_limit=raised,
    )
    return fitted


def protocol_class(server: ServerConfig, max_connections: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol held to `server`'s limits (pass it as `http=`)."""
    limits = ConnectionLimits(
        header_timeout_s=server.header_timeout_ms / 1000,
        body_timeout_s=server.body_timeout_ms / 1000,
        keepalive_timeout_s=server.keepalive_timeout_ms / 1000,
        max_connections=max_connections,
        max_header_bytes=server.max_header_bytes,
        max_headers=server.max_headers,
    )
    return type("OrchestratordHttpProtocol", (HygienicHttpProtocol,), {"limits": limits})


class HygienicHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with deadlines, head limits, a connection cap and HTTP/1.0
    streams; `protocol_class` sets `limits`."""

    limits: ClassVar[ConnectionLimits]
    #: Called once when the connection is lost (`StreamConnection.on_lost`).
    on_lost: Callable[[], None] | None = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's keep-alive timer; call_later takes fractions of a second.
        self.timeout_keep_alive = self.limits.keepalive_timeout_s  # type: ignore[assignment]
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: _Wait | None = None
        self._head_pending = True
        self._head_bytes = 0
        self._refused = False

    # -- connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.limits.max_connections
        if len(self.connections) > cap:
            self._refuse(
                503,
                ErrorKind.SERVER_BUSY,
                f"the daemon holds as many connections as it accepts ({cap}); retry later",
                reason="max_connections",
            )
            return
        self._arm("header")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head_pending:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if self._head_pending and self._head_bytes > self.limits.max_header_bytes:
            self._refuse_head(f"more than {self.limits.max_header_bytes} bytes")

    # -- parser callbacks

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._head_pending = False
        self._head_bytes = 0
        # "METHOD url HTTP/1.x\r\n", "name: value\r\n" per field, then "\r\n".
        size = len(self.parser.get_method()) + len(self.url) + 14
        size += sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse_head(f"more than {self.limits.max_header_bytes} bytes")
            return
        if len(self.headers) > self.limits.max_headers:
            self._refuse_head(f"more than {self.limits.max_headers} fields")
            return
        self._arm("body")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        if self._waiting == "body":
            self._arm("body")
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._head_pending = True
        if self._waiting == "body":
            self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # idle, waiting for the next request
            self._arm("header")

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        if cycle.scope["http_version"] == "1.0":
            app = _close_delimited(app, cycle)
        token = _CONNECTION.set(self)  # the task copies the context as it is created
        try:
            super()._start_asgi_task(cycle, app)
        finally:
            _CONNECTION.reset(token)

    # -- deadlines

    def _arm(self, wait: _Wait) -> None:
        self._disarm()
        delay = self.limits.header_timeout_s if wait == "header" else self.limits.body_timeout_s
        self._waiting = wait
        self._timer = self.loop.call_later(delay, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._waiting = None

    def _expire(self) -> None:
        wait = self._waiting
        self._timer = None
        self._waiting = None
        if wait == "body" and self.flow.read_paused:
            self._arm("body")
            return
        if wait == "header":
            what, limit_s = "headers", self.limits.header_timeout_s
        else:
            what, limit_s = "body", self.limits.body_timeout_s
        self._refuse(
            408,
            ErrorKind.REQUEST_TIMEOUT,
            f"the request's {what} did not arrive within {round(limit_s * 1000)} ms",
            reason=f"{wait}_timeout",
        )

    # -- refusals

    def _refuse_head(self, excess: str) -> None:
        self._refuse(
            431,
            ErrorKind.HEADERS_TOO_LARGE,
            f"the request's headers exceed the limit ({excess})",
            reason="headers_too_large",
        )

    def _refuse(self, status: int, code: ErrorKind, message: str, *, reason: str) -> None:
        """Answer `status` with an envelope (with the retry hints of ORCH-2007 when `code` is
        retriable), stop reading requests, and close lingering."""
        self._refused = True
        self._disarm()
        self.connections.discard(self)
        peer = f"{self.client[0]}:{self.client[1]}" if self.client else None
        log_event(
            log,
            logging.WARNING,
            "http.refused",
            f"connection refused: {message}",
            peer=peer,
            reason=reason,
            status=status,
        )
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            # A response is on the wire already; nothing can follow it but the close.
            self.transport.close()
            return
        retriable = code in RETRIABLE
        extra = {"retry_after_ms": RETRY_BACKOFF_MS} if retriable else None
        body = envelope_bytes(code, message, extra=extra)
        fields = [
            *self.server_state.default_headers,
            (b"content-type", JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *(_RETRY_FIELDS if retriable else ()),
        ]
        head = b"".join(name + b": " + value + b"\r\n" for name, value in fields)
        self.transport.write(STATUS_LINE[status] + head + b"\r\n" + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)


def _close_delimited(app: ASGI3Application, cycle: RequestResponseCycle) -> ASGI3Application:
    """`app` with its unframed responses sent close-delimited instead of chunked.

    uvicorn chunks any response without a Content-Length. Clearing the cycle's chunked flag
    before the start, and letting each body message be exactly as long as it says, makes
    it write the bytes raw; an HTTP/1.0 cycle is never kept alive, so uvicorn adds
    `connection: close` and closes the connection after the last message.
    """

    async def close_delimited(
        scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        unframed = False

        async def send_raw(message: ASGISendEvent) -> None:
            nonlocal unframed
            if message["type"] == "http.response.start":
                names = (name.lower() for name, _ in message.get("headers", ()))
                unframed = b"content-length" not in names
                if unframed:
                    cycle.chunked_encoding = False
            elif message["type"] == "http.response.body" and unframed:
                cycle.expected_content_length = len(message.get("body", b""))
            await send(message)

        await app(scope, receive, send_raw)

    return close_delimited


class StreamConnection:
    """The connection of the request the running task serves, for a streaming response:
    `on_lost` tells it at once that the client went away (no task waiting on `receive`),
    and `write` puts a body chunk on the wire directly: the chunked framing uvicorn's
    `send` writes, without the coroutine chain of the middleware `send` wrappers. Direct
    writes are only for chunks between the response's start and its final message, which
    go through `send` as usual (middleware see a response begin and end), and never while
    the response is itself in `send`.
    """

    __slots__ = ("_cycle", "_protocol", "direct")

    def __init__(self, protocol: HygienicHttpProtocol) -> None:
        self._protocol = protocol
        cycle = self._cycle = protocol.cycle
        #: Whether `write` can write at all: the response has started, chunked (not a
        #: HEAD request, an HTTP/1.0 stream, a response with a length, or while another
        #: request on the connection is pipelined behind it).
        self.direct = (
            cycle is not None
            and cycle.response_started
            and not cycle.response_complete
            and cycle.chunked_encoding is True
            and cycle.scope["method"] != "HEAD"
        )

    def write(self, data: bytes) -> bool:
        """Write one body chunk now; False (nothing written) when the client is gone or
        applies backpressure: then `send` it, which waits for the client to drain."""
        cycle = self._cycle
        if cycle.disconnected or cycle.response_complete or cycle.flow.write_paused:
            return False
        cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        return True

    def on_lost(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` once when the connection is lost (None: no longer)."""
        self._protocol.on_lost = callback


def stream_connection() -> StreamConnection | None:
    """The running task's connection, once its response has started; None unless the
    request came through `HygienicHttpProtocol` (then wait on `receive` to learn of a
    disconnect)."""
    protocol = _CONNECTION.get()
    return None if protocol is None else StreamConnection(protocol)
