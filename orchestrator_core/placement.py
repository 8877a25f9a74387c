"""Replica-set keys and the placement rule (ORCH-3007..3011, ORCH-3019, ORCH-3046).

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

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orchestrator_core.replica import Replica


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
        return _set_id(self)


@functools.lru_cache(maxsize=1024)
def _set_id(key: ReplicaSetKey) -> str:
    """The set id of a key, computed once per key (a pure function of it)."""
    parts = (
        key.engine,
        key.model_ref,
        key.quant or "",
        str(key.ctx),
        key.engine_version or "",
        key.sampler_profile_version,
    )
    return "rs-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


def usable(
    replica: Replica, mask: frozenset[int], pinned_version: str | None, require_same_version: bool
) -> bool:
    """Whether the replica may receive work (before looking at free slots)."""
    return (
        replica.ready
        and replica.within(mask)
        and (not require_same_version or replica.engine_version == pinned_version)
    )


def pin_version(
    replicas: Iterable[Replica], mask: frozenset[int], current: str | None
) -> str | None:
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
