"""Placement and replica sets.

ORCH-3007 (replica-set key), ORCH-3008 (least-loaded Ready replica), ORCH-3009 (session
affinity, kv_warmth), ORCH-3010 (never a non-Ready pool), ORCH-3011 (device masks),
ORCH-3019 (engine-reported slots), ORCH-3023 (no KV migration), ORCH-3046 (versions never
mix), ORCH-2104 (replica-set snapshot).
"""

from __future__ import annotations

import hashlib

from corekit import (
    ENGINE,
    MODEL,
    admit,
    crash,
    dispatches,
    orchestrator,
    pool_spec,
    preloaded,
    probe,
    ready_all,
    restart,
    task,
    uid,
)

from orchestrator_core import (
    Dispatch,
    FinishReason,
    KvHint,
    Orchestrator,
    PoolSpec,
    ReplicaSetKey,
    ReplicaSpec,
    SessionConfig,
)

SESSION = "5e55e55e-0000-4000-8000-000000000000"


def placed(orch: Orchestrator, n: int, now: int = 0, **fields: object) -> Dispatch:
    admit(orch, task(n, **fields), now)
    (dispatch,) = dispatches(orch.poll(now))
    return dispatch


def test_orch_3008_least_loaded_ready_replica_by_free_slots() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 2), ("r1", 3)]))
    order = [placed(orch, n).replica_id for n in range(5)]
    assert order == ["r1", "r0", "r1", "r0", "r1"]
    orch.on_finish(uid(1), FinishReason.STOP, 1, 1)
    assert placed(orch, 9, now=1).replica_id == "r0"


def test_orch_3010_nothing_is_dispatched_to_a_non_ready_replica_or_pool() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 4), ("r1", 1)]))
    probe(orch, "p0", "r0", 0, ready=False)
    assert [placed(orch, 1).replica_id] == ["r1"]
    admit(orch, task(2))
    assert orch.poll(0) == []  # r1 is full and r0 is not Ready
    probe(orch, "p0", "r1", 1, ready=False)
    orch.on_finish(uid(1), FinishReason.STOP, 1, 1)
    assert orch.poll(1) == []


def test_orch_3011_a_replica_running_outside_the_mask_is_never_used() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 4), ("r1", 1)], devices=(0, 1)))
    restart(orch, "p0", "r0", 0, devices=(0, 2))
    health = orch.pool_view("p0", 0)
    assert [(r.replica_id, r.usable) for r in health.replicas] == [("r0", False), ("r1", True)]
    assert placed(orch, 1).replica_id == "r1"
    admit(orch, task(2))
    assert orch.poll(0) == []


def test_orch_3019_engine_reported_slots_drive_placement() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1)]))
    restart(orch, "p0", "r0", 0, slots_total=3)
    for n in range(4):
        admit(orch, task(n))
    assert len(dispatches(orch.poll(0))) == 3
    assert orch.pool_view("p0", 0).slots_free == 0


def test_orch_3019_work_the_core_did_not_send_occupies_slots() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1)]))
    restart(orch, "p0", "r0", 0, slots_total=4)
    probe(orch, "p0", "r0", 1, slots_free=1)
    for n in range(3):
        admit(orch, task(n), 1)
    assert len(dispatches(orch.poll(1))) == 1
    # A report that has not seen our dispatch yet does not free the slot twice.
    probe(orch, "p0", "r0", 2, slots_free=4)
    assert len(dispatches(orch.poll(2))) == 2
    assert orch.pool_view("p0", 0).slots_free == 1


def test_a_replica_without_a_slot_count_counts_as_one() -> None:
    orch = Orchestrator([PoolSpec("p0", ENGINE, MODEL, 8192, (0,), (ReplicaSpec("r0"),))])
    ready_all(orch)
    assert orch.pool_view("p0", 0).slots_total == 1


def test_orch_3046_a_pool_pins_one_engine_version() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1), ("r1", 1)]))
    restart(orch, "p0", "r1", 0, version="b5000")
    assert orch.pool_view("p0", 0).engine_version == "b4000"
    assert [placed(orch, n).replica_id for n in range(1)] == ["r0"]
    admit(orch, task(1))
    assert orch.poll(0) == []  # r1 runs another version
    crash(orch, "p0", "r0", 1)
    assert orch.pool_view("p0", 0).engine_version == "b5000"
    (dispatch,) = dispatches(orch.poll(1))
    assert (dispatch.replica_id, dispatch.engine_version) == ("r1", "b5000")


def test_orch_3046_mixing_versions_is_possible_only_when_allowed() -> None:
    orch = orchestrator(
        pool_spec(replicas=[("r0", 1), ("r1", 1)], require_same_engine_version=False)
    )
    restart(orch, "p0", "r1", 0, version="b5000")
    assert {placed(orch, n).replica_id for n in range(2)} == {"r0", "r1"}


