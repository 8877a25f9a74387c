"""The Triton adapter's wire handling against canned answers (ORCH-3057, ORCH-3058, ORCH-3032).

The frames, metadata, config and metrics below are copied from a real Triton 2.51.0
(nvidia-pytriton 0.7.0) serving ``scripts/engines/triton_smollm2.py``; failures a healthy
server does not produce on demand are served by a small local HTTP server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from orchestratord_server.adapters.base import (
    SAMPLER_PROFILE_V1,
    AdapterSettings,
    CompletionRequest,
    EngineError,
    FinalChunk,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.llamacpp import RANDOM_SEED
from orchestratord_server.adapters.registry import make_adapter
from orchestratord_server.adapters.sse import SseEvent
from orchestratord_server.adapters.triton import (
    TritonAdapter,
    chunks_from_event,
    condensed,
    metrics_url_for,
    pending_requests,
    request_inputs,
)

REQ = CompletionRequest(prompt="The capital of France is", max_tokens=8, seed=7, stop=("\n\n",))
TOKEN = b'data: {"model_name":"smollm2","model_version":"1","text_output":" Paris"}\n\n'
FINAL = (
    b'data: {"finish_reason":"length","model_name":"smollm2","model_version":"1","seed":7,'
    b'"text_output":"","tokens_in":5,"tokens_out":8}\n\n'
)
TRACEBACK_ERROR = {
    "error": 'Traceback (most recent call last):\n  File "x.py", line 1, in generate\n'
    "    body = completion_body(requests[0])\n"
    "InvalidRequest: max_tokens must be at least 1, not 0\n"
}
METADATA = {
    "name": "smollm2",
    "versions": ["1"],
    "platform": "python",
    "inputs": [
        {"name": "text_input", "datatype": "BYTES", "shape": [1]},
        {"name": "max_tokens", "datatype": "INT64", "shape": [1]},
    ],
    "outputs": [
        {"name": "text_output", "datatype": "BYTES", "shape": [1]},
        {"name": "finish_reason", "datatype": "BYTES", "shape": [1]},
    ],
}
TOKENIZER_METADATA = {
    "name": "smollm2_tokenize",
    "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
    "outputs": [{"name": "tokens_in", "datatype": "INT64", "shape": [1]}],
}
CONFIG = {
    "name": "smollm2",
    "backend": "python",
    "max_batch_size": 0,
    "instance_group": [{"name": "smollm2_0", "kind": "KIND_CPU", "count": 2, "gpus": []}],
    "parameters": {
        "workspace-path": {"string_value": "/tmp/ws"},
        "ctx_limit": {"string_value": "2048"},
    },
    "model_transaction_policy": {"decoupled": True},
}
SERVER = {"name": "triton", "version": "2.51.0", "extensions": ["model_repository"]}
METRICS = """\
# HELP nv_inference_pending_request_count Instantaneous number of pending requests.
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="smollm2_tokenize",version="1"} 4
nv_inference_pending_request_count{model="smollm2",version="1"} 1
nv_inference_pending_request_count{model="smollm2",version="2"} 0
"""


def event(data: bytes) -> SseEvent:
    return SseEvent(event="message", data=data.decode().removeprefix("data: ").strip())


# -- frames ----------------------------------------------------------------------------


def test_token_frames_become_token_chunks_verbatim() -> None:
    assert chunks_from_event(event(TOKEN)) == [TokenChunk(" Paris")]
    empty = b'data: {"model_name":"smollm2","model_version":"1","text_output":""}'
    assert chunks_from_event(event(empty)) == []


def test_final_frame_carries_reason_counts_and_seed() -> None:
    assert chunks_from_event(event(FINAL)) == [
        FinalChunk(finish_reason="length", tokens_in=5, tokens_out=8, seed=7)
    ]
    last_word = json.dumps(
        {
            "text_output": "!",
            "finish_reason": "stop",
            "tokens_in": 3,
            "tokens_out": 2,
            "seed": RANDOM_SEED,
        }
    )
    assert chunks_from_event(SseEvent("message", last_word)) == [
        TokenChunk("!"),
        FinalChunk(finish_reason="stop", tokens_in=3, tokens_out=2, seed=None),
    ]


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[1]",
        '{"text_output": 3}',
        '{"text_output": "", "finish_reason": "eos", "tokens_in": 1, "tokens_out": 1}',
        '{"text_output": "", "finish_reason": "stop", "tokens_in": -1, "tokens_out": 1}',
        '{"text_output": "", "finish_reason": "stop", "tokens_out": 1}',
    ],
)
def test_garbage_frames_are_internal(data: str) -> None:
    with pytest.raises(EngineError) as caught:
        chunks_from_event(SseEvent("message", data))
    assert caught.value.kind == "ENGINE_ERROR"


def test_error_frames_raise_the_models_message_without_the_traceback() -> None:
    with pytest.raises(EngineError) as caught:
        chunks_from_event(SseEvent("message", json.dumps(TRACEBACK_ERROR)))
    assert caught.value.message == "InvalidRequest: max_tokens must be at least 1, not 0"
    assert condensed("plain message") == "plain message"


# -- request, ports, metrics -----------------------------------------------------------


def test_inputs_pin_every_sampler_of_the_profile() -> None:
    """ORCH-3058: every profile field is an input, so the model cannot ignore one."""
    body = request_inputs(REQ)
    profile = SAMPLER_PROFILE_V1
    assert body == {
        "text_input": "The capital of France is",
        "max_tokens": 8,
        "seed": 7,
        "stop": ["\n\n"],
        "temperature": profile.temperature,
        "top_k": profile.top_k,
        "top_p": profile.top_p,
        "min_p": profile.min_p,
        "typical_p": profile.typical_p,
        "repetition_penalty": profile.repetition_penalty,
        "repeat_last_n": profile.repeat_last_n,
        "presence_penalty": profile.presence_penalty,
        "frequency_penalty": profile.frequency_penalty,
    }


def test_seed_maps_into_the_models_range_and_no_seed_or_stop_is_omitted() -> None:
    big = request_inputs(CompletionRequest(prompt="p", max_tokens=1, seed=2**63 - 1))
    assert 0 <= big["seed"] < RANDOM_SEED
    assert big["seed"] == (2**63 - 1) % RANDOM_SEED
    bare = request_inputs(CompletionRequest(prompt="p", max_tokens=1))
    assert "seed" not in bare and "stop" not in bare


def test_metrics_port_follows_tritons_layout() -> None:
    assert metrics_url_for("http://127.0.0.1:8000") == "http://127.0.0.1:8002"
    assert metrics_url_for("http://[::1]:9000/") == "http://[::1]:9002"
    assert metrics_url_for("http://triton") == "http://triton:82"


def test_pending_requests_sum_the_models_versions_only() -> None:
    assert pending_requests(METRICS, "smollm2") == 1
    assert pending_requests(METRICS, "smollm2_tokenize") == 4
    assert pending_requests(METRICS, "other") == 0


# -- against a local server ------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answer(payload: Any, status: int = 200) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload, status=status)

    return handle


def sse(body: list[bytes], status: int = 200) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=status, headers={"Content-Type": "text/event-stream; charset=utf-8"}
        )
        await response.prepare(request)
        for part in body:
            await response.write(part)
        return response

    return handle


def base_routes() -> dict[str, Handler]:
    return {
        "/v2": answer(SERVER),
        "/v2/models/smollm2": answer(METADATA),
        "/v2/models/smollm2/config": answer(CONFIG),
        "/v2/models/smollm2_tokenize": answer(TOKENIZER_METADATA),
        "/metrics": answer_text(METRICS),
    }


def answer_text(text: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(text=text)

    return handle


@asynccontextmanager
async def fake_triton(
    routes: dict[str, Handler], model: str | None = "smollm2"
) -> AsyncIterator[TritonAdapter]:
    """A local server answering ``routes`` (metrics on the same port) and an adapter on it."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    adapter = TritonAdapter(AdapterSettings(base_url=url, model=model), metrics_url=url)
    try:
        yield adapter
    finally:
        await adapter.close()
        await runner.cleanup()


