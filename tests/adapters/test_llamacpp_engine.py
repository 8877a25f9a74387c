"""The llama.cpp adapter against a real llama.cpp server on the tiny model.

Proves ORCH-3054 (health, props, slots, streaming completion, cancel, metrics scrape),
ORCH-3019 (slots reported for placement), ORCH-3032 (engine_version and model_digest),
ORCH-3045 and ORCH-3058 (same seed and sampler profile, same tokens), ORCH-3017 (a
cancelled stream frees its slot) and ORCH-3015 (prompt token counts come from the
engine's own tokenizer).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from orchestratord_server.adapters.base import (
    AdapterSettings,
    CompletionRequest,
    EngineAdapter,
    EngineError,
    EngineProps,
    FinalChunk,
    SlotUsage,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.llamacpp import LlamaCppAdapter, completion_body
from orchestratord_server.engines.llamacpp_process import LlamaCppProcess
from tests.support.llamacpp import adapter_for, llamacpp_server

pytestmark = pytest.mark.integration

PROMPT = "The orchestrator said:"


async def collect(adapter: LlamaCppAdapter, req: CompletionRequest) -> list[StreamChunk]:
    return [chunk async for chunk in adapter.stream(req)]


def text_of(chunks: list[StreamChunk]) -> str:
    return "".join(chunk.text for chunk in chunks if isinstance(chunk, TokenChunk))


def final_of(chunks: list[StreamChunk]) -> FinalChunk:
    assert isinstance(chunks[-1], FinalChunk)
    assert not any(isinstance(chunk, FinalChunk) for chunk in chunks[:-1])
    return chunks[-1]


async def non_streamed(adapter: LlamaCppAdapter, req: CompletionRequest) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            adapter.base_url + "/completion", json=completion_body(req, stream=False)
        ) as response,
    ):
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


def test_orch_3054_orch_3032_health_props_and_slots(tiny_engine: LlamaCppProcess) -> None:
    async def scenario() -> EngineProps:
        async with adapter_for(tiny_engine) as adapter:
            assert isinstance(adapter, EngineAdapter)
            health = await adapter.health()
            assert (health.live, health.ready) == (True, True)
            props = await adapter.props()
            assert await adapter.slots() == SlotUsage(total=2, busy=0)
            return props

    props = asyncio.run(scenario())
    config = tiny_engine.config
    expected_digest = hashlib.sha256(config.model_path.read_bytes()).hexdigest()
    assert props.engine == "llamacpp"
    assert props.slots_total == 2
    assert props.ctx_limit == config.n_ctx // config.n_parallel
    assert props.engine_version == tiny_engine.engine_version
    assert props.engine_version.startswith("xllamacpp-")
    assert props.model_digest == f"sha256:{expected_digest}"
    assert props.model_name == config.model_path.name
    assert props.model_path == str(config.model_path)


def test_build_info_is_the_version_when_nothing_overrides_it(
    tiny_engine: LlamaCppProcess,
) -> None:
    async def scenario() -> tuple[str, str | None]:
        adapter = LlamaCppAdapter(AdapterSettings(tiny_engine.base_url))
        try:
            props = await adapter.props()
        finally:
            await adapter.close()
        return props.engine_version, props.model_digest

    version, digest = asyncio.run(scenario())
    assert version == "b0-unknown"  # what the xllamacpp wheel's llama.cpp calls itself
    assert digest is None


def test_count_tokens_uses_the_engine_tokenizer(tiny_engine: LlamaCppProcess) -> None:
    async def scenario() -> list[int]:
        async with adapter_for(tiny_engine) as adapter:
            texts = ["Hello world", " the", "", "ab" * 50]
            return [await adapter.count_tokens(text) for text in texts]

    # The tiny vocabulary is bytes plus a few merges: " the" is one token.
    assert asyncio.run(scenario()) == [11, 1, 0, 100]


def test_orch_3054_orch_3058_stream_text_equals_the_non_streamed_text(
    tiny_engine: LlamaCppProcess,
) -> None:
    req = CompletionRequest(prompt=PROMPT, max_tokens=64, seed=1234)

    async def scenario() -> tuple[list[StreamChunk], dict[str, Any], int]:
        async with adapter_for(tiny_engine) as adapter:
            chunks = await collect(adapter, req)
            return chunks, await non_streamed(adapter, req), await adapter.count_tokens(PROMPT)

    chunks, whole, prompt_tokens = asyncio.run(scenario())
    final = final_of(chunks)
    assert text_of(chunks) == whole["content"]
    assert final == FinalChunk(
        finish_reason="length", tokens_in=prompt_tokens, tokens_out=64, seed=1234
    )
    # Every token of the tiny model is printable ASCII: one frame, one chunk per token.
    assert len(chunks) - 1 == 64


def test_length_when_max_tokens_is_reached(tiny_engine: LlamaCppProcess) -> None:
    async def scenario() -> list[StreamChunk]:
        async with adapter_for(tiny_engine) as adapter:
            return await collect(adapter, CompletionRequest(prompt=PROMPT, max_tokens=3, seed=5))

    chunks = asyncio.run(scenario())
    assert final_of(chunks).finish_reason == "length"
    assert final_of(chunks).tokens_out == 3
    assert len([chunk for chunk in chunks if isinstance(chunk, TokenChunk)]) == 3


def test_stop_word_ends_with_stop_and_is_not_emitted(tiny_engine: LlamaCppProcess) -> None:
    free = CompletionRequest(prompt=PROMPT, max_tokens=48, seed=77)

    async def scenario() -> tuple[str, list[StreamChunk], str, CompletionRequest]:
        async with adapter_for(tiny_engine) as adapter:
            text = text_of(await collect(adapter, free))
            stopped = replace(free, stop=(text[20:23],))
            chunks = await collect(adapter, stopped)
            return text, chunks, (await non_streamed(adapter, stopped))["content"], stopped

    text, chunks, whole, stopped = asyncio.run(scenario())
    expected = text[: text.find(stopped.stop[0])]
    assert text_of(chunks) == expected == whole
    assert final_of(chunks).finish_reason == "stop"


def test_same_seed_same_tokens_and_another_seed_differs(tiny_engine: LlamaCppProcess) -> None:
    req = CompletionRequest(prompt=PROMPT, max_tokens=48, seed=2**40 + 3)

    async def scenario() -> list[str]:
        async with adapter_for(tiny_engine) as adapter:
            first = text_of(await collect(adapter, req))
            second = text_of(await collect(adapter, req))
            together = await asyncio.gather(collect(adapter, req), collect(adapter, req))
            other = text_of(await collect(adapter, replace(req, seed=9)))
            return [first, second, *(text_of(chunks) for chunks in together), other]

    first, second, parallel_a, parallel_b, other = asyncio.run(scenario())
    assert first == second == parallel_a == parallel_b
    assert other != first


def test_seed_is_mapped_into_the_engine_range(tiny_engine: LlamaCppProcess) -> None:
    big = CompletionRequest(prompt=PROMPT, max_tokens=16, seed=2**32 - 1 + 41)
    small = replace(big, seed=41)

    async def scenario() -> tuple[list[StreamChunk], list[StreamChunk]]:
        async with adapter_for(tiny_engine) as adapter:
            return await collect(adapter, big), await collect(adapter, small)

    big_chunks, small_chunks = asyncio.run(scenario())
    assert text_of(big_chunks) == text_of(small_chunks)
    assert final_of(big_chunks).seed == final_of(small_chunks).seed == 41


def _decode_total(metrics: str) -> float:
    match = re.search(r"^llamacpp:n_decode_total (\S+)$", metrics, re.MULTILINE)
    assert match is not None, metrics
    return float(match.group(1))


def test_closing_the_stream_cancels_and_frees_the_slot(tiny_engine: LlamaCppProcess) -> None:
    max_tokens = 4000

    async def scenario() -> tuple[float, float, float, SlotUsage, str]:
        async with adapter_for(tiny_engine) as adapter:
            before = _decode_total(await adapter.metrics_text())
            stream = adapter.stream(CompletionRequest(prompt=PROMPT, max_tokens=max_tokens, seed=1))
            for _ in range(3):
                assert isinstance(await anext(stream), TokenChunk)
            await stream.aclose()
            closed_at = time.monotonic()
            while (usage := await adapter.slots()).busy and time.monotonic() - closed_at < 2.0:
                await asyncio.sleep(0.01)
            idle_after = time.monotonic() - closed_at
            after = _decode_total(await adapter.metrics_text())
            chunks = await collect(adapter, CompletionRequest(prompt=PROMPT, max_tokens=4, seed=1))
            return before, after, idle_after, usage, text_of(chunks)

    before, after, idle_after, usage, text_after = asyncio.run(scenario())
    assert usage.busy == 0, f"slot still busy {idle_after:.2f}s after the stream was closed"
    assert after - before < max_tokens / 2, "the engine kept generating after the cancel"
    assert len(text_after) == 4


def test_engine_400_is_invalid_params(tiny_engine: LlamaCppProcess) -> None:
    too_long = "ab" * (tiny_engine.config.n_ctx // tiny_engine.config.n_parallel)

    async def scenario() -> None:
        async with adapter_for(tiny_engine) as adapter:
            await collect(adapter, CompletionRequest(prompt=too_long, max_tokens=4))

    with pytest.raises(EngineError) as caught:
        asyncio.run(scenario())
    assert caught.value.kind == "INVALID_PARAMS"
    assert caught.value.status == 400
    assert "context" in caught.value.message


def test_metrics_text_is_the_engine_exposition(tiny_engine: LlamaCppProcess) -> None:
    async def scenario() -> str:
        async with adapter_for(tiny_engine) as adapter:
            return await adapter.metrics_text()

    metrics = asyncio.run(scenario())
    assert "# TYPE llamacpp:tokens_predicted_total counter" in metrics
    assert re.search(r"^llamacpp:requests_processing \d", metrics, re.MULTILINE)


def test_two_replicas_give_the_same_tokens_for_a_seed(tiny_engine: LlamaCppProcess) -> None:
    """ORCH-3045 within a replica set: another process, another slot count, same tokens."""
    req = CompletionRequest(prompt=PROMPT, max_tokens=64, seed=31337)

    async def run_on(process: LlamaCppProcess) -> str:
        async with adapter_for(process) as adapter:
            return text_of(await collect(adapter, req))

    with llamacpp_server(tiny_engine.config.model_path, slots=1) as replica:
        on_replica = asyncio.run(run_on(replica))
    assert asyncio.run(run_on(tiny_engine)) == on_replica
