"""Broken event streams from a misbehaving engine (ORCH-3054, ORCH-2006).

Random bytes, truncated frames, invalid JSON, hostile frame payloads and overlong lines,
fed to the SSE decoder, to the llama.cpp frame mapping, and served by a local fake engine
to the real adapter. The only failures allowed are the typed ones the runtime turns into
task errors: ``SseError`` from the decoder, ``EngineError`` from the adapter.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestratord_server.adapters.base import (
    AdapterSettings,
    CompletionRequest,
    EngineError,
    FinalChunk,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.http import HttpTimeouts
from orchestratord_server.adapters.llamacpp import (
    LlamaCppAdapter,
    chunks_from_event,
)
from orchestratord_server.adapters.sse import SseDecoder, SseError, SseEvent
from tests.fuzz.scripted_engine import FINAL, TOKEN, Script, ScriptedEngine

FUZZ = settings(
    max_examples=80,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LINE_LIMIT = 256
REQ = CompletionRequest(prompt="hi", max_tokens=8, seed=3)
ENGINE_KINDS = {"INVALID_PARAMS", "WORKER_RESET", "DECODE_TIMEOUT", "ENGINE_ERROR"}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length, sorted)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def decode(chunks: list[bytes], limit: int = LINE_LIMIT) -> list[SseEvent]:
    decoder = SseDecoder(max_line_bytes=limit)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.finish()


@FUZZ
@given(chunks=st.lists(st.binary(max_size=64), max_size=12))
def test_random_bytes_give_events_or_sse_error(chunks: list[bytes]) -> None:
    """Whatever the bytes, the decoder returns events of text or raises SseError."""
    try:
        events = decode(chunks)
    except SseError:
        return
    assert all(isinstance(e.event, str) and isinstance(e.data, str) for e in events)


field_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=20,
)
frames = st.lists(
    st.tuples(field_text.filter(lambda t: ":" not in t and t.strip() == t), field_text),
    min_size=1,
    max_size=6,
)


def encode(events: list[tuple[str, str]]) -> bytes:
    return b"".join(f"event: {e}\ndata: {d}\n\n".encode() for e, d in events)


@FUZZ
@given(events=frames, cut=st.integers(min_value=0), cuts=st.lists(st.integers(0, 10_000)))
def test_a_truncated_stream_yields_only_whole_events(
    events: list[tuple[str, str]], cut: int, cuts: list[int]
) -> None:
    """Cut anywhere and chunked anyhow, a stream gives a prefix of its events, never a
    partial one."""
    whole = encode(events)
    expected = decode([whole])
    truncated = whole[: cut % (len(whole) + 1)]
    got = decode(split(truncated, cuts))
    assert got == expected[: len(got)]


@FUZZ
@given(size=st.integers(LINE_LIMIT + 1, 8 * LINE_LIMIT), cuts=st.lists(st.integers(0, 4096)))
def test_an_overlong_line_is_an_sse_error(size: int, cuts: list[int]) -> None:
    """A line past the limit, however it arrives, is refused before it is buffered whole."""
    with pytest.raises(SseError):
        decode(split(b"data: " + b"x" * size, cuts))


frame_payloads = st.fixed_dictionaries(
    {},
    optional={
        "content": st.text() | json_values,
        "stop": st.booleans() | json_values,
        "stop_type": st.sampled_from(["limit", "eos", "word", "none"]) | json_values,
        "stopped_limit": st.booleans(),
        "stopped_eos": st.booleans(),
        "tokens_predicted": st.integers(-2, 10) | json_values,
        "tokens_evaluated": st.integers(-2, 10) | json_values,
        "generation_settings": st.fixed_dictionaries({"seed": json_values}) | json_values,
        "error": json_values,
    },
)
frame_data = frame_payloads.map(json.dumps) | json_values.map(json.dumps) | st.text()


@FUZZ
@given(event=st.sampled_from(["message", "error", "", "token"]), data=frame_data)
def test_any_frame_maps_to_chunks_or_an_engine_error(event: str, data: str) -> None:
    """A frame's payload, however wrong, becomes well-formed chunks or an EngineError."""
    try:
        chunks = chunks_from_event(SseEvent(event=event, data=data))
    except EngineError as error:
        assert error.kind in ENGINE_KINDS
        return
    check_chunks(chunks, final_required=False)


