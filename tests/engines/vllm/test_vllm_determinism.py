"""Byte-exact streams across two single-sequence vLLM replicas (ORCH-3050, 3045, 3046).

Two real vLLM servers on SmolLM2, each in single-sequence mode (``--max-num-seqs 1``: the
scheduler never batches two requests, vLLM's counterpart of llama.cpp's ``--parallel
1``), are the replicas ``v0`` and ``v1`` of one pool, reached by URL with ``slots: 1``.
Each computes on one thread: two torch thread pools spinning on two shared cores decode
some thirty times slower. The replicas run the same vLLM build, model and sampler
profile, so they form one replica set (ORCH-3046). Each fixed (prompt, seed) is sent
twice at once, one copy per replica, and once more afterwards: the three token streams
must be byte-identical (ORCH-3045). The two servers start side by side (one start-up's
wait) and, with one daemon, serve the module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.engines import client_flow as flow
from tests.integration.replicas_support import wait_replicas_ready
from tests.integration.support import (
    Client,
    Daemon,
    daemon_config,
    running_daemon,
    task_body,
)
from tests.support.vllm import MODEL_DIR, SERVED_MODEL, VLLM_VERSION, vllm_servers

pytestmark = pytest.mark.integration

POOL = "vllm-pool"
MODEL_REF = "SmolLM2-135M-Instruct"
CTX = 1024
REPLICAS = ("v0", "v1")
PROMPTS = (
    "Once upon a time",
    "def main():",
    "Q: What is 2 + 2?\nA:",
)
SEEDS = (7, 20_261_127)
MAX_TOKENS = 16


def vllm_task(prompt: str, seed: int) -> dict[str, Any]:
    return task_body(
        engine="vllm",
        model_ref=MODEL_REF,
        ctx=CTX,
        prompt=prompt,
        seed=seed,
        max_tokens=MAX_TOKENS,
    )


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """Two single-sequence vLLM servers as replicas v0 and v1 of one pool, both Ready."""
    workdir = tmp_path_factory.mktemp("vllm-determinism")
    with contextlib.ExitStack() as stack:
        servers = stack.enter_context(
            vllm_servers(workdir, len(REPLICAS), max_num_seqs=1, threads=1)
        )
        print(f"\nvLLM servers ready after {[round(s.startup_s or 0, 1) for s in servers]} s")
        replicas = [
            {
                "id": replica_id,
                "url": server.base_url,
                "engine_model": SERVED_MODEL,
                "model_path": str(MODEL_DIR),
                "slots": 1,
            }
            for replica_id, server in zip(REPLICAS, servers, strict=True)
        ]
        pool = flow.engine_pool(POOL, "vllm", MODEL_REF, CTX, replicas)
        started = stack.enter_context(running_daemon(workdir / "daemon", daemon_config(pool)))
        wait_replicas_ready(started.client(), REPLICAS, POOL)
        yield started


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    client = daemon.client()
    yield client
    client.cancel_all()


def test_the_replicas_form_one_single_slot_replica_set(client: Client) -> None:
    """ORCH-3046, ORCH-3050: v0 and v1 run one slot each, both on vLLM 0.32.0, and make up
    one replica set of two slots."""
    flow.one_single_slot_replica_set(client, POOL, REPLICAS, VLLM_VERSION)


def test_orch_3050_fixed_seed_streams_are_byte_identical_across_replicas(client: Client) -> None:
    """ORCH-3050, ORCH-3045: each (prompt, seed) runs on v0 and v1 at once and once more;
    the three token streams are byte-identical, and other seeds give other streams."""
    texts = {
        (prompt, seed): flow.identical_across_replicas(client, vllm_task(prompt, seed), REPLICAS)
        for prompt in PROMPTS
        for seed in SEEDS
    }
    flow.seeds_select_streams(texts, PROMPTS)
