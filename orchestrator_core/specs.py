"""What the server feeds the core: pool, replica, session and task specifications.

These are plain frozen dataclasses that mirror the daemon's configuration (pools, their
replicas, queues and supervision) and the admission request. `PoolSpec.validate` and
`SessionConfig.validate` raise `ConfigError` for anything the core cannot honour, so a bad
pool never reaches the scheduler.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator_core.errors import ConfigError
from orchestrator_core.restarts import RestartPolicy
from orchestrator_core.vocabulary import Engine, KvHint, Priority, QueuePolicy, Workload

MAX_SESSION_TTL_MS = 600_000
MAX_SESSION_TURNS = 8
#: ORCH-3038 and ORCH-3053 defaults: 1 s doubling to 60 s, five failures in 10 min trip.
DEFAULT_RESTART = RestartPolicy()


@dataclass(frozen=True, slots=True)
class PriorityLimits:
    """Per-priority admission limits of a pool (ORCH-3004, ORCH-3006).

    `queue_capacity` caps this priority's share of the queue; `rate_limit_rps` and
    `rate_limit_burst` define each client's token bucket for this priority (the burst
    defaults to max(1, ceil(rps))).
    """

    queue_capacity: int | None = None
    rate_limit_rps: float | None = None
    rate_limit_burst: int | None = None

    @property
    def burst(self) -> int:
        """The bucket size in tasks (meaningful when a rate is set)."""
        if self.rate_limit_burst is not None:
            return self.rate_limit_burst
        return max(1, math.ceil(self.rate_limit_rps or 1.0))


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """One engine server of a pool.

    `devices` defaults to the pool's whole mask; `slots_total` is used until the engine
    reports its own slot count (and counts as 1 when neither is known). `managed`: the
    daemon runs the engine (and restarts it under a circuit breaker); an engine reached by
    URL is only re-probed.
    """

    replica_id: str
    devices: tuple[int, ...] | None = None
    slots_total: int | None = None
    managed: bool = True


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A pool: one model on one device mask, served by one or more replicas (ORCH-3001).

    Service-time prediction starts from `initial_service_ms` and follows an EWMA with
    weight `ewma_alpha` (ORCH-3029). `kv_bytes_per_token` turns a session turn's tokens into
    KV bytes (ORCH-3022). `unready_retry_ms` is the retry hint given while the pool is not
    Ready and no replica announced when it will be back (ORCH-3018). `canary_weight` marks
    the pool a canary of its route: that percentage of the route's tasks, chosen by task id,
    goes to canary pools (ORCH-3033). `preload`: replicas load at start (else on the
    first task routed to the pool, ORCH-3002); `probe_interval_ms`: how often a Ready
    replica's health is probed; `restart`: the backoff and breaker of failed replicas
    (ORCH-3038, ORCH-3053). `workload`: the kind of task its replicas serve; a task goes
    only to pools of its own workload.
    """

    pool_id: str
    engine: Engine
    model_ref: str
    ctx_limit: int
    devices: tuple[int, ...]
    replicas: tuple[ReplicaSpec, ...]
    quant: str | None = None
    sampler_profile_version: str = "v1"
    require_same_engine_version: bool = True
    capacity: int = 256
    full_policy: QueuePolicy = QueuePolicy.REJECT
    interactive_burst: int = 4
    interactive: PriorityLimits = PriorityLimits()
    batch: PriorityLimits = PriorityLimits()
    tenant_max_concurrent: int | None = None
    wall_timeout_ms: int = 60_000
    idle_timeout_ms: int = 5_000
    initial_service_ms: int = 1_000
    ewma_alpha: float = 0.2
    kv_bytes_per_token: int = 0
    unready_retry_ms: int = 1_000
    canary_weight: int | None = None
    preload: bool = True
    probe_interval_ms: int = 1_000
    restart: RestartPolicy = DEFAULT_RESTART
    workload: Workload = Workload.COMPLETION

    def limits(self, priority: Priority) -> PriorityLimits:
        """The admission limits of one priority class."""
        return self.interactive if priority is Priority.INTERACTIVE else self.batch

    def validate(self) -> None:
        """Raise ConfigError naming the first field the core cannot honour."""
        where = f"pool {self.pool_id!r}"
        if not self.pool_id:
            raise ConfigError("pool_id must not be empty")
        _positive(where, "ctx_limit", self.ctx_limit)
        if not self.devices or len(set(self.devices)) != len(self.devices):
            raise ConfigError(f"{where}: devices must be a non-empty mask without repeats")
        if not self.replicas:
            raise ConfigError(f"{where}: a pool needs at least one replica")
        ids = [r.replica_id for r in self.replicas]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"{where}: replica ids must be unique")
        mask = set(self.devices)
        for replica in self.replicas:
            if replica.devices is not None and not set(replica.devices) <= mask:
                raise ConfigError(
                    f"{where}: replica {replica.replica_id!r} uses devices outside the mask"
                )
            if replica.slots_total is not None:
                _positive(where, "slots_total", replica.slots_total)
        for name in (
            "capacity",
            "interactive_burst",
            "wall_timeout_ms",
            "idle_timeout_ms",
            "initial_service_ms",
            "unready_retry_ms",
            "probe_interval_ms",
        ):
            _positive(where, name, getattr(self, name))
        if self.tenant_max_concurrent is not None:
            _positive(where, "tenant_max_concurrent", self.tenant_max_concurrent)
        if not 0.0 < self.ewma_alpha <= 1.0:
            raise ConfigError(f"{where}: ewma_alpha must lie in (0, 1]")
        if self.kv_bytes_per_token < 0:
            raise ConfigError(f"{where}: kv_bytes_per_token must not be negative")
        if self.canary_weight is not None and not 0 <= self.canary_weight <= 100:
            raise ConfigError(f"{where}: canary_weight must lie in 0..100")
        for priority in Priority:
            limits = self.limits(priority)
            if limits.queue_capacity is not None:
                _positive(where, f"{priority}.queue_capacity", limits.queue_capacity)
            if limits.rate_limit_rps is not None and not limits.rate_limit_rps > 0:
                raise ConfigError(f"{where}: {priority}.rate_limit_rps must be positive")
            if limits.rate_limit_burst is not None:
                _positive(where, f"{priority}.rate_limit_burst", limits.rate_limit_burst)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Session limits (ORCH-3021, ORCH-3022): sliding TTL, turns, and the KV budget.

    The TTL runs from a session's last use; `max_sessions` bounds the table even when KV
    sizes are unknown (zero bytes per token).
    """

    ttl_ms: int = MAX_SESSION_TTL_MS
    max_turns: int = MAX_SESSION_TURNS
    kv_budget_bytes: int = 1 << 30
    max_sessions: int = 65_536

    def validate(self) -> None:
        """Raise ConfigError when a limit exceeds the hard caps (10 min, 8 turns)."""
        if not 1 <= self.ttl_ms <= MAX_SESSION_TTL_MS:
            raise ConfigError(f"sessions: ttl_ms must lie in 1..{MAX_SESSION_TTL_MS}")
        if not 1 <= self.max_turns <= MAX_SESSION_TURNS:
            raise ConfigError(f"sessions: max_turns must lie in 1..{MAX_SESSION_TURNS}")
        if self.kv_budget_bytes < 0:
            raise ConfigError("sessions: kv_budget_bytes must not be negative")
        _positive("sessions", "max_sessions", self.max_sessions)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One admission request, as the server parsed it (ORCH-2001).

    The target is the replica set serving {engine, model_ref, workload} (optionally
    narrowed to one `pool_id` and one `sampler_profile_version`). `prompt_tokens` is
    counted by the caller (adapter tokenizer or estimate). `client_id` keys the rate
    limiter and `tenant_id` the concurrency quota; an empty string is the anonymous
    caller. `deadline_ms`, when given, is the task's budget from admission: spent,
    queued or running, it fails DECODE_TIMEOUT. `expected_tokens` is the client's guess
    of its output, a hint for start-time prediction only.
    """

    task_id: str
    engine: Engine
    model_ref: str
    ctx: int
    max_tokens: int
    prompt_tokens: int
    priority: Priority = Priority.INTERACTIVE
    session_id: str | None = None
    client_id: str = ""
    tenant_id: str = ""
    pool_id: str | None = None
    seed: int | None = None
    sampler_profile_version: str | None = None
    kv_hint: KvHint | None = None
    deadline_ms: int | None = None
    workload: Workload = Workload.COMPLETION
    expected_tokens: int | None = None


def _positive(where: str, name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{where}: {name} must be at least 1")


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Everything a core is built from: its pools, session limits and table bounds, and
    how long a task nobody follows any more waits for its client to come back
    (`stream_grace_ms`)."""

    pools: tuple[PoolSpec, ...]
    sessions: SessionConfig
    dedup_window: int
    rate_limit_clients: int
    stream_grace_ms: int = 5_000
