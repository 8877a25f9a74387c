"""Canary splits across the pools of one route (ORCH-3033)."""

from __future__ import annotations

import dataclasses

import pytest
from corekit import admit, orchestrator, pool_spec, probe, task, uid
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_core import Admitted, ConfigError, Orchestrator
from orchestrator_core.seed import canary_bucket


def split(weight: int) -> Orchestrator:
    return orchestrator(
        pool_spec("stable", devices=(0,), replicas=[("r0", 4)], capacity=2000),
        pool_spec(
            "canary", devices=(1,), replicas=[("r0", 4)], capacity=2000, canary_weight=weight
        ),
    )


def placed_on(orch: Orchestrator, n: int) -> str:
    return admit(orch, task(n)).pool_id


def test_orch_3033_the_canary_gets_its_weight_of_the_route() -> None:
    """ORCH-3033: with weight 30, the tasks whose id falls in the first 30 buckets go to
    the canary, every other to the stable pool."""
    orch = split(30)
    pools = [placed_on(orch, n) for n in range(1000)]
    expected = ["canary" if canary_bucket(uid(n)) < 30 else "stable" for n in range(1000)]
    assert pools == expected
    assert 250 < pools.count("canary") < 350


def test_orch_3033_the_split_is_reproducible_per_task() -> None:
    """ORCH-3033: the same task id lands on the same side in another daemon."""
    first, second = split(50), split(50)
    assert [placed_on(first, n) for n in range(50)] == [placed_on(second, n) for n in range(50)]


@pytest.mark.parametrize(("weight", "side"), [(0, "stable"), (100, "canary")])
def test_orch_3033_weights_at_the_ends(weight: int, side: str) -> None:
    orch = split(weight)
    assert {placed_on(orch, n) for n in range(100)} == {side}


def test_orch_3033_a_side_without_a_ready_pool_leaves_the_route_to_the_other() -> None:
    """ORCH-3033: draining the canary (the one-action rollback) sends every task to the
    stable pool; a stable pool that is not Ready leaves all to the canary."""
    orch = split(50)
    orch.drain("canary", 0, 0)
    assert {placed_on(orch, n) for n in range(100)} == {"stable"}
    orch = split(50)
    probe(orch, "stable", "r0", 0, ready=False)
    assert {placed_on(orch, n) for n in range(100)} == {"canary"}


def test_orch_3033_pools_without_a_canary_are_unaffected() -> None:
    orch = orchestrator(
        pool_spec("a", devices=(0,), replicas=[("r0", 4)]),
        pool_spec("b", devices=(1,), replicas=[("r0", 4)]),
    )
    assert {placed_on(orch, n) for n in range(8)} == {"a", "b"}


def test_a_canary_weight_outside_0_to_100_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        pool_spec(canary_weight=101).validate()


@given(st.uuids())
def test_orch_3033_buckets_are_stable_and_in_range(task_id: object) -> None:
    bucket = canary_bucket(str(task_id))
    assert 0 <= bucket < 100
    assert bucket == canary_bucket(str(task_id))
    orch = split(bucket + 1)
    decision = orch.submit(dataclasses.replace(task(0), task_id=str(task_id)), 0)
    assert isinstance(decision, Admitted) and decision.pool_id == "canary"
