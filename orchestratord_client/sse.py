"""Server-Sent Events: decode lines into typed events, resume a task stream without repeats.

`SseDecoder` follows the SSE format (`id:`, `event:` and `data:` fields, multi-line data
joined by newlines, the last event id kept until a frame sends another, comments and
unknown fields ignored, a blank line dispatches). `typed_event` validates the data with
the generated model of the event's name, from the streamTask operation's `x-sse-events`;
`control_event` does the same for the control-plane event stream (streamControlEvents).
`Resume` remembers what a reader already received: the id of the last event, which a
reconnection sends as `Last-Event-ID` so that the daemon goes on right after it (nothing
repeats, nothing is lost), and the index of the next token, so that a stream opened anew
with `from_index` skips the tokens before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from orchestratord_client.generated.models import (
    ControlSnapshot,
    EndEvent,
    ErrorEvent,
    MetricsEvent,
    PoolHealth,
    PoolStats,
    StartedEvent,
    TaskSummary,
    TokenEvent,
)
from orchestratord_client.generated.operations import OPERATIONS

#: One event of a task stream, as the generated model of its name.
StreamEvent = StartedEvent | TokenEvent | MetricsEvent | EndEvent | ErrorEvent
#: The terminal events: exactly one ends every stream, and nothing follows it.
TERMINAL = (EndEvent, ErrorEvent)

_EVENT_MODELS = OPERATIONS["streamTask"].sse_events

#: One event of the control-plane event stream, as the generated model of its name.
ControlEvent = ControlSnapshot | PoolHealth | TaskSummary | PoolStats
_CONTROL_MODELS = OPERATIONS["streamControlEvents"].sse_events


#: The request header that resumes a stream after the event it names.
LAST_EVENT_ID = "Last-Event-ID"


@dataclass(frozen=True)
class RawEvent:
    """One dispatched SSE event: its name (`message` when none was given), its data, and
    the last event id the stream set (None while it set none)."""

    event: str
    data: str
    id: str | None = None


class SseDecoder:
    """Feed it lines (without their line ending); it returns each event a blank line ends."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

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
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> RawEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return RawEvent(event, "\n".join(data), self._id)


def typed_event(raw: RawEvent) -> StreamEvent | None:
    """The event as its generated model; None for an event name the contract does not know."""
    model = _EVENT_MODELS.get(raw.event)
    if model is None:
        return None
    return cast(StreamEvent, model.model_validate_json(raw.data))


def control_event(raw: RawEvent) -> ControlEvent | None:
    """A control-plane event as its generated model; None for a name the contract does
    not know (the stream only grows)."""
    model = _CONTROL_MODELS.get(raw.event)
    if model is None:
        return None
    return cast(ControlEvent, model.model_validate_json(raw.data))


class Resume:
    """What a reader of one task's stream has received, across reconnections.

    `last_event_id` is the id of the last event read (None before the first one): each
    reconnection sends it as `Last-Event-ID`, so the daemon sends only the events after
    it. `next_index` is the index of the next token the reader expects; `accept(event)`
    answers whether an event is new to the reader (every one but a token below it).
    """

    def __init__(self, next_index: int = 0) -> None:
        self.next_index = next_index
        self.last_event_id: str | None = None
        self.finished = False

    def accept(self, event: StreamEvent) -> bool:
        if isinstance(event, TokenEvent):
            if event.i < self.next_index:
                return False
            self.next_index = event.i + 1
        elif isinstance(event, TERMINAL):
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

    def headers(self) -> dict[str, str]:
        """The headers of the next connection: `Last-Event-ID` once an event was read."""
        last = self.resume.last_event_id
        return {} if last is None else {LAST_EVENT_ID: last}

    def reconnected(self) -> None:
        """A new connection begins: the daemon sends the events after `last_event_id`
        (all of them when none was read yet)."""
        self._decoder = SseDecoder()

    def line(self, line: str) -> StreamEvent | None:
        """The event this line completes, when it is one the reader has not had yet."""
        raw = self._decoder.feed(line)
        if raw is None:
            return None
        if raw.id is not None:
            self.resume.last_event_id = raw.id or None
        event = typed_event(raw)
        if event is None or not self.resume.accept(event):
            return None
        return event


def event_name(event: StreamEvent | ControlEvent) -> str:
    """The SSE event name of a typed event (`token`, `end`, `task`, ...)."""
    return _EVENT_NAMES[type(event)]


_EVENT_NAMES = {model: name for name, model in (*_EVENT_MODELS.items(), *_CONTROL_MODELS.items())}
