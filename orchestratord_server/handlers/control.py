"""Control-plane handlers: drain, reload, pool health, replica sets and the event stream.

Drain and reload start the action and answer 202 at once (ORCH-2101, ORCH-2102); their
progress shows in the pool's health, which renders the core's view of the pool: its
phase, desired vs applied model, the last error, and each replica's state, restart
history and circuit-breaker state (ORCH-2103, ORCH-3038, ORCH-3053). Replica sets render
the core's grouping with load, slots and the SLO snapshot (ORCH-2104, ORCH-3041).
"""

from __future__ import annotations

from typing import Any

from connexion import context as connexion_context
from starlette.responses import Response, StreamingResponse

from orchestrator_core import UnknownPool
from orchestratord_server.body_validation import validated_body
from orchestratord_server.errors import error_response
from orchestratord_server.generated.models import (
    DrainRequest,
    ErrorKind,
    FieldError,
    ListReplicaSetsResponse200,
    PoolAction,
    PoolActionAccepted,
    ReloadRequest,
    ReplicaSet,
    ReplicaSetMember,
)
from orchestratord_server.handlers.control_feed import ControlFeed
from orchestratord_server.handlers.data import SSE_HEADERS
from orchestratord_server.handlers.health import pool_health, slo_view
from orchestratord_server.handlers.render import json_response, not_found
from orchestratord_server.model_catalog import UnknownModel
from orchestratord_server.runtime import NotReloadable
from orchestratord_server.state import ServerState


class ControlPlane:
    """Handlers for control.yaml's pool operations (ORCH-2101..2104)."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._feed = ControlFeed(state.runtime)

    async def streamControlEvents(self) -> Response:
        """Pools, replicas and tasks as they change, as SSE (see `control_feed`)."""
        return StreamingResponse(
            self._feed.follow(), media_type="text/event-stream", headers=SSE_HEADERS
        )

    async def drainPool(self, id: str, **_: Any) -> Response:
        """Take a pool out of service within a deadline (ORCH-2101)."""
        request: DrainRequest = validated_body(connexion_context.scope)
        try:
            remaining = await self._state.runtime.drain(id, request.deadline_ms)
        except UnknownPool:
            return not_found("pool")
        body = PoolActionAccepted(pool_id=id, action=PoolAction.DRAIN, deadline_ms=remaining)
        return json_response(body, status=202)

    async def reloadPool(self, id: str, **_: Any) -> Response:
        """Move a pool to another model: drain, swap, preload, or roll back (ORCH-2102)."""
        request: ReloadRequest = validated_body(connexion_context.scope)
        runtime = self._state.runtime
        try:
            target = await runtime.reload(id, request.new_model_ref)
        except UnknownPool:
            return not_found("pool")
        except (UnknownModel, NotReloadable) as exc:
            error = FieldError(loc="body.new_model_ref", msg=str(exc), type="value_error")
            return error_response(
                400,
                ErrorKind.INVALID_PARAMS,
                str(exc),
                engine=runtime.pool_status(id).view.engine.value,
                errors=[error],
            )
        body = PoolActionAccepted(pool_id=id, action=PoolAction.RELOAD, new_model_ref=target)
        return json_response(body, status=202)

    async def getPoolHealth(self, id: str) -> Response:
        """Phase, live, ready, draining, load figures and GPU telemetry of one pool
        (ORCH-2103, ORCH-3028)."""
        try:
            status = self._state.runtime.pool_status(id)
        except UnknownPool:
            return not_found("pool")
        return json_response(pool_health(self._state.runtime, status))

    async def listReplicaSets(self) -> Response:
        """Replica sets with load, slots, members and SLO objectives (ORCH-2104)."""
        sets = []
        for status in self._state.runtime.replica_sets():
            snapshot = status.view
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
                    slo=slo_view(status.slo),
                    model_ref=key.model_ref,
                    engine_version=key.engine_version,
                    sampler_profile_version=key.sampler_profile_version,
                    pools=list(pools.values()),
                )
            )
        return json_response(ListReplicaSetsResponse200(sets))
