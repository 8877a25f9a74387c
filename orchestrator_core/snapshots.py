"""Read-only snapshots for the control plane and metrics (ORCH-2103, ORCH-2104, ORCH-3028).

`pool_health` answers `GET /v1/pools/{id}/health` (live, ready, draining plus queue and
slot figures); `replica_sets` answers `GET /v1/replicasets`: one entry per replica-set key
(ORCH-3007) with its slots over Ready members, load = 1 - free/total (1.0 when it has no
Ready slot), and every member replica with its pool and readiness.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator_core._state import State
from orchestrator_core.decisions import Terminal
from orchestrator_core.placement import ReplicaSetKey
from orchestrator_core.pools import Pool
from orchestrator_core.specs import Priority


@dataclass(frozen=True, slots=True)
class ReplicaHealth:
    """One replica as its pool sees it."""

    replica_id: str
    live: bool
    ready: bool
    usable: bool
    engine_version: str | None
    model_digest: str | None
    slots_total: int
    slots_free: int
    running: int


@dataclass(frozen=True, slots=True)
class PoolHealth:
    """One pool's health and load."""

    pool_id: str
    engine: str
    model_ref: str
    engine_version: str | None
    live: bool
    ready: bool
    draining: bool
    queue_depth_interactive: int
    queue_depth_batch: int
    running: int
    slots_total: int
    slots_free: int
    service_time_ms: int
    replicas: tuple[ReplicaHealth, ...]

    @property
    def queue_depth(self) -> int:
        """Queued tasks of both priorities."""
        return self.queue_depth_interactive + self.queue_depth_batch


@dataclass(frozen=True, slots=True)
class ReplicaSetMember:
    """A replica of a replica set, with the pool it belongs to."""

    pool_id: str
    replica_id: str
    live: bool
    ready: bool
    draining: bool


@dataclass(frozen=True, slots=True)
class ReplicaSetSnapshot:
    """One replica set's identity, slots and load."""

    set_id: str
    key: ReplicaSetKey
    slots_total: int
    slots_free: int
    load: float
    members: tuple[ReplicaSetMember, ...]


@dataclass(frozen=True, slots=True)
class TaskView:
    """Where a task is, for status queries and late stream subscribers."""

    task_id: str
    state: State
    pool_id: str
    replica_id: str | None
    priority: Priority
    session_id: str | None
    seed: int
    queue_position: int
    predicted_start_ms: int
    tokens: int
    outcome: Terminal | None


def pool_health(pool: Pool) -> PoolHealth:
    """The health snapshot of one pool."""
    usable = pool.usable_replicas
    replicas = tuple(
        ReplicaHealth(r.replica_id, r.live, r.ready, r in usable, r.engine_version,
                      r.model_digest, r.slots_total, r.slots_free, r.busy)
        for r in pool.replicas.values()
    )
    total, free = pool.slots()
    spec = pool.spec
    return PoolHealth(spec.pool_id, spec.engine, spec.model_ref, pool.pinned_version,
                      pool.is_live, pool.is_ready, pool.draining,
                      pool.queue.depth(Priority.INTERACTIVE), pool.queue.depth(Priority.BATCH),
                      pool.running, total, free, pool.service.estimate_ms, replicas)


def replica_sets(pools: Iterable[Pool]) -> tuple[ReplicaSetSnapshot, ...]:
    """All replica sets, ordered by set id.

    A set's load is (running + queued) / slots over its members that take work; a pool's
    queued tasks count toward the set its usable replicas are in (the one it dispatches
    to). An idle set, or one without slots, has load 0.
    """
    groups: dict[ReplicaSetKey, list[tuple[ReplicaSetMember, int, int, int]]] = {}
    waiting: dict[ReplicaSetKey, int] = {}
    for pool in pools:
        queued = pool.queue.depth(Priority.INTERACTIVE) + pool.queue.depth(Priority.BATCH)
        for replica in pool.replicas.values():
            member = ReplicaSetMember(pool.pool_id, replica.replica_id, replica.live,
                                      replica.ready, pool.draining)
            taking = pool.is_ready and replica in pool.usable_replicas
            key = pool.key_of(replica)
            if taking and queued:
                waiting[key] = waiting.get(key, 0) + queued
                queued = 0
            entry = (replica.slots_total, replica.slots_free, replica.busy) if taking else (0, 0, 0)
            groups.setdefault(key, []).append((member, *entry))
    snapshots = []
    for key, entries in groups.items():
        total = sum(e[1] for e in entries)
        free = sum(e[2] for e in entries)
        busy = sum(e[3] for e in entries) + waiting.get(key, 0)
        load = busy / total if total else 0.0
        snapshots.append(ReplicaSetSnapshot(key.set_id, key, total, free, load,
                                            tuple(e[0] for e in entries)))
    return tuple(sorted(snapshots, key=lambda s: s.set_id))