def test_orch_3007_pools_with_the_same_key_form_one_replica_set() -> None:
    orch = orchestrator(
        pool_spec("a", devices=(0,)),
        pool_spec("b", devices=(1,)),
        pool_spec("c", devices=(2,), sampler_profile_version="v2"),
    )
    sets = orch.replica_sets()
    assert len(sets) == 2
    shared = next(s for s in sets if len(s.members) == 2)
    assert [(m.pool_id, m.ready) for m in shared.members] == [("a", True), ("b", True)]
    assert shared.key == ReplicaSetKey(ENGINE, MODEL, None, 8192, "b4000", "v1")
    text = "\x1f".join((ENGINE, MODEL, "", "8192", "b4000", "v1"))
    assert shared.set_id == "rs-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def test_orch_3046_replicas_of_different_versions_never_share_a_set() -> None:
    orch = orchestrator(pool_spec("a", devices=(0,)), pool_spec("b", devices=(1,)))
    restart(orch, "b", "r0", 0, version="b5000")
    assert sorted(s.key.engine_version or "" for s in orch.replica_sets()) == ["b4000", "b5000"]


def test_orch_2104_replica_set_load_and_slots() -> None:
    orch = orchestrator(
        pool_spec("a", replicas=[("r0", 2)], devices=(0,)),
        pool_spec("b", replicas=[("r0", 2)], devices=(1,)),
    )
    placed(orch, 1)
    (snapshot,) = orch.replica_sets()
    assert (snapshot.slots_total, snapshot.slots_free, snapshot.load) == (4, 3, 0.25)
    orch.drain("a", 0, 1)
    orch.drain("b", 0, 1)
    (snapshot,) = orch.replica_sets()
    assert (snapshot.slots_total, snapshot.load) == (0, 0.0)
    assert all(m.draining for m in snapshot.members)


def test_orch_2104_replica_set_load_counts_queued_work() -> None:
    """ORCH-2104: load is (running + queued) / slots, so above 1 means work is waiting."""
    orch = orchestrator(pool_spec("a", replicas=[("r0", 1)], devices=(0,)))
    placed(orch, 1)
    for n in (2, 3):
        admit(orch, task(n))
    (snapshot,) = orch.replica_sets()
    assert (snapshot.slots_total, snapshot.slots_free, snapshot.load) == (1, 0, 3.0)


def turn(orch: Orchestrator, n: int, now: int, **fields: object) -> Dispatch:
    dispatch = placed(orch, n, now, session_id=SESSION, **fields)
    orch.on_finish(dispatch.task_id, FinishReason.STOP, 10, now)
    return dispatch


def test_orch_3009_a_session_returns_to_its_last_replica_warm() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1), ("r1", 3)]), sessions=SessionConfig())
    first = turn(orch, 1, 0)
    assert (first.replica_id, first.kv_warmth, first.kv_migrated) == ("r1", False, None)
    assert [placed(orch, n, now=1).replica_id for n in (2, 3)] == ["r1", "r1"]
    # Now r0 and r1 have one free slot each; least-loaded alone would take r0.
    second = turn(orch, 4, 2)
    assert (second.replica_id, second.kv_warmth, second.kv_migrated) == ("r1", True, None)
    info = orch.session_info(SESSION, 2)
    assert info is not None and info.kv_warmth and info.turns == 2


def test_orch_3009_a_busy_last_replica_is_left_cold_rather_than_waited_for() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1), ("r1", 1)]))
    assert turn(orch, 1, 0).replica_id == "r0"
    placed(orch, 2, now=1)  # takes r0 again (first in order with a free slot)
    moved = turn(orch, 3, 2)
    assert (moved.replica_id, moved.kv_warmth, moved.kv_migrated) == ("r1", False, False)


def test_orch_3023_failover_reports_cold_and_not_migrated() -> None:
    """A returning session whose replica was lost runs cold and says its KV did not move."""
    orch = orchestrator(pool_spec(replicas=[("r0", 1), ("r1", 1)]))
    assert turn(orch, 1, 0).replica_id == "r0"
    crash(orch, "p0", "r0", 1)
    orch.poll(2)
    preloaded(orch, "p0", "r0", 2)  # back, but its KV is gone
    moved = turn(orch, 2, 3)
    assert (moved.kv_warmth, moved.kv_migrated) == (False, False)
    info = orch.session_info(SESSION, 3)
    assert info is not None and not info.kv_warmth


def test_kv_hint_cold_opts_out_of_affinity() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1), ("r1", 2)]))
    assert turn(orch, 1, 0).replica_id == "r1"
    restart(orch, "p0", "r1", 1, slots_total=1)
    restart(orch, "p0", "r0", 1, slots_total=2)
    cold = turn(orch, 2, 2, kv_hint=KvHint.COLD)
    assert (cold.replica_id, cold.kv_warmth) == ("r0", False)


def test_a_session_prefers_the_pool_of_its_last_replica() -> None:
    orch = orchestrator(pool_spec("a", devices=(0,)), pool_spec("b", devices=(1,)))
    first = turn(orch, 1, 0)
    assert first.pool_id == "a"
    admit(orch, task(2, pool_id="a"), 1)  # "a" now looks busier than "b"
    result = admit(orch, task(3, session_id=SESSION), 1)
    assert result.pool_id == "a"
    assert admit(orch, task(4, session_id=SESSION, kv_hint=KvHint.COLD), 1).pool_id == "b"
