"""A canary pool takes its share of a route, and draining it is the rollback (ORCH-3033).

Two pools serve the same model reference on two llama.cpp engines; one is marked canary
with weight 50. Tasks split by task id, reproducibly; the `started` frames and the
`pool_id` in every log record tell canary from stable. Draining the canary is the one
action that sends the whole route back to the stable pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator_core.seed import canary_bucket
from tests.integration.support import (
    Client,
    daemon_config,
    running_daemon,
    task_body,
    tiny_pool_config,
)

pytestmark = pytest.mark.integration

WEIGHT = 50


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Client]:
    stable = tiny_pool_config(tiny_model, pool_ctx=1024, ctx_per_slot=1024, capacity=16)
    stable.update(id="stable", devices=[0])
    canary = tiny_pool_config(tiny_model, pool_ctx=1024, ctx_per_slot=1024, capacity=16)
    canary.update(id="canary", devices=[1], canary_weight=WEIGHT)
    config = daemon_config(stable)
    config["pools"].append(canary)
    with running_daemon(tmp_path_factory.mktemp("canary"), config) as daemon:
        yield daemon.client()


def pool_of(client: Client, body: dict[str, object]) -> str:
    transcript = client.run(body)
    assert transcript.terminal.event == "end"
    assert transcript.started is not None
    return str(transcript.started["pool_id"])


def test_orch_3033_tasks_split_by_id_and_a_drain_rolls_the_canary_back(client: Client) -> None:
    """ORCH-3033: each task goes where its id's bucket says; after the canary is drained
    (one call) every task goes to the stable pool."""
    by_side: dict[str, list[dict[str, object]]] = {"canary": [], "stable": []}
    while min(len(tasks) for tasks in by_side.values()) < 4:
        body = task_body(ctx=1024, max_tokens=2)
        by_side["canary" if canary_bucket(body["task_id"]) < WEIGHT else "stable"].append(body)
    for side, bodies in by_side.items():
        assert [pool_of(client, body) for body in bodies] == [side] * len(bodies)
    drained = client.post("/v1/pools/canary/drain", json={"deadline_ms": 0})
    assert drained.status_code == 202, drained.text
    assert {pool_of(client, task_body(ctx=1024, max_tokens=2)) for _ in range(8)} == {"stable"}
