"""What the runtime tells handlers: the core's views with the facts only the config knows.

Handlers render these plain values; they never reach into the runtime's parts. A pool's
status is the core's view (phase, models, replicas and their history) plus its device
facts and its SLO figures; a replica set's is the core's view plus its SLO figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator_core import PoolView, ReplicaSetView, SloSnapshot


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """One pool, for `GET /v1/pools/{id}/health` (ORCH-2103)."""

    view: PoolView
    device_kind: str
    devices: tuple[int, ...]
    tensor_split: tuple[float, ...] | None
    slo: SloSnapshot

    @property
    def kv_cache_usage_ratio(self) -> float | None:
        """The usage of the replica under most KV pressure, when any reports one."""
        known = [r.kv_usage for r in self.view.replicas if r.kv_usage is not None]
        return max(known) if known else None


@dataclass(frozen=True, slots=True)
class ReplicaSetStatus:
    """One replica set, for `GET /v1/replicasets` (ORCH-2104)."""

    view: ReplicaSetView
    slo: SloSnapshot
