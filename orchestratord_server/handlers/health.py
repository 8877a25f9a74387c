"""A pool's health as the contract's `PoolHealth`, and SLO figures next to their objectives.

`GET /v1/pools/{id}/health` answers with it and the control-plane event stream sends it
as its `pool` event, so both say the same thing: the core's view of the pool (phase,
desired vs applied model, the last error, each replica's state, restart history and
circuit breaker; ORCH-2103, ORCH-3038, ORCH-3053), its device facts, its SLO figures
(ORCH-3041) and what NVML reports of its GPUs (ORCH-3028).
"""

from __future__ import annotations

from typing import Any

from orchestrator_core import Priority, ReplicaView, SloObjectives, SloSnapshot
from orchestratord_server.generated.models import GpuDevice, GpuTelemetry, PoolHealth
from orchestratord_server.runtime import PoolStatus, Runtime


def pool_health(runtime: Runtime, status: PoolStatus) -> PoolHealth:
    """The health body of the pool `status` describes."""
    health = status.view
    digest = health.model_digest
    gpus = runtime.pool_gpus(health.pool_id)
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
    return PoolHealth(
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
            "drain_remaining_ms": health.drain_remaining_ms,
            "eta_error_median_ms": health.eta_error_median_ms,
            "eta_error_median_ratio": health.eta_error_median_ratio,
        },
        pool_id=health.pool_id,
        engine=health.engine,
        engine_version=health.engine_version,
        model_digest=digest,
        desired_model_ref=health.desired_ref,
        applied_model_ref=health.model_ref,
        last_error=health.last_error,
        gpu_telemetry=GpuTelemetry(status=gpus.status, reason=gpus.reason, devices=devices or None),
    )


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
