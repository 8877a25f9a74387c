"""Byte-exact streams across two single-slot Triton replicas (ORCH-3050, ORCH-3045, 3046).

Two real Triton model servers on SmolLM2, each started with one slot (llama.cpp's
``n_parallel`` 1 inside the model: no batching of concurrent requests), are the replicas
``t0`` and ``t1`` of one pool, reached by URL with ``slots: 1``. Each decodes on one
thread: two llama.cpp thread pools spinning on two shared cores slow each other down by
a hundredfold. The replicas run the same Triton build, model and sampler profile, so
they form one replica set (ORCH-3046). Each fixed (prompt, seed) is sent twice at once,
one copy per replica, and once more afterwards: the three token streams must be
byte-identical (ORCH-3045). One daemon and the two servers (started and stopped side by
side) serve the whole module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from orchestratord_server.engines.models import smollm2_gguf_path
from tests.engines import client_flow as flow
from tests.integration.replicas_support import wait_replicas_ready
from tests.integration.support import (
    Client,
    Daemon,
    daemon_config,
    running_daemon,
    task_body,
)
from tests.support.triton import MODEL_NAME, TRITON_VERSION, TritonServer, triton_servers

pytestmark = pytest.mark.integration

POOL = "triton-pool"
MODEL_REF = "SmolLM2-135M-Instruct"
CTX = 1024
REPLICAS = ("t0", "t1")
PROMPTS = (
    "Once upon a time",
    "The queue moves",
    "def main():",
    "Q: What is 2 + 2?\nA:",
)
SEEDS = (7, 20_261_127)
MAX_TOKENS = 24


def replica(replica_id: str, server: TritonServer) -> dict[str, Any]:
    return {
        "id": replica_id,
        "url": server.base_url,
        "engine_model": MODEL_NAME,
        "model_path": str(smollm2_gguf_path()),
        "slots": 1,
    }


def triton_task(prompt: str, seed: int) -> dict[str, Any]:
    return task_body(
        engine="triton",
        model_ref=MODEL_REF,
        ctx=CTX,
        prompt=prompt,
        seed=seed,
        max_tokens=MAX_TOKENS,
    )


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """Two one-slot Triton servers as replicas t0 and t1 of one pool, both Ready."""
    workdir = tmp_path_factory.mktemp("triton-determinism")
    with contextlib.ExitStack() as stack:
        servers = stack.enter_context(triton_servers(workdir, len(REPLICAS), slots=1, threads=1))
        pool = flow.engine_pool(
            POOL,
            "triton",
            MODEL_REF,
            CTX,
            [replica(r, s) for r, s in zip(REPLICAS, servers, strict=True)],
        )
        started = stack.enter_context(running_daemon(workdir / "daemon", daemon_config(pool)))
        wait_replicas_ready(started.client(), REPLICAS, POOL)
        yield started


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    client = daemon.client()
    yield client
    client.cancel_all()


def test_the_replicas_form_one_single_slot_replica_set(client: Client) -> None:
    """ORCH-3046, ORCH-3050: t0 and t1 run one slot each, both on Triton 2.51.0, and make
    up one replica set of two slots."""
    flow.one_single_slot_replica_set(client, POOL, REPLICAS, TRITON_VERSION)


def test_orch_3050_fixed_seed_streams_are_byte_identical_across_replicas(client: Client) -> None:
    """ORCH-3050, ORCH-3045: each (prompt, seed) runs on t0 and t1 at once and once more;
    the three token streams are byte-identical, and other seeds give other streams."""
    texts = {
        (prompt, seed): flow.identical_across_replicas(client, triton_task(prompt, seed), REPLICAS)
        for prompt in PROMPTS
        for seed in SEEDS
    }
    flow.seeds_select_streams(texts, PROMPTS)
