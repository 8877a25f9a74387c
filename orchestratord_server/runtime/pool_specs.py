"""Translate the daemon's configuration into orchestrator_core's specs, and build its core."""

from __future__ import annotations

from orchestrator_core import (
    Orchestrator,
    PoolSpec,
    Priority,
    PriorityLimits,
    ReplicaSpec,
    RestartPolicy,
    SessionConfig,
)
from orchestratord_server.config import Config, PoolConfig


def _limits(pool: PoolConfig, name: Priority) -> PriorityLimits:
    for entry in pool.admission.priorities:
        if entry.name is name:
            return PriorityLimits(
                queue_capacity=entry.queue_capacity,
                rate_limit_rps=entry.rate_limit_rps,
                rate_limit_burst=entry.rate_limit_burst,
            )
    return PriorityLimits()


def pool_spec(pool: PoolConfig, probe_interval_ms: int) -> PoolSpec:
    """The core's view of one configured pool (ORCH-3001, ORCH-3004, ORCH-3016, ORCH-3038)."""
    return PoolSpec(
        pool_id=pool.id,
        engine=pool.engine,
        model_ref=pool.model,
        ctx_limit=pool.ctx,
        devices=pool.devices,
        replicas=tuple(
            ReplicaSpec(
                replica_id=r.id,
                devices=r.devices,
                slots_total=r.slots or (r.launch.slots if r.launch else None),
                managed=r.managed,
            )
            for r in pool.replicas
        ),
        quant=pool.quant,
        sampler_profile_version=pool.sampler_profile_version,
        require_same_engine_version=pool.require_same_engine_version,
        capacity=pool.queue.capacity,
        full_policy=pool.queue.full_policy,
        interactive_burst=pool.queue.interactive_burst,
        interactive=_limits(pool, Priority.INTERACTIVE),
        batch=_limits(pool, Priority.BATCH),
        tenant_max_concurrent=pool.admission.tenant_max_concurrent,
        kv_bytes_per_token=pool.kv_bytes_per_token,
        canary_weight=pool.canary_weight,
        wall_timeout_ms=pool.timeouts.wall_ms,
        idle_timeout_ms=pool.timeouts.idle_ms,
        preload=pool.preload,
        probe_interval_ms=probe_interval_ms,
        restart=RestartPolicy(**pool.restart.model_dump()),
        workload=pool.workload,
    )


def session_config(config: Config) -> SessionConfig:
    """The core's session limits (ORCH-3021, ORCH-3022)."""
    return SessionConfig(
        ttl_ms=config.sessions.ttl_ms,
        max_turns=config.sessions.max_turns,
        kv_budget_bytes=config.sessions.kv_budget_bytes,
    )


def core(config: Config) -> Orchestrator:
    """The core of a daemon with this configuration."""
    interval = config.server.health_interval_ms
    return Orchestrator(
        tuple(pool_spec(p, interval) for p in config.pools),
        session_config(config),
        stream_grace_ms=config.server.reconnect_grace_ms,
    )
