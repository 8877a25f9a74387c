"""Control-plane handlers: drain, reload, pool health and replica sets.

Drain and reload start the action and answer 202 at once (ORCH-2101, ORCH-2102); their
progress shows in the pool's health, which renders the core's snapshot together with the
pool manager's view: desired vs applied model, the last error, and each replica's
restart history and circuit-breaker state (ORCH-2103, ORCH-3038, ORCH-3053). Replica sets
render the core's grouping with load, slots and the SLO snapshot (ORCH-2104, ORCH-3041).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from connexion import context as connexion_context
from starlette.responses import Response

from orchestrator_core import Priority, SloObjectives, SloSnapshot, UnknownPool
from orchestratord_server.body_validation import validated_body
from orchestratord_server.errors import error_response
from orchestratord_server.generated.models import (
    DrainRequest,
    ErrorKind,
    FieldError,
    ListReplicaSetsResponse200,
    PoolAction,
    PoolActionAccepted,
    PoolHealth,
    ReloadRequest,
    ReplicaSet,
    ReplicaSetMember,
)
from orchestratord_server.handlers.render import json_response, not_found
from orchestratord_server.model_catalog import UnknownModel
from orchestratord_server.runtime.clock import now_ms
from orchestratord_server.runtime.pool_manager import NotReloadable
from orchestratord_server.runtime.slo_measurement import set_scope
from orchestratord_server.runtime.supervisor import ReplicaRecord
from orchestratord_server.state import ServerState


class ControlPlane:
    """Handlers for control.yaml's pool operations (ORCH-2101..2104)."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    async def drainPool(self, id: str, **_: Any) -> Response:
        """Take a pool out of service within a deadline (ORCH-2101)."""
        request: DrainRequest = validated_body(connexion_context.scope)
        runtime = self._state.runtime
        if id not in runtime.pools:
            return not_found("pool")
        runtime.drain(id, request.deadline_ms)
        runtime.manager.operator_drained(id)
        remaining = runtime.core.drain_remaining_ms(id, now_ms())
        body = PoolActionAccepted(pool_id=id, action=PoolAction.DRAIN, deadline_ms=remaining)
        return json_response(body, status=202)

    async def reloadPool(self, id: str, **_: Any) -> Response:
        """Move a pool to another model: drain, swap, preload, or roll back (ORCH-2102)."""
        request: ReloadRequest = validated_body(connexion_context.scope)
        runtime = self._state.runtime
        if id not in runtime.pools:
            return not_found("pool")
        try:
            target = runtime.manager.request_reload(id, request.new_model_ref)
        except (UnknownModel, NotReloadable) as exc:
            error = FieldError(loc="body.new_model_ref", msg=str(exc), type="value_error")
            return error_response(
                400,
                ErrorKind.INVALID_PARAMS,
                str(exc),
                engine=runtime.pools[id].engine.value,
                errors=[error],
            )
        body = PoolActionAccepted(pool_id=id, action=PoolAction.RELOAD, new_model_ref=target.ref)
        return json_response(body, status=202)

    async def getPoolHealth(self, id: str) -> Response:
        """live, ready, draining and load figures of one pool (ORCH-2103)."""
        runtime = self._state.runtime
        try:
            health = runtime.pool_health(id)
        except UnknownPool:
            return not_found("pool")
        pool = runtime.pools[id]
        state = runtime.manager.state[id]
        records = runtime.manager.records
        now = now_ms()
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
                "engine_version": health.engine_version,
                "model_digest": digests[0] if digests else None,
                "device_kind": pool.device_kind.value,
                "devices": list(pool.devices),
                "tensor_split": list(pool.tensor_split) if pool.tensor_split else None,
                "slo": slo_view(runtime.slo_snapshot(id)),
                "kv_cache_usage_ratio": _max_known(
                    h.kv_usage for h in runtime.manager.pool_handles(id)
                ),
                "replicas": [
                    {
                        "replica_id": r.replica_id,
                        "live": r.live,
                        "ready": r.ready,
                        "engine_version": r.engine_version,
                        "model_digest": r.model_digest,
                        "slots_total": r.slots_total,
                        "slots_free": r.slots_free,
                        "running": r.running,
                        "kv_cache_usage_ratio": runtime.replicas[id, r.replica_id].kv_usage,
                        **_supervision(records[id, r.replica_id], now),
                    }
                    for r in health.replicas
                ],
            },
            pool_id=health.pool_id,
            engine=health.engine,
            engine_version=health.engine_version,
            model_digest=digests[0] if digests else None,
            desired_model_ref=state.desired_ref,
            applied_model_ref=state.applied_ref,
            last_error=_last_error(
                state.last_error, [records[id, r.replica_id] for r in health.replicas]
            ),
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
                    slo=slo_view(self._state.runtime.slo_snapshot(set_scope(snapshot.set_id))),
                    model_ref=key.model_ref,
                    engine_version=key.engine_version,
                    sampler_profile_version=key.sampler_profile_version,
                    pools=list(pools.values()),
                )
            )
        return json_response(ListReplicaSetsResponse200(sets))


def _supervision(record: ReplicaRecord, now: int) -> dict[str, Any]:
    """A replica's preload and restart history for health (ORCH-3002, ORCH-3038,
    ORCH-3053); values not known yet are left out."""
    figures: dict[str, Any] = {
        "restarts": record.restarts,
        "breaker": record.breaker.value,
        "last_preload_outcome": record.last_preload_outcome,
        "failure_class": record.failure_class,
        "last_error": record.last_error,
        "retry_in_ms": None if record.retry_at_ms is None else max(0, record.retry_at_ms - now),
    }
    return {key: value for key, value in figures.items() if value is not None}


def _last_error(pool_error: str | None, records: list[ReplicaRecord]) -> str | None:
    """The pool's last error: a failed reload, else the first replica's that has one."""
    if pool_error is not None:
        return pool_error
    return next((r.last_error for r in records if r.last_error is not None), None)


def slo_view(snapshot: SloSnapshot) -> dict[str, dict[str, Any]]:
    """A replica set's SLO figures next to their objectives, per priority that has tasks in
    the window (ORCH-3041); figures that cannot be computed yet are left out."""
    objectives = SloObjectives()
    view: dict[str, dict[str, Any]] = {}
    for priority in Priority:
        figures = snapshot.of(priority)
        if not figures.samples:
            continue
        goal = objectives.of(priority)
        entry = {
            "samples": figures.samples,
            "window_ms": snapshot.window_ms,
            "ttft_p95_ms": figures.first_token_p95_ms,
            "ttft_p95_objective_ms": goal.first_token_p95_ms,
            "tokens_64_p95_ms": figures.tokens_64_p95_ms,
            "tokens_64_p95_objective_ms": goal.tokens_64_p95_ms,
            "error_ratio": figures.error_rate,
            "error_ratio_objective": goal.max_error_rate,
            "throughput_ratio": figures.throughput_ratio,
            "throughput_ratio_objective": goal.min_throughput_ratio,
            "attainment_ratio": figures.attainment_ratio,
            "met": figures.met,
        }
        view[priority.value] = {key: value for key, value in entry.items() if value is not None}
    return view


def _max_known(values: Iterable[float | None]) -> float | None:
    """The largest known value (the replica under most KV pressure), None if none is."""
    known = [v for v in values if v is not None]
    return max(known) if known else None
