"""SSE decoding and resumption, on frames the daemon does not send but the format allows."""

from __future__ import annotations

from orchestratord_client.generated.models import EndEvent, MetricsEvent, StartedEvent, TokenEvent
from orchestratord_client.sse import EventReader, RawEvent, SseDecoder


def feed(decoder: SseDecoder, text: str) -> list[RawEvent]:
    return [e for line in text.split("\n") if (e := decoder.feed(line)) is not None]


def read(reader: EventReader, frames: list[str]) -> list[object]:
    """The events a (re)connection that receives ``frames`` yields."""
    reader.reconnected()
    lines = [*"\n\n".join(frames).split("\n"), "", ""]
    return [e for line in lines if (e := reader.line(line)) is not None]


def test_decoder_follows_the_sse_format() -> None:
    """ORCH-2002: comments are skipped, multi-line data is joined by newlines, an event
    without a name is `message`, a frame without data dispatches nothing, and the last
    id sent stays the event id until another one comes."""
    events = feed(
        SseDecoder(),
        ': keep-alive\n\nevent: token\ndata: {"t":\ndata: "a","i":0}\nid: 7\n\n'
        "data: hello\n\nevent: end\n\nid: 9\ndata: x\n\n",
    )
    assert events == [
        RawEvent("token", '{"t":\n"a","i":0}', "7"),
        RawEvent("message", "hello", "7"),
        RawEvent("message", "x", "9"),
    ]


def test_orch_2002_the_reader_resumes_after_the_last_event_id_it_read() -> None:
    """Before any event a connection asks for the whole stream; after one it sends
    `Last-Event-ID` with the last id read, and everything the daemon sends from there
    (the events after that id) is new: metrics included, and the end."""
    frames = [
        'id: 0\nevent: started\ndata: {"queue_position":0,"predicted_start_ms":0}',
        'id: 1\nevent: token\ndata: {"t":"a","i":0}',
        'id: 2\nevent: metrics\ndata: {"tokens_out":1}',
        'id: 3\nevent: unknown\ndata: {"x":1}',
        'id: 4\nevent: token\ndata: {"t":"b","i":1}',
        'id: 5\nevent: metrics\ndata: {"tokens_out":2}',
        'id: 6\nevent: end\ndata: {"tokens_out":2,"decode_ms":1}',
    ]
    reader = EventReader()
    assert reader.headers() == {}
    first = read(reader, frames[:3])
    assert [type(e) for e in first] == [StartedEvent, TokenEvent, MetricsEvent]
    assert reader.headers() == {"Last-Event-ID": "2"}
    second = read(reader, frames[3:])
    assert [type(e) for e in second] == [TokenEvent, MetricsEvent, EndEvent]
    assert reader.resume.last_event_id == "6"
    assert reader.resume.next_index == 2
    assert reader.finished


def test_a_frame_cut_before_its_end_does_not_count_as_read() -> None:
    """ORCH-2002: an id line whose frame never completed is not resumed after."""
    reader = EventReader()
    read(reader, ['id: 0\nevent: token\ndata: {"t":"a","i":0}'])
    reader.reconnected()
    assert reader.line("id: 1") is None
    assert reader.line("event: token") is None
    read(reader, [])
    assert reader.headers() == {"Last-Event-ID": "0"}


def test_a_stream_opened_from_an_index_skips_the_tokens_before_it() -> None:
    """ORCH-2002: `from_index` drops the tokens below it; other events pass."""
    reader = EventReader(next_index=1)
    events = read(
        reader,
        [
            'id: 0\nevent: started\ndata: {"queue_position":0,"predicted_start_ms":0}',
            'id: 1\nevent: token\ndata: {"t":"a","i":0}',
            'id: 2\nevent: token\ndata: {"t":"b","i":1}',
        ],
    )
    assert [type(e) for e in events] == [StartedEvent, TokenEvent]
    assert reader.headers() == {"Last-Event-ID": "2"}
