"""The Triton adapter against a real Triton 2.51.0 serving SmolLM2 (ORCH-3057, 3058, 3032).

One model server for the module (``scripts/engines/triton_smollm2.py``: pytriton's Triton
with a decoupled model that runs the real SmolLM2 through llama.cpp). Outputs are
compared within this run only, never against fixed text (another llama.cpp build may
sample differently).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestratord_server.adapters.base import (
    SAMPLER_PROFILE_V1,
    CompletionRequest,
    EngineError,
    FinalChunk,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.adapters.digest import sha256_file
from orchestratord_server.engines.models import smollm2_gguf_path
from tests.integration.support import wait_until
from tests.support.triton import (
    CTX_PER_SLOT,
    SLOTS,
    TRITON_VERSION,
    TritonServer,
    adapter_for,
    triton_server,
)

pytestmark = pytest.mark.integration

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with triton_server(tmp_path_factory.mktemp("triton")) as running:
        yield running


async def completion(server: TritonServer, req: CompletionRequest) -> list[StreamChunk]:
    adapter = adapter_for(server)
    try:
        return [chunk async for chunk in adapter.stream(req)]
    finally:
        await adapter.close()


def text_of(chunks: list[StreamChunk]) -> str:
    return "".join(chunk.text for chunk in chunks if isinstance(chunk, TokenChunk))


def test_orch_3057_orch_3032_health_and_props(server: TritonServer) -> None:
    """ORCH-3057/3032: ready, Triton's version, slots and context as the model publishes."""

    async def scenario() -> None:
        adapter = adapter_for(server)
        try:
            health = await adapter.health()
            assert (health.live, health.ready) == (True, True), health.detail
            props = await adapter.props()
        finally:
            await adapter.close()
        assert props.engine == "triton"
        assert props.engine_version == TRITON_VERSION
        assert (props.slots_total, props.ctx_limit) == (SLOTS, CTX_PER_SLOT)
        assert props.model_name == "smollm2"
        assert props.model_digest == sha256_file(smollm2_gguf_path())

    asyncio.run(scenario())


def test_orch_3057_streamed_completion_has_the_engines_text_and_counts(
    server: TritonServer,
) -> None:
    """Token chunks, then one final chunk with the engine's own counts (ORCH-3057)."""

    async def scenario() -> tuple[list[StreamChunk], int]:
        adapter = adapter_for(server)
        try:
            prompt_tokens = await adapter.count_tokens(PROMPT)
        finally:
            await adapter.close()
        return await completion(server, CompletionRequest(PROMPT, 12, seed=11)), prompt_tokens

    chunks, prompt_tokens = asyncio.run(scenario())
    final = chunks[-1]
    assert isinstance(final, FinalChunk)
    assert all(isinstance(chunk, TokenChunk) and chunk.text for chunk in chunks[:-1])
    assert final.seed == 11
    assert final.tokens_in == prompt_tokens > 0
    if final.finish_reason == "length":
        assert final.tokens_out == 12
    assert 0 < len(chunks) - 1 <= final.tokens_out
    assert text_of(chunks).strip()


def test_same_seed_same_text(server: TritonServer) -> None:
    """ORCH-3045/3058: the same prompt, profile and seed give the same tokens."""
    req = CompletionRequest("Once upon a time", 24, seed=424242)
    first = asyncio.run(completion(server, req))
    second = asyncio.run(completion(server, req))
    assert text_of(first) == text_of(second)
    assert first[-1] == second[-1]


def test_stop_string_ends_the_stream(server: TritonServer) -> None:
    """A stop string found in the output ends it with ``stop``, the string left out."""
    req = CompletionRequest("Count: one, two, three, four,", 48, seed=5)
    free = text_of(asyncio.run(completion(server, req)))
    word = free.split()[1] if len(free.split()) > 1 else free.strip()
    stopped = asyncio.run(
        completion(server, CompletionRequest(req.prompt, 48, seed=5, stop=(word,)))
    )
    final = stopped[-1]
    assert isinstance(final, FinalChunk) and final.finish_reason == "stop"
    assert word not in text_of(stopped)
    assert free.startswith(text_of(stopped))


def released_slots(log: Path) -> tuple[int, int]:
    """llama.cpp's count of tasks started and of slots released, from the server log."""
    text = log.read_text(encoding="utf-8", errors="replace")
    return len(re.findall(r"processing task", text)), len(re.findall(r"stop processing", text))


def test_cancel_mid_stream_frees_the_slot(server: TritonServer) -> None:
    """ORCH-3017: closing the stream cancels the request; the engine's slot comes free.

    pytriton 0.7.0 does not pass Triton's cancellation to the model, so the generation
    runs to its ``max_tokens``; the slot is free once it has.
    """

    async def cancel() -> list[StreamChunk]:
        adapter = adapter_for(server)
        got: list[StreamChunk] = []
        try:
            stream = adapter.stream(CompletionRequest("Once upon a time", 96, seed=9))
            async for chunk in stream:
                got.append(chunk)
                if len(got) == 3:
                    break
            await stream.aclose()
            assert (await adapter.slots()).busy == 0
        finally:
            await adapter.close()
        return got

    got = asyncio.run(cancel())
    assert len(got) == 3 and not any(isinstance(chunk, FinalChunk) for chunk in got)
    wait_until(
        lambda: (lambda started, released: started == released)(*released_slots(server.log_path)),
        timeout=60.0,
        what="llama.cpp to release every slot",
    )
    after = asyncio.run(completion(server, CompletionRequest(PROMPT, 4, seed=1)))
    assert isinstance(after[-1], FinalChunk)


def test_bad_request_is_invalid_params(server: TritonServer) -> None:
    """A value the engine refuses comes back as INVALID_PARAMS, not as a broken stream."""
    bad = dataclasses.replace(SAMPLER_PROFILE_V1, version="bad", repeat_last_n=-2)
    with pytest.raises(EngineError) as caught:
        asyncio.run(completion(server, CompletionRequest(PROMPT, 4, seed=1, sampler=bad)))
    assert caught.value.kind == "INVALID_PARAMS"
    assert "repeat_last_n" in caught.value.message
