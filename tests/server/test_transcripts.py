"""Per-task transcripts: every subscriber, early or late, sees the same frames in order,
ending with exactly one terminal frame, each frame carrying its index as its id; a
subscriber may start after any frame (ORCH-2002). Subscribers here are task streams'
HTTP responses (`TranscriptResponse`) driven over ASGI, as a server other than the
daemon's own (a test client) drives them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.types import Message

from orchestratord_server.sse_response import TranscriptResponse
from orchestratord_server.transcripts import (
    Transcript,
    TranscriptClosed,
    sse_frame,
    token_frame,
)


def _frames(chunks: list[bytes]) -> list[tuple[int, str, dict[str, object]]]:
    """(id, event, data) of each `id: N`, `event: X`, `data: {json}` frame."""
    text = b"".join(chunks).decode()
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        id_line, event_line, data_line = block.split("\n")
        assert id_line.startswith("id: ") and event_line.startswith("event: "), block
        name = event_line.removeprefix("event: ")
        events.append((int(id_line.removeprefix("id: ")), name, json.loads(data_line[6:])))
    return events


@given(st.text())
def test_token_frame_is_one_line_of_json_holding_the_exact_text(text: str) -> None:
    transcript = Transcript()
    transcript.append(token_frame(text, 7))
    frame = transcript.frames[0]
    assert frame.count(b"\n") == 4
    assert _frames([frame]) == [(0, "token", {"t": text, "i": 7})]


async def _stream(
    transcript: Transcript, start: int, take: Callable[[bytes], Awaitable[None]]
) -> None:
    """A task stream's response from frame ``start``, each chunk of its body to ``take``;
    its client never goes away."""

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            await take(message["body"])

    response = TranscriptResponse(transcript, start, (), on_end=lambda: None)
    await response({"type": "http"}, receive, send)


async def _collect(transcript: Transcript, start: int = 0) -> list[bytes]:
    chunks: list[bytes] = []

    async def take(chunk: bytes) -> None:
        chunks.append(chunk)

    await _stream(transcript, start, take)
    return chunks


def _record(transcript: Transcript, texts: list[str]) -> None:
    """`started`, a token per text, then `end`: 2 + len(texts) frames."""
    transcript.append(sse_frame("started", {"queue_position": 0, "predicted_start_ms": 0}))
    for index, text in enumerate(texts):
        transcript.append(token_frame(text, index))
    transcript.close(sse_frame("end", {"tokens_out": len(texts), "decode_ms": 1}))


def test_orch_2002_each_frame_carries_its_index_in_the_transcript_as_its_id() -> None:
    transcript = Transcript()
    _record(transcript, ["a", "b", "c"])
    frames = _frames(asyncio.run(_collect(transcript)))
    assert [event_id for event_id, _, _ in frames] == [0, 1, 2, 3, 4]
    assert [name for _, name, _ in frames] == ["started", "token", "token", "token", "end"]
    assert all(
        frame.startswith(b"id: %d\nevent: " % i) for i, frame in enumerate(transcript.frames)
    )


@pytest.mark.parametrize("start", range(6))
def test_orch_2002_a_follower_from_a_start_gets_exactly_the_frames_from_it(start: int) -> None:
    """Resuming after frame N (`start` N + 1) yields frames N + 1 to the terminal one:
    their bytes are the whole transcript's from there on; after the terminal, nothing."""
    transcript = Transcript()
    _record(transcript, ["a", "b", "c"])
    rest = asyncio.run(_collect(transcript, start))
    assert b"".join(rest) == b"".join(transcript.frames[start:])
    assert [event_id for event_id, _, _ in _frames(rest)] == list(range(start, 5))


def test_orch_2002_a_follower_ahead_of_the_transcript_waits_for_its_start() -> None:
    """A follower asked to start beyond what is recorded yields nothing until its start
    frame exists, then everything from it; if the transcript closes short of it,
    nothing at all."""

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        ahead = Transcript()
        follower = asyncio.create_task(_collect(ahead, 2))
        ahead.append(sse_frame("started", {"queue_position": 0, "predicted_start_ms": 0}))
        await asyncio.sleep(0)
        ahead.append(token_frame("a", 0))
        await asyncio.sleep(0)
        assert not follower.done()
        ahead.append(token_frame("b", 1))
        ahead.close(sse_frame("end", {"tokens_out": 2, "decode_ms": 1}))
        short = Transcript()
        stranded = asyncio.create_task(_collect(short, 3))
        await asyncio.sleep(0)
        short.close(sse_frame("end", {"tokens_out": 0, "decode_ms": 0}))
        return await follower, await stranded

    got, stranded = asyncio.run(scenario())
    assert [(i, name) for i, name, _ in _frames(got)] == [(2, "token"), (3, "end")]
    assert stranded == []


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
    assert [name for _, name, _ in _frames(late)] == ["started", "token", "token", "end"]


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

        async def slow_client(chunk: bytes) -> None:
            received.append(chunk)
            sending.set()
            await release.wait()

        client = asyncio.create_task(_stream(transcript, 0, slow_client))
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
        (0, "token", {"t": "a", "i": 0}),
        (1, "token", {"t": "b", "i": 1}),
        (2, "end", {"tokens_out": 2, "decode_ms": 1}),
    ]
