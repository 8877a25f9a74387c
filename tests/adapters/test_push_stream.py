"""The llama.cpp stream read in the socket's callback (`adapters/push.py`, issue 18),
against raw servers that control every byte and every cut of the answer."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from orchestrator_core import FinishReason
from orchestratord_server.adapters.base import (
    AdapterSettings,
    CompletionRequest,
    EngineError,
    FinalChunk,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.http import HttpTimeouts
from orchestratord_server.adapters.llamacpp import LlamaCppAdapter

REQ = CompletionRequest(prompt="hi", max_tokens=3, seed=1)
HEAD_200 = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
FINAL = {
    "content": "",
    "stop": True,
    "stop_type": "limit",
    "tokens_predicted": 2,
    "tokens_evaluated": 4,
}


def frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def token(text: str) -> bytes:
    return frame({"content": text, "stop": False})


def chunked(body: bytes, size: int) -> bytes:
    """``body`` in HTTP chunks of ``size`` bytes, with the terminating chunk."""
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def writes(pieces: Sequence[bytes], then_sleep: float = 0.0) -> Script:
    """A server that answers with ``pieces``, each written and flushed on its own."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.005)
        await asyncio.sleep(then_sleep)

    return answer


@asynccontextmanager
async def engine(script: Script) -> AsyncIterator[str]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def relayed(
    script: Script, take: Callable[[StreamChunk], bool] | None = None, **timeouts: float
) -> list[StreamChunk]:
    got: list[StreamChunk] = []

    def keep(chunk: StreamChunk) -> bool:
        got.append(chunk)
        return take(chunk) if take is not None else True

    async with engine(script) as url:
        adapter = LlamaCppAdapter(AdapterSettings(url), HttpTimeouts(**timeouts))
        await adapter.relay(REQ, keep)
    return got


def failure(script: Script, **timeouts: float) -> EngineError:
    with pytest.raises(EngineError) as caught:
        asyncio.run(relayed(script, **timeouts))
    return caught.value


BODY = token("a") + b": ping\n\n" + token("é") + frame(FINAL)
EXPECTED = [TokenChunk("a"), TokenChunk("é"), FinalChunk(FinishReason.LENGTH, 4, 2, None)]


@pytest.mark.parametrize("cut", [1, 3, 7, 16])
def test_chunked_body_cut_anywhere_relays_every_token(cut: int) -> None:
    wire = HEAD_200 + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(BODY, 5)
    pieces = [wire[i : i + cut] for i in range(0, len(wire), cut)]
    assert asyncio.run(relayed(writes(pieces))) == EXPECTED


def test_length_and_close_delimited_bodies_relay_every_token() -> None:
    sized = HEAD_200 + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY
    closed = HEAD_200 + b"Connection: close\r\n\r\n" + BODY
    for wire in (sized, closed):
        assert asyncio.run(relayed(writes([wire]))) == EXPECTED


def test_the_request_is_a_streamed_completion_on_its_own_connection() -> None:
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        seen.extend([head, await reader.readexactly(length)])
        writer.write(HEAD_200 + b"Connection: close\r\n\r\n" + frame(FINAL))

    asyncio.run(relayed(answer))
    head, body = seen
    assert head.startswith(b"POST /completion HTTP/1.1\r\n")
    assert b"\r\nConnection: close\r\n" in head
    assert json.loads(body)["stream"] is True


def test_engine_closing_before_the_final_frame_is_worker_reset() -> None:
    error = failure(writes([HEAD_200 + b"Connection: close\r\n\r\n" + token("a")]))
    assert error.kind == "WORKER_RESET"
    chunked_cut = HEAD_200 + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(token("a"), 4)[:-5]
    assert failure(writes([chunked_cut])).kind == "WORKER_RESET"
    assert failure(writes([])).kind == "WORKER_RESET"


