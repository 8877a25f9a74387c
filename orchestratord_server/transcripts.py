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

A transcript made with ``keep_events=True`` also keeps each event in typed form
(:class:`TaskEvent`, its name and data) for in-process followers such as the
OpenAI-compatible handlers, which render the same events in another wire format without
parsing SSE. Other transcripts keep frames only, so the token path stays as cheap.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping
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


class Transcript:
    """The frames of one task, in order, and the subscribers waiting for more."""

    __slots__ = ("_waiters", "closed", "events", "frames", "subscribers")

    def __init__(self, *, keep_events: bool = False) -> None:
        self.frames: list[bytes] = []
        self.events: list[TaskEvent] | None = [] if keep_events else None
        self.closed = False
        self.subscribers = 0
        self._waiters: list[asyncio.Future[None]] = []

    def append(self, frame: bytes, event: TaskEvent | None = None) -> None:
        """Record a non-terminal frame (and its typed event, if kept) and wake subscribers.

        The frame is stored behind its `id:` line, its index in the transcript.
        """
        if self.closed:
            raise TranscriptClosed("the transcript already holds its terminal event")
        self.frames.append(b"id: %d\n%b" % (len(self.frames), frame))
        if event is not None and self.events is not None:
            self.events.append(event)
        self._wake()

    def close(self, frame: bytes, event: TaskEvent | None = None) -> None:
        """Record the terminal frame; later appends raise TranscriptClosed."""
        self.append(frame, event)
        self.closed = True

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def follow(
        self, start: int = 0, idle_tick_s: float | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Yield every frame from frame ``start`` on, waiting for new ones, until the terminal.

        Until frame ``start`` exists nothing is yielded and the follower waits for it (an
        instance may be asked to resume beyond what it has recorded yet); a transcript
        that closes before reaching it yields nothing. Frames that are already waiting go
        out joined in one chunk, so a subscriber that fell behind (or arrived late)
        catches up in one write instead of one per frame. Frames recorded while the
        subscriber is suspended at a `yield` (its client is slow to take the previous
        chunk) go out with the next one. With ``idle_tick_s``, while no frame has gone
        out yet, an empty chunk is yielded each time that long passes without one: the
        caller's chance to send something of its own meanwhile.
        """
        self.subscribers += 1
        try:
            sent = start
            frames = self.frames
            waiter: asyncio.Future[None] | None = None
            while True:
                end = len(frames)
                if end > sent:
                    yield frames[sent] if end - sent == 1 else b"".join(frames[sent:end])
                    sent = end
                    idle_tick_s = None
                    continue
                if self.closed:
                    return
                if waiter is None or waiter.done():
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.append(waiter)
                if idle_tick_s is None:
                    await waiter
                    continue
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), idle_tick_s)
                except TimeoutError:
                    yield b""
        finally:
            self.subscribers -= 1

    async def follow_events(self) -> AsyncGenerator[list[TaskEvent], None]:
        """Like :meth:`follow`, for typed events: every batch of new events until the
        terminal one. Counts as a subscriber, as a stream does. Needs ``keep_events``."""
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
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter
        finally:
            self.subscribers -= 1


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
