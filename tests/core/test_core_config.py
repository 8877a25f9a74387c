"""Pool configuration and the control-plane views.

ORCH-3001 (one model on one device mask), ORCH-3011 (replica devices inside the mask),
ORCH-2103 (pool health).
"""

from __future__ import annotations

import dataclasses

import pytest
from corekit import ENGINE, MODEL, admit, orchestrator, pool_spec, report, task

from orchestrator_core import (
    ConfigError,
    Orchestrator,
    PoolSpec,
    PriorityLimits,
    ProbeReport,
    ReplicaSpec,
    UnknownPool,
    UnknownReplica,
)
from orchestrator_core.ratelimit import TokenBuckets

GOOD = pool_spec(replicas=[("r0", 1)], devices=(0, 1))


@pytest.mark.parametrize(
    "change",
    [
        {"pool_id": ""},
        {"ctx_limit": 0},
        {"devices": ()},
        {"devices": (0, 0)},
        {"replicas": ()},
        {"replicas": (ReplicaSpec("a"), ReplicaSpec("a"))},
        {"replicas": (ReplicaSpec("a", devices=(5,)),)},
        {"replicas": (ReplicaSpec("a", slots_total=0),)},
        {"capacity": 0},
        {"interactive_burst": 0},
        {"wall_timeout_ms": 0},
        {"idle_timeout_ms": 0},
        {"initial_service_ms": 0},
        {"unready_retry_ms": 0},
        {"probe_interval_ms": 0},
        {"tenant_max_concurrent": 0},
        {"ewma_alpha": 0.0},
        {"ewma_alpha": 1.5},
        {"kv_bytes_per_token": -1},
        {"interactive": PriorityLimits(queue_capacity=0)},
        {"batch": PriorityLimits(rate_limit_rps=0.0)},
        {"batch": PriorityLimits(rate_limit_rps=1.0, rate_limit_burst=0)},
    ],
)
def test_invalid_pool_specs_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Orchestrator([dataclasses.replace(GOOD, **change)])  # type: ignore[arg-type]


def test_orch_3011_replica_devices_default_to_the_pool_mask() -> None:
    spec = PoolSpec(
        "p0", ENGINE, MODEL, 4096, (2, 3), (ReplicaSpec("r0"), ReplicaSpec("r1", devices=(3,)))
    )
    spec.validate()
    orch = Orchestrator([spec])
    assert orch.pool_ids == ("p0",)


def test_orchestrator_options_and_duplicate_pools_are_checked() -> None:
    with pytest.raises(ConfigError):
        Orchestrator([GOOD, GOOD])
    with pytest.raises(ConfigError):
        Orchestrator([GOOD], dedup_window=-1)
    with pytest.raises(ConfigError):
        Orchestrator([GOOD], rate_limit_clients=0)


def test_unknown_pools_and_replicas_raise() -> None:
    orch = orchestrator()
    with pytest.raises(UnknownPool):
        orch.pool_view("nope", 0)
    with pytest.raises(UnknownPool):
        orch.drain("nope", 0, 0)
    with pytest.raises(UnknownReplica):
        orch.replica_preloaded("p0", "nope", 1, report(), 0)
    with pytest.raises(UnknownReplica):
        orch.replica_probed("p0", "nope", 1, ProbeReport(live=False, ready=False), 0)


def test_orch_2103_pool_health_snapshot() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 2), ("r1", 1)], initial_service_ms=750))
    for n in range(5):
        admit(orch, task(n))
    orch.poll(0)
    health = orch.pool_view("p0", 0)
    assert (health.live, health.ready, health.draining) == (True, True, False)
    assert (health.running, health.slots_total, health.slots_free) == (3, 3, 0)
    assert (health.queue_depth, health.queue_depth_interactive) == (2, 2)
    assert (health.engine_version, health.service_time_ms) == ("b4000", 750)
    assert [(r.replica_id, r.running, r.slots_free) for r in health.replicas] == [
        ("r0", 2, 0),
        ("r1", 1, 0),
    ]


def test_rate_limit_buckets_are_bounded_in_number() -> None:
    buckets = TokenBuckets(1.0, 1, max_keys=2)
    for key in ("a", "b", "c"):
        buckets.take(key, 0)
    assert len(buckets) == 2
    assert buckets.wait_ms("a", 0) == 0  # forgotten: a full bucket again
    assert buckets.wait_ms("c", 0) == 1000
