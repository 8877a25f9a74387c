"""Parked subscribers (`Transcript.park`): the frames of one loop turn go out in one
write without waking the subscriber; it is woken only when a write is refused or the
terminal frame arrives, and a subscriber that is sending still gets every frame (ORCH-2002).
"""

from __future__ import annotations

import asyncio

from orchestratord_server.transcripts import Transcript, sse_frame, token_frame

END = sse_frame("end", {"tokens_out": 3, "decode_ms": 1})


async def _turns(count: int = 2) -> None:
    """Let the loop run `count` turns (a flush runs in the turn after the append)."""
    for _ in range(count):
        await asyncio.sleep(0)


def test_frames_appended_in_one_loop_turn_reach_a_parked_subscriber_in_one_write() -> None:
    async def scenario() -> tuple[list[bytes], Transcript, bool]:
        transcript = Transcript()
        writes: list[bytes] = []
        parked = transcript.park(0, lambda data: writes.append(data) is None)
        for index, text in enumerate(["a", "b", "c"]):
            transcript.append(token_frame(text, index))
        await _turns()
        return writes, transcript, parked.woken.done()

    writes, transcript, woken = asyncio.run(scenario())
    assert writes == [b"".join(transcript.frames)]
    assert not woken


def test_each_loop_turn_goes_out_within_that_turn() -> None:
    async def scenario() -> tuple[list[list[bytes]], Transcript]:
        transcript = Transcript()
        writes: list[bytes] = []
        transcript.park(0, lambda data: writes.append(data) is None)
        seen = []
        for index, text in enumerate(["a", "b"]):
            transcript.append(token_frame(text, index))
            await _turns(1)
            seen.append(list(writes))
        return seen, transcript

    seen, transcript = asyncio.run(scenario())
    assert seen == [[transcript.frames[0]], [transcript.frames[0], transcript.frames[1]]]


def test_a_refused_write_wakes_the_subscriber_which_still_has_the_frame_to_send() -> None:
    async def scenario() -> tuple[int, bool, int]:
        transcript = Transcript()
        parked = transcript.park(0, lambda _data: False)
        transcript.append(token_frame("a", 0))
        transcript.append(token_frame("b", 1))
        await asyncio.wait_for(parked.woken, 5)
        transcript.append(token_frame("c", 2))
        await _turns()
        return parked.sent, parked.woken.done(), len(transcript.frames)

    sent, woken, recorded = asyncio.run(scenario())
    assert (sent, woken, recorded) == (0, True, 3)


def test_the_terminal_frame_wakes_a_parked_subscriber_and_is_not_written_for_it() -> None:
    """The subscriber sends the rest itself, so the end goes through the ordinary path
    (and the response's final message follows it)."""

    async def scenario() -> tuple[list[bytes], int, bool]:
        transcript = Transcript()
        writes: list[bytes] = []
        parked = transcript.park(0, lambda data: writes.append(data) is None)
        transcript.append(token_frame("a", 0))
        transcript.close(END)
        await asyncio.wait_for(parked.woken, 5)
        await _turns()
        return writes, parked.sent, transcript.closed

    writes, sent, closed = asyncio.run(scenario())
    assert (writes, sent, closed) == ([], 0, True)


def test_parking_behind_the_transcript_or_on_a_closed_one_wakes_at_once() -> None:
    async def scenario() -> list[bool]:
        behind = Transcript()
        behind.append(token_frame("a", 0))
        ended = Transcript()
        ended.close(END)
        return [
            behind.park(0, lambda _data: True).woken.done(),
            behind.park(1, lambda _data: True).woken.done(),
            ended.park(1, lambda _data: True).woken.done(),
        ]

    assert asyncio.run(scenario()) == [True, False, True]


def test_an_unparked_subscriber_gets_no_more_writes() -> None:
    async def scenario() -> list[bytes]:
        transcript = Transcript()
        writes: list[bytes] = []
        parked = transcript.park(0, lambda data: writes.append(data) is None)
        transcript.append(token_frame("a", 0))
        transcript.unpark(parked)
        transcript.unpark(parked)
        await _turns()
        return writes

    assert asyncio.run(scenario()) == []