def test_http_error_status_is_the_engines_error() -> None:
    body = b'{"error":{"code":500,"message":"out of memory","type":"server_error"}}'
    wire = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % len(body)
    error = failure(writes([wire + body], then_sleep=1.0))
    assert (error.kind, error.status, error.message) == ("WORKER_RESET", 500, "out of memory")
    wire = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\nbad prompt"
    error = failure(writes([wire]))
    assert (error.kind, error.status, error.message) == ("INVALID_PARAMS", 400, "bad prompt")


def test_bad_framing_and_bad_frames_are_internal() -> None:
    broken = HEAD_200 + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"
    assert failure(writes([broken], then_sleep=1.0)).kind == "ENGINE_ERROR"
    garbage = HEAD_200 + b"Connection: close\r\n\r\n" + token("a") + b"data: {\x00\n\n"
    assert failure(writes([garbage], then_sleep=1.0)).kind == "ENGINE_ERROR"


def test_silence_is_decode_timeout_before_and_after_the_headers() -> None:
    start = HEAD_200 + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(token("a"), 64)[:-5]
    for pieces in ([], [start]):
        error = failure(writes(pieces, then_sleep=2.0), stream_read_s=0.3)
        assert error.kind == "DECODE_TIMEOUT"


def test_slow_but_steady_stream_is_not_a_timeout() -> None:
    pieces = [HEAD_200 + b"Connection: close\r\n\r\n"] + [token("a")] * 12 + [frame(FINAL)]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for piece in pieces:
            writer.write(piece)
            await asyncio.sleep(0.05)

    assert len(asyncio.run(relayed(answer, stream_read_s=0.2))) == 13


def test_refused_connection_is_worker_reset() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        adapter = LlamaCppAdapter(AdapterSettings(f"http://127.0.0.1:{port}"))
        await adapter.relay(REQ, lambda chunk: True)

    with pytest.raises(EngineError) as caught:
        asyncio.run(scenario())
    assert caught.value.kind == "WORKER_RESET"


def endless(closed: asyncio.Event) -> Script:
    """A server that sends tokens until the client hangs up, then sets ``closed``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(HEAD_200 + b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while not reader.at_eof():
                writer.write(chunked(token("a"), 64)[:-5])
                await writer.drain()
                await asyncio.sleep(0.01)
        except ConnectionError:
            pass
        closed.set()

    return answer


def test_cancelling_the_relay_closes_the_connection() -> None:
    async def scenario() -> int:
        closed = asyncio.Event()
        got: list[StreamChunk] = []
        async with engine(endless(closed)) as url:
            adapter = LlamaCppAdapter(AdapterSettings(url))
            relay = asyncio.create_task(adapter.relay(REQ, lambda chunk: got.append(chunk) is None))
            while len(got) < 3:
                await asyncio.sleep(0.01)
            relay.cancel()
            with pytest.raises(asyncio.CancelledError):
                await relay
            await asyncio.wait_for(closed.wait(), 2.0)
        return len(got)

    assert asyncio.run(scenario()) >= 3


def test_take_refusing_a_token_stops_the_relay_and_closes_the_connection() -> None:
    async def scenario() -> list[StreamChunk]:
        closed = asyncio.Event()
        got: list[StreamChunk] = []
        async with engine(endless(closed)) as url:
            adapter = LlamaCppAdapter(AdapterSettings(url))
            await adapter.relay(REQ, lambda chunk: got.append(chunk) is None and len(got) < 2)
            await asyncio.wait_for(closed.wait(), 2.0)
        return got

    assert asyncio.run(scenario()) == [TokenChunk("a"), TokenChunk("a")]


def test_closing_the_pulled_stream_early_closes_the_connection() -> None:
    async def scenario() -> None:
        closed = asyncio.Event()
        async with engine(endless(closed)) as url:
            adapter = LlamaCppAdapter(AdapterSettings(url))
            stream = adapter.stream(REQ)
            assert await anext(stream) == TokenChunk("a")
            await stream.aclose()
            await asyncio.wait_for(closed.wait(), 2.0)

    asyncio.run(scenario())
