"""Per-task transcripts: every subscriber, early or late, sees the same frames in order,
ending with exactly one terminal frame (ORCH-2002)."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestratord_server.transcripts import (
    Transcript,
    TranscriptClosed,
    sse_frame,
    token_frame,
)


def _frames(chunks: list[bytes]) -> list[tuple[str, dict[str, object]]]:
    text = b"".join(chunks).decode()
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        event_line, data_line = block.split("\n")
        events.append((event_line.removeprefix("event: "), json.loads(data_line[6:])))
    return events


@given(st.text())
def test_token_frame_is_one_line_of_json_holding_the_exact_text(text: str) -> None:
    frame = token_frame(text, 7)
    assert frame.count(b"\n") == 3
    assert _frames([frame]) == [("token", {"t": text, "i": 7})]


async def _collect(transcript: Transcript) -> list[bytes]:
    return [chunk async for chunk in transcript.follow()]


def test_early_and_late_subscribers_see_the_same_transcript() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        transcript = Transcript()
        early = asyncio.create_task(_collect(transcript))
        await asyncio.sleep(0)
        transcript.append(sse_frame("started", {"queue_position": 0, "predicted_start_ms": 0}))
        for index, text in enumerate(["Hel", "lo"]):
            await asyncio.sleep(0)
            transcript.append(token_frame(text, index))
        transcript.close(sse_frame("end", {"tokens_out": 2, "decode_ms": 1}))
        late = await _collect(transcript)
        return await early, late

    early, late = asyncio.run(scenario())
    assert _frames(early) == _frames(late)
    assert [name for name, _ in _frames(late)] == ["started", "token", "token", "end"]


def test_nothing_follows_the_terminal_frame() -> None:
    transcript = Transcript()
    transcript.close(sse_frame("error", {"code": "INTERNAL", "message": "x"}))
    with pytest.raises(TranscriptClosed):
        transcript.append(token_frame("late", 0))


def test_subscribers_are_counted_while_they_follow() -> None:
    async def scenario() -> list[int]:
        transcript = Transcript()
        seen = [transcript.subscribers]
        follower = asyncio.create_task(_collect(transcript))
        await asyncio.sleep(0)
        seen.append(transcript.subscribers)
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        seen.append(transcript.subscribers)
        return seen

    assert asyncio.run(scenario()) == [0, 1, 0]


def test_frames_recorded_while_a_subscriber_is_sending_still_reach_it() -> None:
    """ORCH-2002: a subscriber whose send is slow (a client applying backpressure) still
    receives every token appended meanwhile, in order, then the terminal frame."""

    async def scenario() -> list[bytes]:
        transcript = Transcript()
        received: list[bytes] = []
        sending = asyncio.Event()
        release = asyncio.Event()

        async def slow_client() -> None:
            async for chunk in transcript.follow():
                received.append(chunk)
                sending.set()
                await release.wait()

        client = asyncio.create_task(slow_client())
        await asyncio.sleep(0)
        transcript.append(token_frame("a", 0))
        await asyncio.wait_for(sending.wait(), 5)
        transcript.append(token_frame("b", 1))
        transcript.close(sse_frame("end", {"tokens_out": 2, "decode_ms": 1}))
        release.set()
        await asyncio.wait_for(client, 5)
        return received

    events = _frames(asyncio.run(scenario()))
    assert events == [
        ("token", {"t": "a", "i": 0}),
        ("token", {"t": "b", "i": 1}),
        ("end", {"tokens_out": 2, "decode_ms": 1}),
    ]
