"""Replicas, replica-set keys and the placement rule (ORCH-3007..3011, ORCH-3019, ORCH-3046).

A replica is one engine server of a pool. Its slot count comes from the engine when it
reports one (ORCH-3019), else from config, else 1. The core counts its own busy slots; the
engine's reported free slots only reveal work the core did not send (`external`), measured
at report time, so a report that lags behind a dispatch never frees a slot twice.

A replica is *usable* when it is live, Ready, runs only on devices inside its pool's mask
(ORCH-3011) and, when the pool requires it, runs the pool's pinned engine version
(ORCH-3046). Placement takes the session's last replica when it is usable and has a free
slot (KV reuse, ORCH-3009), else the usable replica with the most free slots, first in
config order on a tie (ORCH-3008). Draining or non-Ready pools are never placed on
(ORCH-3010); the pool checks that before calling `choose_replica`, and passes only its
usable replicas.

Replicas with the same {engine, model, quant, ctx, engine_version, sampler_profile_version}
form one replica set (ORCH-3007); the engine version is part of the key, so replicas of
different versions never share a set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orchestrator_core.specs import ReplicaSpec, ReplicaStatus


@dataclass(frozen=True, slots=True)
class ReplicaSetKey:
    """What replicas must share to form one replica set (ORCH-3007)."""

    engine: str
    model_ref: str
    quant: str | None
    ctx: int
    engine_version: str | None
    sampler_profile_version: str

    @property
    def set_id(self) -> str:
        """A stable, short id derived from the key (same key, same id, on every run)."""
        text = "\x1f".join((self.engine, self.model_ref, self.quant or "", str(self.ctx),
                            self.engine_version or "", self.sampler_profile_version))
        return "rs-" + hashlib.sha256(text.encode()).hexdigest()[:12]


class Replica:
    """The core's view of one replica: reported state plus its own slot accounting."""

    __slots__ = ("busy", "configured_slots", "devices", "engine_version", "epoch", "external",
                 "live", "model_digest", "ready", "replica_id", "reported_devices",
                 "retry_at_ms", "running", "slots_total", "usable")

    def __init__(self, spec: ReplicaSpec, pool_devices: tuple[int, ...]) -> None:
        self.replica_id = spec.replica_id
        self.devices = frozenset(spec.devices if spec.devices is not None else pool_devices)
        self.configured_slots = spec.slots_total
        self.slots_total = spec.slots_total if spec.slots_total is not None else 1
        self.usable = False
        self.live = False
        self.ready = False
        self.engine_version: str | None = None
        self.model_digest: str | None = None
        self.reported_devices: frozenset[int] | None = None
        self.retry_at_ms: int | None = None
        self.external = 0
        self.busy = 0
        self.epoch = 0
        self.running: dict[str, None] = {}

    @property
    def slots_free(self) -> int:
        """Slots the core may still fill (never negative)."""
        return max(0, self.slots_total - self.busy - self.external)

    def mark_down(self) -> None:
        """The worker died: not live, not Ready, its KV gone (new epoch)."""
        if self.live:
            self.epoch += 1
        self.live = self.ready = False
        self.external = 0

    def within(self, mask: frozenset[int]) -> bool:
        """Whether every device this replica uses lies inside `mask` (ORCH-3011)."""
        used = self.reported_devices if self.reported_devices is not None else self.devices
        return used <= mask

    def apply(self, status: ReplicaStatus, now_ms: int) -> None:
        """Take a status report; a replica that stops being live loses its KV (new epoch)."""
        if self.live and not status.live:
            self.epoch += 1
        self.live = status.live
        self.ready = status.live and status.ready
        self.engine_version = status.engine_version
        self.model_digest = status.model_digest
        reported = status.slots_total
        if reported is not None:
            self.slots_total = reported
        else:
            configured = self.configured_slots
            self.slots_total = configured if configured is not None else 1
        if status.devices is not None:
            self.reported_devices = frozenset(status.devices)
        self.retry_at_ms = None if status.retry_in_ms is None else now_ms + status.retry_in_ms
        if status.slots_free is None:
            self.external = 0
        else:
            engine_busy = self.slots_total - status.slots_free
            self.external = max(0, engine_busy - self.busy)


def usable(replica: Replica, mask: frozenset[int], pinned_version: str | None,
           require_same_version: bool) -> bool:
    """Whether the replica may receive work (before looking at free slots)."""
    return (replica.ready and replica.within(mask)
            and (not require_same_version or replica.engine_version == pinned_version))


def pin_version(replicas: Iterable[Replica], mask: frozenset[int],
                current: str | None) -> str | None:
    """The engine version a pool pins (ORCH-3046).

    The current pin stays while a Ready replica inside the mask runs it; otherwise the pool
    moves to the version of its first Ready replica (in config order). With no Ready
    replica the pin is kept until one becomes Ready.
    """
    versions = [r.engine_version for r in replicas if r.ready and r.within(mask)]
    if not versions or current in versions:
        return current
    return versions[0]


def choose_replica(candidates: Sequence[Replica], prefer: Replica | None) -> Replica | None:
    """The replica a task goes to among usable `candidates`, or None when all are full."""
    if prefer is not None and prefer.slots_free > 0 and prefer in candidates:
        return prefer
    best: Replica | None = None
    best_free = 0
    for replica in candidates:
        free = replica.slots_free
        if free > best_free:
            best, best_free = replica, free
    return best
