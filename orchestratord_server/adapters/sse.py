"""Incremental Server-Sent Events decoder for engine streams (ORCH-3054).

Engines stream completions as SSE over a chunked HTTP body, and the transport cuts that
body wherever it likes: in the middle of a line, between ``\\r`` and ``\\n``, inside a
multi-byte character. :class:`SseDecoder` takes the bytes as they arrive and returns the
complete events, the same events whatever the chunk boundaries are.

It follows the WHATWG event-stream rules that matter here: lines end with CRLF, LF or CR;
a blank line ends an event; lines starting with ``:`` are comments (keep-alive pings);
``data`` lines of one event are joined with ``\\n``; ``event`` names the event; a space
after the colon is dropped; unknown fields are ignored. One extension: older llama.cpp
servers report a failure mid-stream as an ``error: {json}`` line, which becomes an event
named ``error``. An event with no data is not dispatched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")
DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024


class SseError(ValueError):
    """The byte stream is not a well-formed event stream."""


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str


class SseDecoder:
    """Feed it bytes with :meth:`feed`; it returns every event completed by them."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._buffer = b""
        self._max_line_bytes = max_line_bytes
        self._event = ""
        self._data: list[str] = []
        self._error: SseError | None = None

    @property
    def at_boundary(self) -> bool:
        """True when nothing is pending: no partial line, no undispatched field."""
        return not self._buffer and not self._data and not self._event

    def check(self) -> None:
        """Raise the error a malformed line left behind, once its earlier events are used."""
        if self._error is not None:
            raise self._error

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events `chunk` completes.

        A malformed line does not cost the events before it in the same chunk: those are
        returned, and the error is raised by the next `feed` or `finish`.
        """
        self.check()
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" not in buffer:
            return self._feed_lf(buffer)
        events: list[SseEvent] = []
        start = 0
        while (match := _LINE_END.search(buffer, start)) is not None:
            if match.group() == b"\r" and match.end() == len(buffer):
                break  # the matching \n may start the next chunk
            try:
                event = self._line(buffer[start : match.start()])
            except SseError as exc:
                return self._fail(exc, events)
            if event is not None:
                events.append(event)
            start = match.end()
        self._buffer = buffer[start:]
        if len(self._buffer) > self._max_line_bytes:
            raise SseError(f"an event-stream line exceeds {self._max_line_bytes} bytes")
        return events

    def _feed_lf(self, buffer: bytes) -> list[SseEvent]:
        """The common case, no CR anywhere: lines end with LF (what engines send)."""
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > self._max_line_bytes:
            raise SseError(f"an event-stream line exceeds {self._max_line_bytes} bytes")
        events: list[SseEvent] = []
        for raw in lines:
            try:
                event = self._line(raw)
            except SseError as exc:
                return self._fail(exc, events)
            if event is not None:
                events.append(event)
        return events

    def _fail(self, error: SseError, events: list[SseEvent]) -> list[SseEvent]:
        """Keep `error` for the next call; hand over what was decoded before it."""
        self._error = error
        self._buffer = b""
        if not events:
            raise error
        return events

    def finish(self) -> list[SseEvent]:
        """End of stream: a trailing CR still ends its line; a partial line is dropped."""
        self.check()
        buffer, self._buffer = self._buffer, b""
        if not buffer.endswith(b"\r"):
            return []
        event = self._line(buffer[:-1])
        return [] if event is None else [event]

    def _line(self, raw: bytes) -> SseEvent | None:
        if not raw:
            return self._dispatch()
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SseError(f"an event-stream line is not UTF-8: {exc}") from None
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "error":
            self._event = "error"
            self._data.append(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(event=event or "message", data="\n".join(data))
