"""A core's whole state as JSON data (`snapshot`), and a core rebuilt from it (`restore`).

A snapshot holds the configuration and everything the inputs so far have built: every
pool (phase, model, reload under way, queue, watchdog, rate buckets, tenants, learned
service model, run of arrivals, recent prediction errors) and replica (life cycle,
generation, slots, history, restart tracker), every known task with its figures, the
reaped ids still remembered, the sessions, the task deadlines, the SLO windows, the clock
and the outbox. Whatever is derived from these
(readiness, usable replicas, free slots, the routing index, the timers' lower bounds) is
recomputed on restore. Orders that decide behaviour (queues, sessions, tasks on a replica)
are kept as lists, so a restored core decides exactly what the original would have:
`restore(snapshot(core))` continues where `core` stands. With the replayed tail of an
event log (`journal`) it is how a standby takes over.

The format is versioned (`FORMAT`); this module is the core's one reader and writer of
it, and the one place outside the facade that touches the facade's private state.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from orchestrator_core import codec
from orchestrator_core._state import State
from orchestrator_core._task import Task
from orchestrator_core.decisions import Action, Terminal
from orchestrator_core.errors import InvalidArgument
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.pools import Pool, ReloadProgress
from orchestrator_core.replica import FailureClass, PreloadOutcome, Replica
from orchestrator_core.replica_states import ReplicaState
from orchestrator_core.specs import CoreConfig, TaskSpec
from orchestrator_core.vocabulary import PoolPhase, Priority

FORMAT = 4


def snapshot(core: Orchestrator) -> dict[str, Any]:
    """The core's state as JSON data."""
    return {
        "format": FORMAT,
        "config": codec.to_plain(core.config),
        "now": core._now,
        "seq": core._seq,
        "pools": {pool_id: _pool(pool) for pool_id, pool in core._pools.items()},
        "tasks": [_task(task) for task in core._tasks.values()],
        "reaped": list(core._reaped),
        "sessions": core._sessions.export_state(),
        "deadlines": core._deadlines.export_state(),
        "unwatched": core._unwatched.export_state(),
        "shutdown_deadline_ms": core._shutdown_deadline_ms,
        "slo": {
            "tracker": core._slo.tracker.export_state(),
            "best_rate": dict(core._slo.best_rate),
        },
        "outbox": [codec.to_plain(action) for action in core._outbox],
    }


def restore(data: dict[str, Any]) -> Orchestrator:
    """A core in the state `data` describes (from `snapshot`)."""
    if data.get("format") != FORMAT:
        raise InvalidArgument(f"snapshot format {data.get('format')!r} is not {FORMAT}")
    config = codec.decode(CoreConfig, data["config"])
    core = Orchestrator(
        config.pools,
        config.sessions,
        dedup_window=config.dedup_window,
        rate_limit_clients=config.rate_limit_clients,
        stream_grace_ms=config.stream_grace_ms,
    )
    core._now = data["now"]
    core._seq = data["seq"]
    for pool_id, pool_data in data["pools"].items():
        _restore_pool(core._pools[pool_id], pool_data)
    core._targets = {}
    for pool in core._pools.values():
        key = (pool.spec.engine, pool.model_ref, pool.spec.workload)
        core._targets.setdefault(key, []).append(pool)
    for task_data in data["tasks"]:
        task = _restore_task(core, task_data)
        core._tasks[task.spec.task_id] = task
    core._reaped.clear()
    core._reaped.update(dict.fromkeys(data["reaped"]))
    core._sessions.restore_state(data["sessions"])
    core._deadlines.restore_state(data["deadlines"])
    core._unwatched.restore_state(data["unwatched"])
    core._shutdown_deadline_ms = data["shutdown_deadline_ms"]
    core._slo.tracker.restore_state(data["slo"]["tracker"])
    core._slo.best_rate = dict(data["slo"]["best_rate"])
    core._outbox = [codec.from_plain(Action, action) for action in data["outbox"]]
    for task in core._tasks.values():
        if task.state is State.QUEUED:
            task.pool.backlog.add(task.budget, task.spec.max_tokens)
    for pool in core._pools.values():
        pool.refresh()
    core._sync_timers()
    return core


def _pool(pool: Pool) -> dict[str, Any]:
    return {
        "phase": pool.phase.value,
        "model_ref": pool.model_ref,
        "desired_ref": pool.desired_ref,
        "last_error": pool.last_error,
        "reload": codec.to_plain(pool.reload),
        "pinned_version": pool.pinned_version,
        "drain_deadline_ms": pool.drain_deadline_ms,
        "service": pool.service.export_state(),
        "eta_errors": [list(pair) for pair in pool.eta_errors],
        "arrivals": pool.arrivals.export_state(),
        "queue": pool.queue.export_state(),
        "watchdog": pool.watchdog.export_state(),
        "buckets": {p.value: b.export_state() for p, b in pool.buckets.items()},
        "tenants": {tenant: list(ids) for tenant, ids in pool.tenants.items()},
        "replicas": {rid: _replica(r) for rid, r in pool.replicas.items()},
    }


