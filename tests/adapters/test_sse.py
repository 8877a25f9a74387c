"""The event-stream decoder used for engine streams (ORCH-3054).

Whatever the transport's chunk boundaries (mid-line, between CR and LF, inside a UTF-8
character), the same events come out; comments, blank keep-alives and unknown fields are
skipped; broken input is refused.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestratord_server.adapters.sse import SseDecoder, SseError, SseEvent

EVENT_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"),
    max_size=40,
)
LINE_END = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[bytes, list[SseEvent]]:
    """A well-formed stream (random line endings, comments, pings) and its events."""
    events = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["", "error", "update"]),
                st.lists(EVENT_TEXT, min_size=1, max_size=3),
            ),
            max_size=6,
        )
    )
    parts: list[str] = []
    expected: list[SseEvent] = []
    for name, lines in events:
        end = draw(LINE_END)
        if draw(st.booleans()):
            parts.append(f": ping{end}")
        if name == "error":
            parts.extend(f"error: {line}{end}" for line in lines)
        else:
            if name:
                parts.append(f"event: {name}{end}")
            parts.extend(f"data: {line}{end}" for line in lines)
        if draw(st.booleans()):
            parts.append(f"id: 7{end}retry: 100{end}")
        parts.append(end)
        expected.append(SseEvent(event=name or "message", data="\n".join(lines)))
    return "".join(parts).encode(), expected


def decode_in_chunks(stream: bytes, cuts: list[int]) -> list[SseEvent]:
    decoder = SseDecoder()
    events: list[SseEvent] = []
    bounds = [0, *sorted(set(cuts)), len(stream)]
    for start, end in itertools.pairwise(bounds):
        events.extend(decoder.feed(stream[start:end]))
    events.extend(decoder.finish())
    assert decoder.at_boundary
    return events


@given(event_streams(), st.data())
def test_any_chunking_yields_the_same_events(
    sample: tuple[bytes, list[SseEvent]], data: st.DataObject
) -> None:
    stream, expected = sample
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    assert decode_in_chunks(stream, cuts) == expected


@given(event_streams())
def test_byte_by_byte_equals_all_at_once(sample: tuple[bytes, list[SseEvent]]) -> None:
    stream, expected = sample
    assert decode_in_chunks(stream, list(range(len(stream)))) == expected
    assert decode_in_chunks(stream, []) == expected


def test_llamacpp_frames_and_crlf() -> None:
    decoder = SseDecoder()
    stream = b'data: {"content":"a","stop":false}\r\n\r\ndata: {"content":"","stop":true}\n\n'
    assert [event.data for event in decoder.feed(stream)] == [
        '{"content":"a","stop":false}',
        '{"content":"","stop":true}',
    ]


def test_space_after_colon_is_optional_and_only_one_is_dropped() -> None:
    events = SseDecoder().feed(b"data:x\ndata:  y\nevent\n\n")
    assert events == [SseEvent(event="message", data="x\n y")]


def test_event_without_data_is_not_dispatched() -> None:
    assert SseDecoder().feed(b"event: update\n\n: comment\n\n\n") == []


def test_trailing_cr_ends_the_last_line_at_end_of_stream() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: x\r\r") == []
    assert decoder.finish() == [SseEvent(event="message", data="x")]


def test_unterminated_event_is_not_dispatched() -> None:
    partial_line = SseDecoder()
    assert partial_line.feed(b'data: {"content":"a"') == []
    assert not partial_line.at_boundary
    assert partial_line.finish() == []
    no_blank_line = SseDecoder()
    assert no_blank_line.feed(b'data: {"content":"a"}\n') == []
    assert no_blank_line.finish() == []
    assert not no_blank_line.at_boundary


def test_invalid_utf8_is_refused() -> None:
    with pytest.raises(SseError, match="UTF-8"):
        SseDecoder().feed(b"data: \xff\xfe\n\n")


def test_overlong_line_is_refused() -> None:
    decoder = SseDecoder(max_line_bytes=16)
    with pytest.raises(SseError, match="exceeds"):
        decoder.feed(b"data: " + b"x" * 32)
