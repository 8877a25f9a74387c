"""The vLLM adapter's embeddings against a real pooling vLLM server (``--runner pooling``).

A pooling server serves ``/v1/embeddings`` and no completions, so it is a second server,
started once for this module: SmolLM2's last-token pooling gives 576 floats per input,
L2-normalised, the same on every call.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import openai
import pytest

from orchestratord_server.adapters.base import (
    AdapterSettings,
    Embeddings,
    EngineHealth,
    EngineProps,
    SlotUsage,
)
from orchestratord_server.adapters.vllm import VllmAdapter
from tests.engines.vllm.test_vllm_daemon import vllm_pool
from tests.integration.support import DATA_KEY, daemon_config, running_daemon
from tests.support.vllm import MAX_MODEL_LEN, POOLING_ARGS, SERVED_MODEL, VllmServer, vllm_server

pytestmark = pytest.mark.integration

#: SmolLM2-135M's hidden size.
DIMENSION = 576
INPUTS = ["hello world", "a cat", "The quick brown fox jumps over the lazy dog."]
T = TypeVar("T")


@pytest.fixture(scope="module")
def pooling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """A pooling vLLM server on SmolLM2 for this module; stopped with all its processes."""
    workdir = tmp_path_factory.mktemp("vllm-pooling")
    with vllm_server(workdir, extra_args=POOLING_ARGS) as server:
        print(f"\nvLLM (pooling) ready after {server.startup_s:.1f} s")
        yield server


def with_adapter(server: VllmServer, use: Callable[[VllmAdapter], Awaitable[T]]) -> T:
    """Run ``use`` with a fresh adapter (model name discovered) in its own event loop."""

    async def scenario() -> T:
        adapter = VllmAdapter(AdapterSettings(server.base_url))
        try:
            return await use(adapter)
        finally:
            await adapter.close()

    return asyncio.run(scenario())


def test_a_batch_of_three_embeds_deterministically(pooling: VllmServer) -> None:
    """One vector per input, in input order, 576 floats of unit length, and the same
    vectors on a second call; a single input gets the vector it gets in the batch."""

    async def use(adapter: VllmAdapter) -> tuple[Embeddings, Embeddings, Embeddings, float]:
        began = time.monotonic()
        first = await adapter.embed(INPUTS)
        took = time.monotonic() - began
        return first, await adapter.embed(INPUTS), await adapter.embed(INPUTS[1:2]), took

    first, second, single, took = with_adapter(pooling, use)
    assert len(first.vectors) == len(INPUTS)
    assert all(len(vector) == DIMENSION for vector in first.vectors)
    assert first == second
    assert first.tokens_in > len(INPUTS)
    for vector in first.vectors:
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-3)
    assert len(set(first.vectors)) == len(INPUTS)
    assert single.vectors[0] == pytest.approx(first.vectors[1], abs=1e-4)
    print(f"\nvLLM: {len(INPUTS)} embeddings in {took:.2f} s")


def test_a_pooling_server_reports_its_model_and_slots(pooling: VllmServer) -> None:
    """What the daemon reads to place work on an embedding replica works there too."""

    async def use(adapter: VllmAdapter) -> tuple[EngineHealth, EngineProps, SlotUsage]:
        return await adapter.health(), await adapter.props(), await adapter.slots()

    health, props, slots = with_adapter(pooling, use)
    assert health.ready
    assert (props.model_name, props.ctx_limit) == (SERVED_MODEL, MAX_MODEL_LEN)
    assert slots.busy == 0


def test_the_daemon_serves_embeddings_from_a_vllm_pooling_pool(
    pooling: VllmServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A `workload: embedding` pool in front of the pooling server: it passes preload and
    the self-test (an embedding, not a decode: the server has no completions), and the
    `openai` SDK's embeddings come back ordered, sized and deterministic."""
    pool = vllm_pool(pooling.base_url) | {"workload": "embedding", "served_name": "vectors"}
    with running_daemon(tmp_path_factory.mktemp("vllm-embed"), daemon_config(pool)) as daemon:
        client = openai.OpenAI(base_url=daemon.base_url + "/v1", api_key=DATA_KEY, max_retries=0)
        first = client.embeddings.create(model="vectors", input=INPUTS)
        again = client.embeddings.create(model="vectors", input=INPUTS, encoding_format="float")
        client.close()
    assert [d.index for d in first.data] == [0, 1, 2]
    assert {len(d.embedding) for d in first.data} == {DIMENSION}
    for packed, plain in zip(first.data, again.data, strict=True):
        assert packed.embedding == pytest.approx(plain.embedding, rel=1e-6)
