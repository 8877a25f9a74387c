"""Control-plane handlers: pool health and replica sets; drain and reload come with #6.

Health and replica sets render the core's snapshots (ORCH-2103, ORCH-2104). Drain and
reload belong to the pool-manager issue (#6) and answer 501 until it lands.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from orchestrator_core import UnknownPool
from orchestratord_server.generated.models import (
    ListReplicaSetsResponse200,
    PoolHealth,
    ReplicaSet,
    ReplicaSetMember,
)
from orchestratord_server.handlers.not_implemented import not_implemented
from orchestratord_server.handlers.render import json_response, not_found
from orchestratord_server.state import ServerState

POOL_MANAGER_ISSUE = 6

#: Per-priority SLO objectives (ORCH-3041 defaults), reported with each replica set.
SLO_OBJECTIVES: dict[str, dict[str, float]] = {
    "interactive": {"first_token_p95_ms": 900, "tokens_64_p95_ms": 2500, "error_rate": 0.005},
    "batch": {"throughput_ratio_min": 0.8, "error_rate": 0.01},
}


class ControlPlane:
    """Handlers for control.yaml's pool operations (ORCH-2101..2104)."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    async def drainPool(self, **_: Any) -> Response:
        return not_implemented("drainPool", POOL_MANAGER_ISSUE)

    async def reloadPool(self, **_: Any) -> Response:
        return not_implemented("reloadPool", POOL_MANAGER_ISSUE)

    async def getPoolHealth(self, id: str) -> Response:
        """live, ready, draining and load figures of one pool (ORCH-2103)."""
        runtime = self._state.runtime
        try:
            health = runtime.pool_health(id)
        except UnknownPool:
            return not_found("pool")
        pool = runtime.pools[id]
        digests = [r.model_digest for r in health.replicas if r.model_digest]
        body = PoolHealth(
            live=health.live,
            ready=health.ready,
            draining=health.draining,
            metrics={
                "queue_depth": health.queue_depth,
                "queue_depth_interactive": health.queue_depth_interactive,
                "queue_depth_batch": health.queue_depth_batch,
                "running": health.running,
                "slots_total": health.slots_total,
                "slots_free": health.slots_free,
                "service_time_ms": health.service_time_ms,
                "device_kind": pool.device_kind.value,
                "replicas": [
                    {
                        "replica_id": r.replica_id,
                        "live": r.live,
                        "ready": r.ready,
                        "slots_total": r.slots_total,
                        "slots_free": r.slots_free,
                        "running": r.running,
                    }
                    for r in health.replicas
                ],
            },
            pool_id=health.pool_id,
            engine=health.engine,
            engine_version=health.engine_version,
            model_digest=digests[0] if digests else None,
            desired_model_ref=pool.model,
            applied_model_ref=pool.model,
        )
        return json_response(body)

    async def listReplicaSets(self) -> Response:
        """Replica sets with load, slots, members and SLO objectives (ORCH-2104)."""
        sets = []
        for snapshot in self._state.runtime.replica_sets():
            pools: dict[str, ReplicaSetMember] = {}
            for member in snapshot.members:
                seen = pools.get(member.pool_id)
                pools[member.pool_id] = ReplicaSetMember(
                    pool_id=member.pool_id,
                    ready=member.ready or (seen is not None and seen.ready),
                    draining=member.draining,
                )
            key = snapshot.key
            sets.append(
                ReplicaSet(
                    id=snapshot.set_id,
                    engine=key.engine,
                    load=float(snapshot.load),
                    slots_total=snapshot.slots_total,
                    slots_free=snapshot.slots_free,
                    slo=SLO_OBJECTIVES,
                    model_ref=key.model_ref,
                    engine_version=key.engine_version,
                    sampler_profile_version=key.sampler_profile_version,
                    pools=list(pools.values()),
                )
            )
        return json_response(ListReplicaSetsResponse200(sets))