def check_chunks(chunks: list[StreamChunk], *, final_required: bool) -> None:
    """Text chunks, then at most one final chunk and only last, with sane counts."""
    finals = [i for i, c in enumerate(chunks) if isinstance(c, FinalChunk)]
    allowed = [[len(chunks) - 1]] if final_required else [[], [len(chunks) - 1]]
    assert finals in allowed, chunks
    for chunk in chunks:
        if isinstance(chunk, TokenChunk):
            assert isinstance(chunk.text, str) and chunk.text
        else:
            assert chunk.finish_reason in ("stop", "length")
            assert chunk.tokens_in >= 0 and chunk.tokens_out >= 0


@pytest.fixture(scope="module")
def engine() -> Iterator[ScriptedEngine]:
    scripted = ScriptedEngine().start()
    yield scripted
    scripted.stop()


pieces = st.lists(
    st.sampled_from([TOKEN, FINAL, b": ping\n\n", b"\r\n", b"data: {\n\n", b"error: {}\n\n"])
    | st.binary(max_size=40)
    | frame_data.map(lambda d: b"data: " + d.encode("utf-8", "surrogatepass") + b"\n\n"),
    max_size=8,
)


async def run_stream(base_url: str) -> list[StreamChunk]:
    """The chunks of one completion stream from the engine at ``base_url``."""
    timeouts = HttpTimeouts(connect_s=5, request_s=10, stream_read_s=5)
    adapter = LlamaCppAdapter(AdapterSettings(base_url), timeouts=timeouts)
    try:
        return [chunk async for chunk in adapter.stream(REQ)]
    finally:
        await adapter.close()


@settings(FUZZ, max_examples=40)
@given(
    status=st.sampled_from([200, 200, 200, 400, 500, 503]),
    body=pieces,
    cuts=st.lists(st.integers(0, 4096), max_size=6),
    abort=st.booleans(),
)
def test_a_misbehaving_engine_gives_chunks_or_an_engine_error(
    engine: ScriptedEngine, status: int, body: list[bytes], cuts: list[int], abort: bool
) -> None:
    """ORCH-3054: a stream that ends without error is token chunks and one final chunk,
    last; anything else the engine does is an EngineError.

    (An error answer's body is kept UTF-8 here: a non-UTF-8 one is a known failure, see
    ``test_an_engine_answering_bytes_that_are_not_utf8_is_an_engine_error``.)
    """
    raw = b"".join(body)
    if status != 200:
        raw = raw.decode("utf-8", "replace").encode()
    engine.scripts = {"*": Script(status=status, parts=split(raw, cuts), abort=abort)}
    try:
        chunks = asyncio.run(run_stream(engine.base_url))
    except EngineError as error:
        assert error.kind in ENGINE_KINDS
        return
    assert status == 200
    check_chunks(chunks, final_required=True)


def test_an_overlong_engine_line_is_an_engine_error(engine: ScriptedEngine) -> None:
    """ORCH-3054: an engine line beyond the decoder's 4 MiB limit fails the stream as
    ENGINE_ERROR instead of growing the buffer without bound."""
    engine.scripts = {"*": Script(parts=[TOKEN, b"data: " + b"x" * (4 * 1024 * 1024 + 1)])}
    with pytest.raises(EngineError) as caught:
        asyncio.run(run_stream(engine.base_url))
    assert caught.value.kind == "ENGINE_ERROR"


NOT_UTF8 = b"\x80\xff not text"


async def call_adapter(base_url: str, method: str) -> Any:
    adapter = LlamaCppAdapter(AdapterSettings(base_url))
    try:
        if method == "stream":
            return [chunk async for chunk in adapter.stream(REQ)]
        return await getattr(adapter, method)()
    finally:
        await adapter.close()


@pytest.mark.parametrize(
    ("method", "status"),
    [("stream", 500), ("health", 503), ("props", 200), ("slots", 200), ("metrics_text", 200)],
)
def test_an_engine_answering_bytes_that_are_not_utf8_is_an_engine_error(
    engine: ScriptedEngine, method: str, status: int
) -> None:
    """ORCH-3054: adapter calls fail only with EngineError; health never raises."""
    engine.scripts = {"*": Script(status=status, parts=[NOT_UTF8])}
    if method == "health":
        health = asyncio.run(call_adapter(engine.base_url, method))
        assert (health.live, health.ready) == (True, False)
        return
    with pytest.raises(EngineError):
        asyncio.run(call_adapter(engine.base_url, method))
