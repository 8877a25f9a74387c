"""Per-task SSE transcripts: every event of a task, buffered for all its subscribers.

A stream may be opened before, during or after a task runs (ORCH-2002): each subscriber
replays the frames already recorded, then follows new ones until the terminal frame. A
transcript is closed by exactly one terminal event (`end` or `error`) and nothing is
appended after it. Frames are pre-encoded once, so many subscribers cost no extra
encoding. The transcript also counts its open subscribers, which lets the runtime tell
when the only stream of a running task went away.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any


def sse_frame(event: str, data: Mapping[str, Any]) -> bytes:
    """One SSE frame: `event: <name>`, one line of JSON data, a blank line."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event}\ndata: {payload}\n\n".encode()


def token_frame(text: str, index: int) -> bytes:
    """The frame of one token; the hot path, so it skips the generic encoder."""
    payload = json.dumps(text, ensure_ascii=False)
    return f'event: token\ndata: {{"t":{payload},"i":{index}}}\n\n'.encode()


class TranscriptClosed(Exception):
    """Raised when a frame is appended after the terminal event."""


class Transcript:
    """The frames of one task, in order, and the subscribers waiting for more."""

    __slots__ = ("_waiters", "closed", "frames", "subscribers")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed = False
        self.subscribers = 0
        self._waiters: list[asyncio.Future[None]] = []

    def append(self, frame: bytes) -> None:
        """Record a non-terminal frame and wake the subscribers."""
        if self.closed:
            raise TranscriptClosed("the transcript already holds its terminal event")
        self.frames.append(frame)
        self._wake()

    def close(self, frame: bytes) -> None:
        """Record the terminal frame; later appends raise TranscriptClosed."""
        self.append(frame)
        self.closed = True

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def follow(self) -> AsyncGenerator[bytes, None]:
        """Yield every frame from the first, waiting for new ones, until the terminal.

        Frames that are already waiting go out joined in one chunk, so a subscriber that
        fell behind (or arrived late) catches up in one write instead of one per frame.
        """
        self.subscribers += 1
        try:
            sent = 0
            while True:
                frames = self.frames
                pending = len(frames) - sent
                if pending == 1:
                    yield frames[sent]
                elif pending > 1:
                    yield b"".join(frames[sent:])
                sent = len(frames)
                if self.closed:
                    return
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter
        finally:
            self.subscribers -= 1
