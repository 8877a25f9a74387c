"""SSE decoding and resumption, on frames the daemon does not send but the format allows."""

from __future__ import annotations

from orchestratord_client.sse import EventReader, RawEvent, SseDecoder
from orchestratord_server.generated.models import EndEvent, MetricsEvent, StartedEvent, TokenEvent


def feed(decoder: SseDecoder, text: str) -> list[RawEvent]:
    return [e for line in text.split("\n") if (e := decoder.feed(line)) is not None]


def test_decoder_follows_the_sse_format() -> None:
    """ORCH-2002: comments are skipped, multi-line data is joined by newlines, an event
    without a name is `message`, and a frame without data dispatches nothing."""
    events = feed(
        SseDecoder(),
        ': keep-alive\n\nevent: token\ndata: {"t":\ndata: "a","i":0}\nid: 7\n\n'
        "data: hello\n\nevent: end\n\n",
    )
    assert events == [RawEvent("token", '{"t":\n"a","i":0}'), RawEvent("message", "hello")]


def test_reader_skips_what_a_replay_repeats() -> None:
    """ORCH-2002: after a reconnection the replayed started, metrics and tokens below the
    next index are dropped; new ones and the end pass, typed."""
    frames = [
        'event: started\ndata: {"queue_position":0,"predicted_start_ms":0}',
        'event: token\ndata: {"t":"a","i":0}',
        'event: metrics\ndata: {"tokens_out":1}',
        'event: token\ndata: {"t":"b","i":1}',
        'event: unknown\ndata: {"x":1}',
    ]
    reader = EventReader()

    def read(raw: list[str]) -> list[object]:
        reader.reconnected()
        lines = [*"\n\n".join(raw).split("\n"), "", ""]
        return [e for line in lines if (e := reader.line(line)) is not None]

    first = read(frames[:2])
    assert [type(e) for e in first] == [StartedEvent, TokenEvent]
    rest = [*frames, 'event: end\ndata: {"tokens_out":2,"decode_ms":1}']
    second = read(rest)
    assert [type(e) for e in second] == [MetricsEvent, TokenEvent, EndEvent]
    assert reader.resume.next_index == 2
    assert reader.finished
