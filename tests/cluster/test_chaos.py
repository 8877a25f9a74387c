"""The chaos run: three instances on a three-node JetStream cluster, two real llama.cpp
engines, clients everywhere, and SIGKILLs of instances (the scheduler included) and of a
NATS node while they work. `chaos.check` proves what every client saw; the figures go to
RELIABILITY.md."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestratord_server.engines.llamacpp_process import LlamaCppProcess
from tests.cluster.chaos import AdmissionGate, Client, Cluster, Faults, History, check
from tests.cluster.conftest import cluster_config, instance_config
from tests.cluster.test_cluster import leader_events
from tests.integration.support import POOL_ID, Daemon, free_port, wait_until
from tests.support.llamacpp import llamacpp_server
from tests.support.nats import NatsNode, nats_cluster

RUN_S = 60.0
FAULT_PERIOD_S = 10.0
CLIENTS = 6

pytestmark = pytest.mark.integration


@pytest.fixture
def engines(long_model: Path) -> Iterator[list[LlamaCppProcess]]:
    with (
        llamacpp_server(long_model, slots=2, ctx_per_slot=16_384, threads=1) as first,
        llamacpp_server(long_model, slots=2, ctx_per_slot=16_384, threads=1) as second,
    ):
        yield [first, second]


@pytest.fixture
def nats_nodes(tmp_path: Path) -> Iterator[list[NatsNode]]:
    with nats_cluster(tmp_path / "nats") as nodes:
        yield nodes


def test_chaos_every_admission_ends_once_and_no_client_sees_a_gap(
    tmp_path: Path,
    engines: list[LlamaCppProcess],
    nats_nodes: list[NatsNode],
    record_property: pytest.RecordProperty,
) -> None:
    base = cluster_config(
        engines[0], [n.url for n in nats_nodes], capacity=256, replicas=3, snapshot_every=2_000
    )
    base["pools"][0]["replicas"] = [
        {"id": f"r{i}", "url": engine.base_url} for i, engine in enumerate(engines)
    ]
    daemons = [
        Daemon(tmp_path / f"instance-{i}", instance_config(base, free_port())) for i in range(3)
    ]
    cluster = Cluster(daemons)
    try:
        for daemon in daemons:
            daemon.start()

        def scheduler() -> Daemon | None:
            led = [(leader_events(d)[-1]["term"], d) for d in cluster.live() if leader_events(d)]
            return max(led, key=lambda pair: pair[0])[1] if led else None

        history, gate = History(), AdmissionGate()
        until = time.monotonic() + RUN_S
        clients = [Client(cluster, history, gate, seed, until) for seed in range(CLIENTS)]
        faults = Faults(
            cluster,
            history,
            gate,
            until=until,
            period=FAULT_PERIOD_S,
            scheduler=scheduler,
            nats_kill=nats_nodes[1].kill,
            nats_start=nats_nodes[1].start,
        )
        for thread in (*clients, faults):
            thread.start()
        for thread in (*clients, faults):
            thread.join(RUN_S + 180)
            assert not thread.is_alive(), f"{thread.name} did not finish"
            assert thread.error is None, f"{thread.name}: {thread.error!r}"
        wait_until(
            lambda: all(
                d.client().get(f"/v1/pools/{POOL_ID}/health").json()["metrics"]["running"] == 0
                for d in cluster.live()
            ),
            timeout=120,
            interval=0.5,
            what="every task to end",
        )
        verdict = check(history, cluster, POOL_ID)
        record_property("figures", verdict.figures)
        assert not verdict.problems, "\n".join(verdict.problems[:30])
        # The run exercised what the checker proves, whatever the machine's speed (its
        # tasks per minute vary threefold with it): work admitted through every client,
        # running tasks taken over after a kill, streams resumed elsewhere, cancels.
        figures = verdict.figures
        assert figures["acknowledged"] >= 4 * CLIENTS, figures
        assert figures["tasks_migrated"] >= 1, figures
        assert figures["resumes"] >= 1 and figures["cancels_checked"] >= 1, figures
        assert len(history.kills) >= 4
    finally:
        for daemon in daemons:
            daemon.stop()
