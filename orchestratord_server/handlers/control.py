"""Control-plane handlers: drain, reload, pool health and replica sets.

Drain and reload start the action and answer 202 at once (ORCH-2101, ORCH-2102); their
progress shows in the pool's health, which renders the core's view of the pool: its
phase, desired vs applied model, the last error, and each replica's state, restart
history and circuit-breaker state (ORCH-2103, ORCH-3038, ORCH-3053). Replica sets render
the core's grouping with load, slots and the SLO snapshot (ORCH-2104, ORCH-3041).
"""

from __future__ import annotations

from typing import Any

from connexion import context as connexion_context
from starlette.responses import Response

from orchestrator_core import Priority, ReplicaView, SloObjectives, SloSnapshot, UnknownPool
from orchestratord_server.body_validation import validated_body
from orchestratord_server.errors import error_response
from orchestratord_server.generated.models import (
    DrainRequest,
    ErrorKind,
    FieldError,
    GpuDevice,
    GpuTelemetry,
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
from orchestratord_server.runtime import NotReloadable
from orchestratord_server.state import ServerState


class ControlPlane:
    """Handlers for control.yaml's pool operations (ORCH-2101..2104)."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

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
        health = status.view
        digest = health.model_digest
        gpus = self._state.runtime.pool_gpus(id)
        devices = [
            GpuDevice(
                device=d.reading.index,
                replicas=list(d.replicas),
                name=d.reading.name,
                uuid=d.reading.uuid,
                utilization=d.reading.utilization,
                memory_used_bytes=d.reading.memory_used_bytes,
                memory_free_bytes=d.reading.memory_free_bytes,
                memory_total_bytes=d.reading.memory_total_bytes,
                error=d.reading.error,
            )
            for d in gpus.devices
        ]
        body = PoolHealth(
            live=health.live,
            ready=health.ready,
            draining=health.draining,
            phase=health.phase,
            metrics={
                "queue_depth": health.queue_depth,
                "queue_depth_interactive": health.queue_depth_interactive,
                "queue_depth_batch": health.queue_depth_batch,
                "running": health.running,
                "slots_total": health.slots_total,
                "slots_free": health.slots_free,
                "service_time_ms": health.service_time_ms,
                "engine_version": health.engine_version,
                "model_digest": digest,
                "device_kind": status.device_kind,
                "devices": list(status.devices),
                "tensor_split": list(status.tensor_split) if status.tensor_split else None,
                "slo": slo_view(status.slo),
                "kv_cache_usage_ratio": status.kv_cache_usage_ratio,
                "replicas": [_replica(r) for r in health.replicas],
            },
            pool_id=health.pool_id,
            engine=health.engine,
            engine_version=health.engine_version,
            model_digest=digest,
            desired_model_ref=health.desired_ref,
            applied_model_ref=health.model_ref,
            last_error=health.last_error,
            gpu_telemetry=GpuTelemetry(
                status=gpus.status, reason=gpus.reason, devices=devices or None
            ),
        )
        return json_response(body)

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


def _replica(replica: ReplicaView) -> dict[str, Any]:
    """One replica for health: its state and figures, its preload and restart history
    (ORCH-3002, ORCH-3038, ORCH-3053); values not known yet are left out."""
    figures: dict[str, Any] = {
        "replica_id": replica.replica_id,
        "state": replica.state.value,
        "live": replica.live,
        "ready": replica.ready,
        "engine_version": replica.engine_version,
        "model_digest": replica.model_digest,
        "slots_total": replica.slots_total,
        "slots_free": replica.slots_free,
        "running": replica.running,
        "kv_cache_usage_ratio": replica.kv_usage,
        "restarts": replica.restarts,
        "breaker": replica.breaker.value,
        "last_preload_outcome": replica.last_preload_outcome,
        "failure_class": replica.failure_class,
        "last_error": replica.last_error,
        "retry_in_ms": replica.retry_in_ms,
    }
    return {key: value for key, value in figures.items() if value is not None}


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
