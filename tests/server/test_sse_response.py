"""A task stream's HTTP response (`sse_response.TranscriptResponse`, ORCH-2002): behind the
daemon's HTTP protocol it parks on the transcript, so each loop turn's frames reach the
socket in one chunk, and it learns of a disconnect from the connection; under another
server it watches `receive`. Either way the client gets every frame, in order, then the
end of the body, and the stream's end is reported once."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from orchestratord_server.config import ServerConfig
from orchestratord_server.http_protocol import protocol_class
from orchestratord_server.sse_response import TranscriptResponse, raw_headers
from orchestratord_server.transcripts import Transcript, sse_frame, token_frame

HEADERS = raw_headers({"Cache-Control": "no-cache"})
END = sse_frame("end", {"tokens_out": 2, "decode_ms": 1})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _serving(transcript: Transcript, ended: list[str]) -> AsyncIterator[int]:
    """uvicorn with the daemon's protocol, answering every request with a stream of
    `transcript`; yields the port."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            response = TranscriptResponse(
                transcript, 0, HEADERS, on_end=lambda: ended.append("end")
            )
            await response(scope, receive, send)

    port = _free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        http=protocol_class(ServerConfig(), 100),
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await serving


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def _read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        data += await asyncio.wait_for(reader.read(65536), 5)
    return data


def test_frames_of_one_loop_turn_reach_the_socket_in_one_chunk_then_the_body_ends() -> None:
    async def scenario() -> tuple[bytes, bytes, Transcript, list[str]]:
        transcript = Transcript()
        ended: list[str] = []
        async with _serving(transcript, ended) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await _read_until(reader, b"\r\n\r\n")
            await _until(lambda: transcript.subscribers == 1)
            transcript.append(token_frame("a", 0))
            transcript.append(token_frame("b", 1))
            body = await _read_until(reader, b"\n\n")
            await asyncio.sleep(0.05)
            transcript.close(END)
            body += await _read_until(reader, b"0\r\n\r\n")
            writer.close()
        return head, body, transcript, ended

    head, body, transcript, ended = asyncio.run(scenario())
    assert b"content-type: text/event-stream; charset=utf-8" in head
    assert b"transfer-encoding: chunked" in head
    tokens = transcript.frames[0] + transcript.frames[1]
    assert body == (
        b"%x\r\n%b\r\n" % (len(tokens), tokens)
        + b"%x\r\n%b\r\n" % (len(transcript.frames[2]), transcript.frames[2])
        + b"0\r\n\r\n"
    )
    assert ended == ["end"]


def test_a_client_that_leaves_ends_the_stream_at_once_with_nothing_waiting_on_receive() -> None:
    async def scenario() -> tuple[list[str], int, int]:
        transcript = Transcript()
        ended: list[str] = []
        async with _serving(transcript, ended) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            await _read_until(reader, b"\r\n\r\n")
            await _until(lambda: transcript.subscribers == 1)
            tasks = len(asyncio.all_tasks())
            writer.close()
            await _until(lambda: bool(ended))
            subscribers = transcript.subscribers
        return ended, subscribers, tasks

    ended, subscribers, tasks = asyncio.run(scenario())
    assert ended == ["end"] and subscribers == 0
    # this test, the server, its connection's task: no helper task per stream
    assert tasks == 3


def test_under_another_server_every_frame_arrives_and_a_disconnect_ends_the_stream() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], list[str], list[str]]:
        transcript = Transcript()
        sent: list[dict[str, Any]] = []
        ended: list[str] = []
        gone = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET"}
        response = TranscriptResponse(transcript, 0, HEADERS, on_end=lambda: ended.append("1"))
        streaming = asyncio.create_task(response(scope, receive, send))
        await asyncio.sleep(0)
        transcript.append(token_frame("a", 0))
        transcript.close(END)
        await asyncio.wait_for(streaming, 5)

        left: list[str] = []
        waiting = TranscriptResponse(Transcript(), 0, HEADERS, on_end=lambda: left.append("1"))
        abandoned = asyncio.create_task(waiting(scope, receive, lambda _m: asyncio.sleep(0)))
        await asyncio.sleep(0)
        gone.set()
        await asyncio.wait_for(abandoned, 5)
        return sent, ended, left

    sent, ended, left = asyncio.run(scenario())
    bodies = [m.get("body") for m in sent if m["type"] == "http.response.body"]
    assert sent[0]["type"] == "http.response.start"
    assert b"".join(b for b in bodies if b) == b"id: 0\n" + token_frame("a", 0) + b"id: 1\n" + END
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert ended == ["1"] and left == ["1"]
