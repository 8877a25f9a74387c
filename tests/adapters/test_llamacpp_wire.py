"""The llama.cpp adapter's wire handling, without an engine (ORCH-3054, ORCH-3058).

Frame-to-chunk mapping, the request body that pins the sampler profile, the seed
mapping, and how transport failures become typed errors. Failures a healthy engine never
produces on demand (garbage frames, a stall, a truncated stream, an error frame) are
served by a small local HTTP server.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from orchestrator_core import RETRIABLE
from orchestratord_server.adapters.base import (
    SAMPLER_PROFILE_V1,
    AdapterSettings,
    CompletionRequest,
    EngineError,
    FinalChunk,
    StreamChunk,
    TokenChunk,
    sampler_profile,
)
from orchestratord_server.adapters.http import HttpTimeouts, kind_for_status
from orchestratord_server.adapters.llamacpp import (
    RANDOM_SEED,
    SAMPLER_ORDER,
    LlamaCppAdapter,
    chunks_from_event,
    completion_body,
    engine_seed,
)
from orchestratord_server.adapters.sse import SseEvent

REQ = CompletionRequest(prompt="hi", max_tokens=8, seed=3)


def frame(payload: dict[str, Any]) -> SseEvent:
    return SseEvent(event="message", data=json.dumps(payload))


def final_frame(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "content": "",
        "stop": True,
        "stop_type": "limit",
        "tokens_predicted": 8,
        "tokens_evaluated": 2,
        "generation_settings": {"seed": 3},
    }
    payload.update(fields)
    return payload


def test_token_frames_become_token_chunks_verbatim() -> None:
    assert chunks_from_event(frame({"content": " ü\n", "stop": False})) == [TokenChunk(" ü\n")]
    assert chunks_from_event(frame({"content": "", "stop": False, "prompt_progress": {}})) == []


@pytest.mark.parametrize(
    ("stop_type", "reason"), [("limit", "length"), ("eos", "stop"), ("word", "stop")]
)
def test_final_frame_maps_stop_type(stop_type: str, reason: str) -> None:
    assert chunks_from_event(frame(final_frame(stop_type=stop_type))) == [
        FinalChunk(finish_reason=reason, tokens_in=2, tokens_out=8, seed=3)  # type: ignore[arg-type]
    ]


def test_final_frame_text_comes_before_the_final_chunk() -> None:
    chunks = chunks_from_event(frame(final_frame(content="tail")))
    assert chunks[0] == TokenChunk("tail")
    assert isinstance(chunks[1], FinalChunk)


def test_final_frame_of_older_builds_uses_the_stopped_flags() -> None:
    old = final_frame(stopped_eos=True)
    del old["stop_type"]
    assert chunks_from_event(frame(old))[0] == FinalChunk("stop", 2, 8, 3)


def test_random_seed_is_reported_as_none() -> None:
    final = chunks_from_event(frame(final_frame(generation_settings={"seed": RANDOM_SEED})))
    assert final == [FinalChunk("length", 2, 8, None)]


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        "[1, 2]",
        json.dumps({"content": 5, "stop": False}),
        json.dumps({"content": "a", "stop": "yes"}),
        json.dumps(final_frame(stop_type="none")),
        json.dumps(final_frame(tokens_predicted=-1)),
        json.dumps(final_frame(tokens_evaluated=True)),
    ],
)
def test_garbage_frames_are_retriable_engine_errors(data: str) -> None:
    """An engine's unexpected frame (an unknown `stop_type` was once a non-retriable
    INTERNAL) is a retriable ENGINE_ERROR whose message carries no engine internals."""
    with pytest.raises(EngineError) as caught:
        chunks_from_event(SseEvent(event="message", data=data))
    assert caught.value.kind == "ENGINE_ERROR"
    assert caught.value.kind in RETRIABLE
    assert data not in caught.value.message


def test_error_frames_raise_by_their_code() -> None:
    bad = SseEvent(event="error", data=json.dumps({"code": 400, "message": "bad"}))
    with pytest.raises(EngineError) as caught:
        chunks_from_event(bad)
    assert (caught.value.kind, caught.value.status, caught.value.message) == (
        "INVALID_PARAMS",
        400,
        "bad",
    )
    crashed = frame({"error": {"code": 500, "message": "decode failed"}})
    with pytest.raises(EngineError) as caught:
        chunks_from_event(crashed)
    assert caught.value.kind == "WORKER_RESET"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "INVALID_PARAMS"),
        (413, "INVALID_PARAMS"),
        (404, "ENGINE_ERROR"),
        (501, "ENGINE_ERROR"),
        (500, "WORKER_RESET"),
        (503, "WORKER_RESET"),
    ],
)
def test_status_mapping(status: int, kind: str) -> None:
    assert kind_for_status(status) == kind


def test_body_pins_every_sampler_of_profile_v1() -> None:
    body = completion_body(REQ, stream=True)
    assert body["prompt"] == "hi"
    assert body["n_predict"] == 8
    assert body["stream"] is True
    assert body["seed"] == 3
    assert body["cache_prompt"] is False
    assert body["samplers"] == list(SAMPLER_ORDER)
    assert (body["temperature"], body["top_k"], body["top_p"], body["min_p"]) == (
        0.8,
        40,
        0.95,
        0.05,
    )
    assert (body["typical_p"], body["repeat_penalty"], body["repeat_last_n"]) == (1.0, 1.0, 64)
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.0, 0.0)
    off = ("dynatemp_range", "xtc_probability", "dry_multiplier", "mirostat", "n_probs")
    assert all(body[key] == 0 for key in off)
    assert body["top_n_sigma"] == -1.0
    assert "seed" not in completion_body(CompletionRequest("hi", 8), stream=False)


def test_request_refuses_a_budget_the_engine_would_read_as_unlimited() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        CompletionRequest(prompt="hi", max_tokens=-1)
    with pytest.raises(ValueError, match="stop"):
        CompletionRequest(prompt="hi", max_tokens=4, stop=("",))


def test_sampler_profiles_by_version() -> None:
    assert sampler_profile("v1") is SAMPLER_PROFILE_V1
    with pytest.raises(ValueError, match="unknown sampler profile"):
        sampler_profile("v0")


@pytest.mark.parametrize(
    ("seed", "expected"),
    [
        (0, 0),
        (41, 41),
        (RANDOM_SEED, 0),
        (RANDOM_SEED + 41, 41),
        (2**63 - 1, (2**63 - 1) % RANDOM_SEED),
        (-1, RANDOM_SEED - 1),
    ],
)
def test_engine_seed_never_asks_for_a_random_seed(seed: int, expected: int) -> None:
    assert engine_seed(seed) == expected
    assert 0 <= engine_seed(seed) < RANDOM_SEED


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def fake_engine(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """A local HTTP server answering ``routes`` (path -> handler); yields its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def sse_handler(body: list[bytes], then_sleep: float = 0.0) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for part in body:
            await response.write(part)
        await asyncio.sleep(then_sleep)
        return response

    return handle