def _restore_pool(pool: Pool, data: dict[str, Any]) -> None:
    pool.phase = PoolPhase(data["phase"])
    pool.model_ref = data["model_ref"]
    pool.desired_ref = data["desired_ref"]
    pool.last_error = data["last_error"]
    pool.reload = codec.from_plain(ReloadProgress | None, data["reload"])
    pool.pinned_version = data["pinned_version"]
    pool.drain_deadline_ms = data["drain_deadline_ms"]
    pool.service.restore_state(data["service"])
    pool.eta_errors.extend((actual, predicted) for actual, predicted in data["eta_errors"])
    pool.arrivals.restore_state(data["arrivals"])
    pool.queue.restore_state(data["queue"])
    pool.watchdog.restore_state(data["watchdog"])
    for priority, buckets in data["buckets"].items():
        pool.buckets[Priority(priority)].restore_state(buckets)
    pool.tenants = {tenant: OrderedDict.fromkeys(ids) for tenant, ids in data["tenants"].items()}
    for replica_id, replica_data in data["replicas"].items():
        _restore_replica(pool.replicas[replica_id], replica_data)
    pool.running = sum(r.busy for r in pool.replicas.values())


def _replica(replica: Replica) -> dict[str, Any]:
    devices = replica.reported_devices
    return {
        "state": replica.state.value,
        "generation": replica.generation,
        "model_ref": replica.model_ref,
        "live": replica.live,
        "engine_version": replica.engine_version,
        "model_digest": replica.model_digest,
        "reported_devices": None if devices is None else sorted(devices),
        "slots_total": replica.slots_total,
        "retry_at_ms": replica.retry_at_ms,
        "probe_due_ms": replica.probe_due_ms,
        "probe_pending": replica.probe_pending,
        "probe_failures": replica.probe_failures,
        "probe_successes": replica.probe_successes,
        "external": replica.external,
        "busy": replica.busy,
        "epoch": replica.epoch,
        "running": list(replica.running),
        "kv_usage": replica.kv_usage,
        "restarts": replica.restarts,
        "attempted": replica.attempted,
        "last_error": replica.last_error,
        "last_preload_outcome": codec.to_plain(replica.last_preload_outcome),
        "failure_class": codec.to_plain(replica.failure_class),
        "tracker": replica.tracker.export_state(),
    }


def _restore_replica(replica: Replica, data: dict[str, Any]) -> None:
    replica.state = ReplicaState(data["state"])
    replica.generation = data["generation"]
    replica.model_ref = data["model_ref"]
    replica.live = data["live"]
    replica.engine_version = data["engine_version"]
    replica.model_digest = data["model_digest"]
    devices = data["reported_devices"]
    replica.reported_devices = None if devices is None else frozenset(devices)
    replica.slots_total = data["slots_total"]
    replica.retry_at_ms = data["retry_at_ms"]
    replica.probe_due_ms = data["probe_due_ms"]
    replica.probe_pending = data["probe_pending"]
    replica.probe_failures = data["probe_failures"]
    replica.probe_successes = data["probe_successes"]
    replica.external = data["external"]
    replica.busy = data["busy"]
    replica.epoch = data["epoch"]
    replica.running = dict.fromkeys(data["running"])
    replica.kv_usage = data["kv_usage"]
    replica.restarts = data["restarts"]
    replica.attempted = data["attempted"]
    replica.last_error = data["last_error"]
    replica.last_preload_outcome = codec.from_plain(
        PreloadOutcome | None, data["last_preload_outcome"]
    )
    replica.failure_class = codec.from_plain(FailureClass | None, data["failure_class"])
    replica.tracker.restore_state(data["tracker"])


def _task(task: Task) -> dict[str, Any]:
    replica = task.replica
    return {
        "spec": codec.to_plain(task.spec),
        "pool": task.pool.pool_id,
        "seq": task.seq,
        "state": task.state.value,
        "admitted_ms": task.admitted_ms,
        "queue_position": task.queue_position,
        "predicted_start_ms": task.predicted_start_ms,
        "seed": task.seed,
        "replica": None if replica is None else replica.replica_id,
        "dispatched_ms": task.dispatched_ms,
        "first_token_ms": task.first_token_ms,
        "tokens": task.tokens,
        "busy_sum": task.busy_sum,
        "tokens_in": task.tokens_in,
        "outcome": codec.to_plain(task.outcome),
    }


def _restore_task(core: Orchestrator, data: dict[str, Any]) -> Task:
    pool = core._pools[data["pool"]]
    task = Task(
        codec.decode(TaskSpec, data["spec"]),
        pool,
        data["seq"],
        data["admitted_ms"],
        data["queue_position"],
        data["predicted_start_ms"],
        data["seed"],
    )
    task.state = State(data["state"])
    replica_id = data["replica"]
    task.replica = None if replica_id is None else pool.replicas[replica_id]
    task.dispatched_ms = data["dispatched_ms"]
    task.first_token_ms = data["first_token_ms"]
    task.tokens = data["tokens"]
    task.busy_sum = data["busy_sum"]
    task.tokens_in = data["tokens_in"]
    task.outcome = codec.from_plain(Terminal | None, data["outcome"])
    return task
