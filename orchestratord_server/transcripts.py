"""Per-task SSE transcripts: every event of a task, buffered for all its subscribers.

A stream may be opened before, during or after a task runs (ORCH-2002): each subscriber
replays the frames already recorded, from the first or from any later one, then follows
new ones until the terminal frame. A transcript is closed by exactly one terminal event
(`end` or `error`) and nothing is appended after it. Frames are pre-encoded once, so many
subscribers cost no extra encoding. Each frame's first line is `id: <n>`, its 0-based
index in the transcript: ids follow from the transcript alone, so instances that build
the same transcript send the same ids, and a client resuming with `Last-Event-ID` gets
exactly the frames after its last one. The transcript also counts its open subscribers,
which lets the runtime tell when the only stream of a running task went away.

A subscriber waits in one of two ways. A follower (`next_frame`, `follow_events`) is
woken by the first frame after its wait and takes everything recorded by then, so the
frames of one loop turn reach it together. A parked subscriber (`park`, for HTTP streams)
is not woken at all while it keeps up: once per loop turn in which frames arrive, the
transcript hands them, joined, to the subscriber's `write` (one socket write per turn, no
task switch); the subscriber is woken only when `write` refuses (its client is slow or
gone) or when the terminal frame arrives, and sends the rest itself.

A transcript made with ``keep_events=True`` also keeps each event in typed form
(:class:`TaskEvent`, its name and data) for in-process followers such as the
OpenAI-compatible handlers, which render the same events in another wire format without
parsing SSE. Other transcripts keep frames only, so the token path stays as cheap.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

# One encoder for every frame: `json.dumps` with options builds a new encoder per call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# The JSON string literal of a str, as that encoder writes it (C-accelerated).
_JSON_STRING = json.encoder.encode_basestring


def sse_frame(event: str, data: Mapping[str, Any]) -> bytes:
    """One SSE frame without its id: `event: <name>`, one line of JSON data, a blank line.

    `Transcript.append` puts the `id:` line in front when it records the frame.
    """
    return f"event: {event}\ndata: {_ENCODE(data)}\n\n".encode()


def token_frame(text: str, index: int) -> bytes:
    """The frame of one token, without its id (see `sse_frame`); the hot path, so it skips
    the generic encoder."""
    return f'event: token\ndata: {{"t":{_JSON_STRING(text)},"i":{index}}}\n\n'.encode()


class TranscriptClosed(Exception):
    """Raised when a frame is appended after the terminal event."""


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One event of a task in typed form: its SSE event name and its data object."""

    name: str
    data: Mapping[str, Any]


class Parked:
    """A subscriber parked on a transcript (`Transcript.park`): the frames up to ``sent``
    have reached it; ``woken`` resolves when it must take over again."""

    __slots__ = ("sent", "woken", "write")

    def __init__(self, sent: int, write: Callable[[bytes], bool]) -> None:
        self.sent = sent
        self.write = write
        self.woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Transcript:
    """The frames of one task, in order, and the subscribers waiting for more."""

    __slots__ = ("_flushing", "_parked", "_waiters", "closed", "events", "frames", "subscribers")

    def __init__(self, *, keep_events: bool = False) -> None:
        self.frames: list[bytes] = []
        self.events: list[TaskEvent] | None = [] if keep_events else None
        self.closed = False
        self.subscribers = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._parked: tuple[Parked, ...] = ()
        self._flushing = False

    def append(self, frame: bytes, event: TaskEvent | None = None) -> None:
        """Record a non-terminal frame (and its typed event, if kept) and wake subscribers.

        The frame is stored behind its `id:` line, its index in the transcript.
        """
        if self.closed:
            raise TranscriptClosed("the transcript already holds its terminal event")
        self.frames.append(b"id: %d\n%b" % (len(self.frames), frame))
        if event is not None and self.events is not None:
            self.events.append(event)
        if self._waiters:
            self._wake()
        if self._parked and not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def close(self, frame: bytes, event: TaskEvent | None = None) -> None:
        """Record the terminal frame; later appends raise TranscriptClosed. Parked
        subscribers are woken to send the rest themselves."""
        self.append(frame, event)
        self.closed = True
        parked, self._parked = self._parked, ()
        for subscriber in parked:
            _resolve(subscriber.woken)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _resolve(waiter)

    def next_frame(self) -> asyncio.Future[None]:
        """A future that resolves when the next frame is recorded (the terminal included)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return waiter

    def park(self, sent: int, write: Callable[[bytes], bool]) -> Parked:
        """Park a subscriber that has every frame before ``sent``: from now on, once per
        loop turn in which frames arrive, they go to ``write`` joined in one chunk. Its
        `Parked.woken` resolves, and the parking ends, when ``write`` returns False (the
        chunk was not taken: the subscriber sends it) or the terminal frame is recorded
        (the subscriber sends it, then ends). A subscriber that stops waiting must
        `unpark`."""
        subscriber = Parked(sent, write)
        if self.closed or sent < len(self.frames):
            _resolve(subscriber.woken)
        else:
            self._parked = (*self._parked, subscriber)
        return subscriber

    def unpark(self, subscriber: Parked) -> None:
        """End a parking (a no-op once it has ended)."""
        self._parked = tuple(other for other in self._parked if other is not subscriber)

    def _flush(self) -> None:
        """Hand the frames of this loop turn to the parked subscribers."""
        self._flushing = False
        frames = self.frames
        end = len(frames)
        for subscriber in self._parked:
            sent = subscriber.sent
            if sent == end:
                continue
            if subscriber.write(frames[sent] if end - sent == 1 else b"".join(frames[sent:end])):
                subscriber.sent = end
            else:
                self.unpark(subscriber)
                _resolve(subscriber.woken)

    async def follow_events(self) -> AsyncGenerator[list[TaskEvent], None]:
        """Every batch of new typed events until the terminal one: the events already
        recorded first, then those of each loop turn together. Counts as a subscriber,
        as a stream does. Needs ``keep_events``."""
        events = self.events
        if events is None:
            raise ValueError("this transcript keeps no typed events")
        self.subscribers += 1
        try:
            sent = 0
            while True:
                if len(events) > sent:
                    batch = events[sent:]
                    sent += len(batch)
                    yield batch
                if self.closed:
                    return
                await self.next_frame()
        finally:
            self.subscribers -= 1


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def emit(
    transcript: Transcript, name: str, data: Mapping[str, Any], *, terminal: bool = False
) -> None:
    """Record one event: its frame, and its typed form when the transcript keeps those.

    Fields without a value are left out: no event field of the contract is nullable.
    """
    data = {key: value for key, value in data.items() if value is not None}
    frame = sse_frame(name, data)
    event = TaskEvent(name, data) if transcript.events is not None else None
    if terminal:
        transcript.close(frame, event)
    else:
        transcript.append(frame, event)