def run(routes: dict[str, Handler], scenario: Callable[[TritonAdapter], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with fake_triton(routes) as adapter:
            return await scenario(adapter)

    return asyncio.run(main())


async def collect(adapter: TritonAdapter) -> list[StreamChunk]:
    return [chunk async for chunk in adapter.stream(REQ)]


def test_registry_builds_the_triton_adapter() -> None:
    adapter = make_adapter("triton", AdapterSettings(base_url="http://127.0.0.1:8000"))
    assert isinstance(adapter, TritonAdapter)
    assert adapter.metrics_url == "http://127.0.0.1:8002"


def test_props_from_server_metadata_and_model_config() -> None:
    """ORCH-3032/3057: version from /v2, slots from instance_group, ctx from parameters."""
    props = run(base_routes(), lambda adapter: adapter.props())
    assert (props.engine, props.engine_version, props.model_name) == ("triton", "2.51.0", "smollm2")
    assert (props.slots_total, props.ctx_limit) == (2, 2048)
    assert props.model_digest is None


@pytest.mark.parametrize(
    ("changes", "slots"),
    [
        ({"parameters": {**CONFIG["parameters"], "slots": {"string_value": "3"}}}, 3),
        ({"max_batch_size": 4}, 8),
    ],
)
def test_slots_are_published_or_counted_from_instances(changes: dict[str, Any], slots: int) -> None:
    """A published ``slots`` parameter wins; else instances (times the batch size)."""
    routes = {**base_routes(), "/v2/models/smollm2/config": answer({**CONFIG, **changes})}
    assert run(routes, lambda adapter: adapter.props()).slots_total == slots


def test_props_refuse_a_model_without_a_published_context() -> None:
    config = {**CONFIG, "parameters": {"workspace-path": {"string_value": "/tmp/ws"}}}
    routes = {**base_routes(), "/v2/models/smollm2/config": answer(config)}
    with pytest.raises(EngineError, match=r"parameters\.ctx_limit"):
        run(routes, lambda adapter: adapter.props())


def test_props_refuse_a_model_that_cannot_stream() -> None:
    config = {**CONFIG, "model_transaction_policy": {"decoupled": False}}
    routes = {**base_routes(), "/v2/models/smollm2/config": answer(config)}
    with pytest.raises(EngineError, match="not decoupled"):
        run(routes, lambda adapter: adapter.props())


def discover(routes: dict[str, Handler]) -> str:
    async def main() -> str:
        async with fake_triton(routes, model=None) as adapter:
            return await adapter.model()

    return asyncio.run(main())


def test_discovery_picks_the_one_ready_text_model() -> None:
    index = [
        {"name": "smollm2", "version": "1", "state": "READY"},
        {"name": "smollm2_tokenize", "version": "1", "state": "READY"},
        {"name": "old", "version": "1", "state": "UNAVAILABLE"},
    ]
    assert discover({**base_routes(), "/v2/repository/index": answer(index)}) == "smollm2"


def test_discovery_fails_clearly_when_it_cannot_choose_or_list() -> None:
    with pytest.raises(EngineError, match="found: none"):
        discover({**base_routes(), "/v2/repository/index": answer([])})
    refused = answer({"error": "This API is restricted"}, status=403)
    with pytest.raises(EngineError, match="configure the model name"):
        discover({**base_routes(), "/v2/repository/index": refused})


def test_stream_yields_tokens_then_one_final_chunk() -> None:
    routes = {**base_routes(), "/v2/models/smollm2/generate_stream": sse([TOKEN, TOKEN, FINAL])}
    assert run(routes, collect) == [
        TokenChunk(" Paris"),
        TokenChunk(" Paris"),
        FinalChunk(finish_reason="length", tokens_in=5, tokens_out=8, seed=7),
    ]


def test_stream_ending_before_its_final_response_is_worker_reset() -> None:
    routes = {**base_routes(), "/v2/models/smollm2/generate_stream": sse([TOKEN])}
    with pytest.raises(EngineError) as caught:
        run(routes, collect)
    assert caught.value.kind == "WORKER_RESET"


def test_error_frame_mid_stream_is_raised() -> None:
    error = b'data: {"error":"llama.cpp failed"}\n\n'
    routes = {**base_routes(), "/v2/models/smollm2/generate_stream": sse([TOKEN, error])}
    with pytest.raises(EngineError, match=r"llama\.cpp failed"):
        run(routes, collect)


def test_refused_request_is_invalid_params_with_the_models_message() -> None:
    """Triton answers a request refused at its first response with that status (400)."""
    short = b'data: {"error":"InvalidRequest: seed must be in 0..4294967294"}\n\n'
    routes = {**base_routes(), "/v2/models/smollm2/generate_stream": sse([short], status=400)}
    with pytest.raises(EngineError) as caught:
        run(routes, collect)
    assert caught.value.kind == "INVALID_PARAMS"
    assert caught.value.message == "InvalidRequest: seed must be in 0..4294967294"
    cut = b'data: {"error":"Traceback (most recent call last):\\n  File'
    routes = {**base_routes(), "/v2/models/smollm2/generate_stream": sse([cut], status=400)}
    with pytest.raises(EngineError) as caught:
        run(routes, collect)
    assert caught.value.kind == "INVALID_PARAMS"
    assert caught.value.message.startswith("data: ")
    missing = answer({"error": "expected number of inputs between 11 and 13"}, status=400)
    routes = {**base_routes(), "/v2/models/smollm2/generate_stream": missing}
    with pytest.raises(EngineError) as caught:
        run(routes, collect)
    assert caught.value.kind == "INVALID_PARAMS"


def test_busy_slots_are_pending_requests_plus_open_streams() -> None:
    async def scenario(adapter: TritonAdapter) -> tuple[int, int, int]:
        idle = await adapter.slots()
        stream = adapter.stream(REQ)
        await anext(stream)
        during = await adapter.slots()
        await stream.aclose()
        after = await adapter.slots()
        assert idle.total == during.total == after.total == 2
        return idle.busy, during.busy, after.busy

    routes = {**base_routes(), "/v2/models/smollm2/generate_stream": sse([TOKEN, TOKEN, FINAL])}
    assert run(routes, scenario) == (1, 2, 1)


def test_count_tokens_uses_the_tokenizer_model() -> None:
    routes = {
        **base_routes(),
        "/v2/models/smollm2_tokenize/generate": answer(
            {"model_name": "smollm2_tokenize", "model_version": "1", "tokens_in": 5}
        ),
    }
    assert run(routes, lambda adapter: adapter.count_tokens("The capital of France is")) == 5


def test_count_tokens_without_a_tokenizer_model_says_so() -> None:
    routes = base_routes()
    routes["/v2/models/smollm2_tokenize"] = answer(
        {"error": "Request for unknown model: 'smollm2_tokenize' is not found"}, status=400
    )
    with pytest.raises(EngineError, match="no tokenizer model smollm2_tokenize") as caught:
        run(routes, lambda adapter: adapter.count_tokens("hi"))
    assert caught.value.kind == "ENGINE_ERROR"


def test_health_needs_the_server_and_the_model() -> None:
    ok = answer({})
    routes = {"/v2/health/ready": ok, "/v2/health/live": ok, "/v2/models/smollm2/ready": ok}
    health = run(routes, lambda adapter: adapter.health())
    assert (health.live, health.ready) == (True, True)
    routes["/v2/models/smollm2/ready"] = answer({"error": "not ready"}, status=400)
    health = run(routes, lambda adapter: adapter.health())
    assert (health.live, health.ready) == (True, False)
    assert "model smollm2" in health.detail
