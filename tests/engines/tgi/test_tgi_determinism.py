"""Byte-exact streams across two single-slot TGI replicas, on fake TGIs (ORCH-3050, 3045).

The replicas ``t0`` and ``t1`` of one pool are two :mod:`tests.support.fake_tgi` servers
(TGI itself cannot run here), reached by URL with ``slots: 1`` and sampler profile
portable-v1, which TGI honours exactly. They report the same TGI build and model, so they
form one replica set (ORCH-3046). Each fixed (prompt, seed) is sent twice at once, one
copy per replica, and once more afterwards; the three token streams must be
byte-identical (ORCH-3045).

The fake's pseudo-model is deterministic by construction: its output is a function of the
request it receives. So this module proves the adapter's side of ORCH-3050, not TGI's
determinism: the daemon maps one task to the same ``/generate_stream`` request on either
replica (every sampler parameter pinned, the seed passed through), and assembles the
same bytes from the same frames (non-ASCII text and JSON escapes included). Whether a
real TGI's sampling is reproducible is for a test against a real TGI.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from orchestratord_server.adapters.base import SAMPLER_PROFILE_PORTABLE_V1
from tests.engines import client_flow as flow
from tests.integration.replicas_support import wait_replicas_ready
from tests.integration.support import (
    Client,
    Daemon,
    daemon_config,
    running_daemon,
    task_body,
)
from tests.support.fake_tgi import GIT_SHA, VERSION, Behaviour, FakeTgi, fake_tgi

pytestmark = pytest.mark.integration

POOL = "tgi-pool"
MODEL = "smollm2-tgi"
CTX = 1024
REPLICAS = ("t0", "t1")
PROMPTS = (
    "Once upon a time",
    "The queue moves",
    "In a quiet village by the sea",
    "Q: What is 2 + 2?\nA:",
)
SEEDS = (7, 20_261_127)
MAX_TOKENS = 24
#: Slow enough that the first copy of a pair still decodes when the second arrives.
TOKEN_DELAY_S = 0.01


def tgi_task(prompt: str, seed: int) -> dict[str, Any]:
    return task_body(
        engine="tgi", model_ref=MODEL, ctx=CTX, prompt=prompt, seed=seed, max_tokens=MAX_TOKENS
    )


@pytest.fixture(scope="module")
def engines() -> Iterator[list[FakeTgi]]:
    with ExitStack() as stack:
        fakes = [stack.enter_context(fake_tgi()) for _ in REPLICAS]
        for fake in fakes:
            fake.behaviour = Behaviour(token_delay_s=TOKEN_DELAY_S)
        yield fakes


@pytest.fixture(scope="module")
def daemon(engines: list[FakeTgi], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The two fakes as replicas t0 and t1 of one portable-v1 pool, both Ready."""
    pool = flow.engine_pool(
        POOL,
        "tgi",
        MODEL,
        CTX,
        [
            {"id": replica_id, "url": fake.base_url, "engine_model": fake.model_id, "slots": 1}
            for replica_id, fake in zip(REPLICAS, engines, strict=True)
        ],
        sampler_profile_version=SAMPLER_PROFILE_PORTABLE_V1.version,
        timeouts={"wall_ms": 60_000, "idle_ms": 30_000},
    )
    workdir = tmp_path_factory.mktemp("tgi-determinism")
    with running_daemon(workdir, daemon_config(pool)) as started:
        wait_replicas_ready(started.client(), REPLICAS, POOL)
        yield started


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    client = daemon.client()
    yield client
    client.cancel_all()


def test_the_replicas_form_one_single_slot_replica_set(client: Client) -> None:
    """ORCH-3046, ORCH-3050: t0 and t1 run one slot each, both on the same TGI build, and
    make up one portable-v1 replica set of two slots."""
    found = flow.one_single_slot_replica_set(client, POOL, REPLICAS, f"{VERSION}+{GIT_SHA}")
    assert found["sampler_profile_version"] == SAMPLER_PROFILE_PORTABLE_V1.version


def test_orch_3050_fixed_seed_streams_are_byte_identical_across_replicas(
    client: Client, engines: list[FakeTgi]
) -> None:
    """ORCH-3050, ORCH-3045: each (prompt, seed) runs on t0 and t1 at once and once more;
    the three token streams are byte-identical, and other seeds give other streams. Both
    replicas received the very same request, the task's seed in it."""
    texts = {}
    for prompt in PROMPTS:
        for seed in SEEDS:
            seen = [len(fake.stats.bodies) for fake in engines]
            body = tgi_task(prompt, seed)
            texts[prompt, seed] = flow.identical_across_replicas(client, body, REPLICAS)
            sent = [fake.stats.bodies[count:] for fake, count in zip(engines, seen, strict=True)]
            assert all(sent), f"a replica received none of the runs: {sent}"
            requests = sent[0] + sent[1]
            assert len(requests) == 3
            assert requests[0] == requests[1] == requests[2], requests
            assert requests[0]["inputs"] == prompt
            assert requests[0]["parameters"]["seed"] == seed
    flow.seeds_select_streams(texts, PROMPTS)
