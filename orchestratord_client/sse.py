"""Server-Sent Events of a task stream: decode lines into typed events, resume without repeats.

`SseDecoder` follows the SSE format (`event:` and `data:` fields, multi-line data joined
by newlines, comments and unknown fields ignored, a blank line dispatches). `typed_event`
validates the data with the generated model of the event's name, from the streamTask
operation's `x-sse-events`. `Resume` remembers what a reader already received, so a
reconnected stream (which the daemon always replays from its first event) yields only
what is new: token events with `i` below the next expected index are skipped, and so are
the `started` and `metrics` events already seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from orchestratord_server.generated.models import (
    EndEvent,
    ErrorEvent,
    MetricsEvent,
    StartedEvent,
    TokenEvent,
)
from orchestratord_server.generated.operations import OPERATIONS

#: One event of a task stream, as the generated model of its name.
StreamEvent = StartedEvent | TokenEvent | MetricsEvent | EndEvent | ErrorEvent
#: The terminal events: exactly one ends every stream, and nothing follows it.
TERMINAL = (EndEvent, ErrorEvent)

_EVENT_MODELS = OPERATIONS["streamTask"].sse_events


@dataclass(frozen=True)
class RawEvent:
    """One dispatched SSE event: its name (`message` when none was given) and its data."""

    event: str
    data: str


class SseDecoder:
    """Feed it lines (without their line ending); it returns each event a blank line ends."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> RawEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> RawEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return RawEvent(event, "\n".join(data))


def typed_event(raw: RawEvent) -> StreamEvent | None:
    """The event as its generated model; None for an event name the contract does not know."""
    model = _EVENT_MODELS.get(raw.event)
    if model is None:
        return None
    return cast(StreamEvent, model.model_validate_json(raw.data))


class Resume:
    """What a reader of one task's stream has received, across reconnections.

    `next_index` is the index of the next token the reader expects. Call `begin()` at
    each (re)connection, then `accept(event)` for each event in order: it answers whether
    the event is new to the reader.
    """

    def __init__(self, next_index: int = 0) -> None:
        self.next_index = next_index
        self.finished = False
        self._started = False
        self._metrics_seen = 0
        self._metrics_now = 0

    def begin(self) -> None:
        self._metrics_now = 0

    def accept(self, event: StreamEvent) -> bool:
        if isinstance(event, TokenEvent):
            if event.i < self.next_index:
                return False
            self.next_index = event.i + 1
            return True
        if isinstance(event, StartedEvent):
            new = not self._started
            self._started = True
            return new
        if isinstance(event, MetricsEvent):
            self._metrics_now += 1
            if self._metrics_now <= self._metrics_seen:
                return False
            self._metrics_seen = self._metrics_now
            return True
        self.finished = True
        return True


class EventReader:
    """Lines of one task's stream, across reconnections, in; new typed events out."""

    def __init__(self, next_index: int = 0) -> None:
        self.resume = Resume(next_index)
        self._decoder = SseDecoder()

    @property
    def finished(self) -> bool:
        """The terminal event was read; nothing follows it."""
        return self.resume.finished

    def reconnected(self) -> None:
        """A new connection begins: the daemon replays the stream from its first event."""
        self._decoder = SseDecoder()
        self.resume.begin()

    def line(self, line: str) -> StreamEvent | None:
        """The event this line completes, when it is one the reader has not had yet."""
        raw = self._decoder.feed(line)
        if raw is None:
            return None
        event = typed_event(raw)
        if event is None or not self.resume.accept(event):
            return None
        return event


def event_name(event: StreamEvent) -> str:
    """The SSE event name of a typed event (`token`, `end`, ...)."""
    return _EVENT_NAMES[type(event)]


_EVENT_NAMES = {model: name for name, model in _EVENT_MODELS.items()}