async def run_stream(
    routes: dict[str, Handler], timeouts: HttpTimeouts | None = None
) -> list[StreamChunk]:
    async with fake_engine(routes) as url:
        adapter = LlamaCppAdapter(AdapterSettings(url), timeouts=timeouts or HttpTimeouts())
        try:
            return [chunk async for chunk in adapter.stream(REQ)]
        finally:
            await adapter.close()


def stream_error(routes: dict[str, Handler], **timeouts: float) -> EngineError:
    with pytest.raises(EngineError) as caught:
        asyncio.run(run_stream(routes, HttpTimeouts(**timeouts)))
    return caught.value


TOKEN = b'data: {"content":"a","stop":false}\n\n'


def test_frames_split_anywhere_still_stream() -> None:
    whole = TOKEN + b": ping\r\n\r\n" + b"data: " + json.dumps(final_frame()).encode() + b"\r\n\r\n"
    parts = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    chunks = asyncio.run(run_stream({"/completion": sse_handler(parts)}))
    assert chunks == [TokenChunk("a"), FinalChunk("length", 2, 8, 3)]


def test_stall_is_decode_timeout() -> None:
    error = stream_error({"/completion": sse_handler([TOKEN], then_sleep=1.0)}, stream_read_s=0.2)
    assert error.kind == "DECODE_TIMEOUT"


def test_stream_ending_without_final_frame_is_worker_reset() -> None:
    error = stream_error({"/completion": sse_handler([TOKEN, TOKEN])})
    assert error.kind == "WORKER_RESET"


def test_garbage_frame_is_internal() -> None:
    error = stream_error({"/completion": sse_handler([TOKEN, b"data: {\x00garbage\n\n"])})
    assert error.kind == "ENGINE_ERROR"


def test_error_frame_mid_stream_is_raised() -> None:
    failing = b'error: {"code":500,"message":"out of memory","type":"server_error"}\n\n'
    error = stream_error({"/completion": sse_handler([TOKEN, failing])})
    assert (error.kind, error.status, error.message) == ("WORKER_RESET", 500, "out of memory")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_refused_connection_is_worker_reset() -> None:
    async def scenario() -> None:
        adapter = LlamaCppAdapter(AdapterSettings(f"http://127.0.0.1:{closed_port()}"))
        try:
            assert not (await adapter.health()).live
            await adapter.slots()
        finally:
            await adapter.close()

    with pytest.raises(EngineError) as caught:
        asyncio.run(scenario())
    assert caught.value.kind == "WORKER_RESET"


def test_loading_engine_is_live_but_not_ready() -> None:
    async def loading(request: web.Request) -> web.StreamResponse:
        body = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
        return web.json_response(body, status=503)

    async def scenario() -> tuple[bool, bool, str]:
        async with fake_engine({"/health": loading}) as url:
            adapter = LlamaCppAdapter(AdapterSettings(url))
            try:
                health = await adapter.health()
            finally:
                await adapter.close()
        return health.live, health.ready, health.detail

    assert asyncio.run(scenario()) == (True, False, "HTTP 503: Loading model")


def test_disabled_endpoint_is_internal_with_the_engine_message() -> None:
    async def disabled(request: web.Request) -> web.StreamResponse:
        body = {"error": {"code": 501, "message": "This server does not support slots."}}
        return web.json_response(body, status=501)

    async def scenario() -> None:
        async with fake_engine({"/slots": disabled}) as url:
            adapter = LlamaCppAdapter(AdapterSettings(url))
            try:
                await adapter.slots()
            finally:
                await adapter.close()

    with pytest.raises(EngineError) as caught:
        asyncio.run(scenario())
    assert (caught.value.kind, caught.value.status) == ("ENGINE_ERROR", 501)
    assert "does not support slots" in caught.value.message
