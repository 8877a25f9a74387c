"""Read-only views for the control plane, routing and metrics (ORCH-2103, ORCH-2104, ORCH-3028).

`pool_view` answers `GET /v1/pools/{id}/health`: the pool's phase, model (applied and
desired), readiness, queue and slot figures, and every replica with its life-cycle state
and history. `replica_sets` answers `GET /v1/replicasets`: one entry per replica-set key
(ORCH-3007) with its slots over Ready members, load = (running + queued) / slots, and every
member replica with its pool and readiness. `routes` answers which pools serve a model as
applied now (ORCH-2001, ORCH-3007): admission, the OpenAI routes and the model list all ask
it. Views are frozen values: reading one changes nothing in the core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orchestrator_core import eta
from orchestrator_core._state import State
from orchestrator_core._task import Task
from orchestrator_core.decisions import Terminal
from orchestrator_core.placement import ReplicaSetKey
from orchestrator_core.pools import Pool
from orchestrator_core.replica import FailureClass, PreloadOutcome, Replica
from orchestrator_core.replica_states import ReplicaState
from orchestrator_core.restarts import BreakerState
from orchestrator_core.vocabulary import Engine, PoolPhase, Priority, Workload


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica as its pool sees it, with its supervision history (ORCH-3038)."""

    replica_id: str
    state: ReplicaState
    generation: int
    live: bool
    ready: bool
    usable: bool
    engine_version: str | None
    model_digest: str | None
    slots_total: int
    slots_free: int
    running: int
    restarts: int
    breaker: BreakerState
    last_error: str | None
    last_preload_outcome: PreloadOutcome | None
    failure_class: FailureClass | None
    retry_in_ms: int | None
    kv_usage: float | None


@dataclass(frozen=True, slots=True)
class PoolView:
    """One pool's phase, model, health and load."""

    pool_id: str
    engine: Engine
    model_ref: str
    desired_ref: str
    phase: PoolPhase
    engine_version: str | None
    live: bool
    ready: bool
    draining: bool
    queue_depth_interactive: int
    queue_depth_batch: int
    running: int
    slots_total: int
    slots_free: int
    service_time_ms: int
    drain_remaining_ms: int | None
    last_error: str | None
    replicas: tuple[ReplicaView, ...]
    eta_error_median_ms: int | None = None
    eta_error_median_ratio: float | None = None

    @property
    def queue_depth(self) -> int:
        """Queued tasks of both priorities."""
        return self.queue_depth_interactive + self.queue_depth_batch

    @property
    def model_digest(self) -> str | None:
        """The digest of the model the pool's replicas loaded, when one reported it."""
        return next((r.model_digest for r in self.replicas if r.model_digest), None)


@dataclass(frozen=True, slots=True)
class ReplicaSetMember:
    """A replica of a replica set, with the pool it belongs to."""

    pool_id: str
    replica_id: str
    live: bool
    ready: bool
    draining: bool


@dataclass(frozen=True, slots=True)
class ReplicaSetView:
    """One replica set's identity, slots and load."""

    set_id: str
    key: ReplicaSetKey
    slots_total: int
    slots_free: int
    load: float
    members: tuple[ReplicaSetMember, ...]


@dataclass(frozen=True, slots=True)
class Route:
    """A pool that serves a model as applied now: its engine, context limit and state."""

    pool_id: str
    engine: Engine
    model_ref: str
    ctx_limit: int
    live: bool
    ready: bool
    workload: Workload = Workload.COMPLETION


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the daemon serves (ORCH-3002): every pool that preloads has finished its
    first attempt on every replica, and at least one pool is Ready."""

    pools: tuple[tuple[str, bool], ...]
    first_preloads_done: bool

    @property
    def serving(self) -> bool:
        """The daemon takes work."""
        return self.first_preloads_done and any(ready for _, ready in self.pools)


@dataclass(frozen=True, slots=True)
class TaskView:
    """Where a task is, for status queries, late stream subscribers and the control-plane
    event stream.

    From `Orchestrator.task`, `queue_position` and `predicted_start_ms` are the figures
    given at admission; from `Orchestrator.pool_tasks` a queued task's are as of now.
    `admitted_ms`, `dispatched_ms` and `first_token_ms` are instants on the core's clock
    (None until they happened).
    """

    task_id: str
    state: State
    pool_id: str
    replica_id: str | None
    priority: Priority
    session_id: str | None
    seed: int
    queue_position: int
    predicted_start_ms: int
    tokens: int
    outcome: Terminal | None
    admitted_ms: int
    dispatched_ms: int | None
    first_token_ms: int | None

    @property
    def queue_time_ms(self) -> int | None:
        """Admission to dispatch, once dispatched."""
        return None if self.dispatched_ms is None else self.dispatched_ms - self.admitted_ms

    @property
    def time_to_first_token_ms(self) -> int | None:
        """Admission to the first token, once it came (what a client waits)."""
        return None if self.first_token_ms is None else self.first_token_ms - self.admitted_ms


def task_view(task: Task, position: int | None = None, predicted_ms: int | None = None) -> TaskView:
    """The view of one task; `position` and `predicted_ms` replace the admission figures."""
    spec, replica = task.spec, task.replica
    return TaskView(
        spec.task_id,
        task.state,
        task.pool.pool_id,
        None if replica is None else replica.replica_id,
        spec.priority,
        spec.session_id,
        task.seed,
        task.queue_position if position is None else position,
        task.predicted_start_ms if predicted_ms is None else predicted_ms,
        task.tokens,
        task.outcome,
        task.admitted_ms,
        None if task.dispatched_ms < 0 else task.dispatched_ms,
        task.first_token_ms,
    )


def task_now(pool: Pool, tasks: Mapping[str, Task], task: Task, now_ms: int) -> TaskView:
    """The view of one task; a queued one with its position and predicted start as of
    `now_ms` (ORCH-3029), the same figures `live_tasks` gives it."""
    if task.state is not State.QUEUED:
        return task_view(task)
    priority = task.spec.priority
    index = pool.queue.index(task.spec.task_id, priority)
    position = pool.queue.position(priority, index)
    forecast = eta.forecast(pool, tasks, now_ms)
    predicted = eta.predicted_start_ms(pool, forecast, priority, index, position, now_ms)
    return task_view(task, position, predicted)


def live_tasks(
    pool: Pool, tasks: Mapping[str, Task], now_ms: int, queued_limit: int | None = None
) -> tuple[TaskView, ...]:
    """A pool's queued and running tasks: those running (replica by replica, in dispatch
    order), then the queue in the order it will be served, each queued task with its
    position and predicted start as of now (ORCH-3029); with `queued_limit`, only the
    queue's first `queued_limit` tasks (positions within a class grow with its order, so
    they are among the first `queued_limit` of each class)."""
    running = [task_view(tasks[t]) for r in pool.replicas.values() for t in r.running]
    queue = pool.queue
    forecast = eta.forecast(pool, tasks, now_ms)
    queued = []
    for priority in Priority:
        for index, task_id in enumerate(queue.ids(priority, queued_limit)):
            position = queue.position(priority, index)
            predicted = eta.predicted_start_ms(pool, forecast, priority, index, position, now_ms)
            queued.append(task_view(tasks[task_id], position, predicted))
    queued.sort(key=lambda view: view.queue_position)
    return (*running, *queued[:queued_limit])


def replica_view(replica: Replica, now_ms: int) -> ReplicaView:
    """The view of one replica."""
    retry_at = replica.retry_at_ms
    return ReplicaView(
        replica.replica_id,
        replica.state,
        replica.generation,
        replica.live,
        replica.ready,
        replica.usable,
        replica.engine_version,
        replica.model_digest,
        replica.slots_total,
        replica.slots_free,
        replica.busy,
        replica.restarts,
        replica.tracker.state,
        replica.last_error,
        replica.last_preload_outcome,
        replica.failure_class,
        None if retry_at is None else max(0, retry_at - now_ms),
        replica.kv_usage,
    )


def pool_view(pool: Pool, now_ms: int) -> PoolView:
    """The view of one pool."""
    replicas = tuple(replica_view(r, now_ms) for r in pool.replicas.values())
    total, free = pool.slots()
    spec = pool.spec
    last_error = pool.last_error or next((r.last_error for r in replicas if r.last_error), None)
    remaining = max(0, pool.drain_deadline_ms - now_ms) if pool.draining else None
    return PoolView(
        spec.pool_id,
        spec.engine,
        pool.model_ref,
        pool.desired_ref,
        pool.phase,
        pool.pinned_version,
        pool.is_live,
        pool.is_ready,
        pool.draining,
        pool.queue.depth(Priority.INTERACTIVE),
        pool.queue.depth(Priority.BATCH),
        pool.running,
        total,
        free,
        eta.typical_service_ms(pool),
        remaining,
        last_error,
        replicas,
        *eta.error_medians(pool),
    )


def route(pool: Pool) -> Route:
    """The route through one pool."""
    spec = pool.spec
    return Route(
        spec.pool_id,
        spec.engine,
        pool.model_ref,
        spec.ctx_limit,
        pool.is_live,
        pool.is_ready,
        spec.workload,
    )


def replica_sets(pools: Iterable[Pool]) -> tuple[ReplicaSetView, ...]:
    """All replica sets, ordered by set id.

    A set's load is (running + queued) / slots over its members that take work; a pool's
    queued tasks count toward the set its usable replicas are in (the one it dispatches
    to). An idle set, or one without slots, has load 0.
    """
    groups: dict[ReplicaSetKey, list[tuple[ReplicaSetMember, int, int, int]]] = {}
    waiting: dict[ReplicaSetKey, int] = {}
    for pool in pools:
        queued = pool.queue.depth(Priority.INTERACTIVE) + pool.queue.depth(Priority.BATCH)
        for replica in pool.replicas.values():
            member = ReplicaSetMember(
                pool.pool_id, replica.replica_id, replica.live, replica.ready, pool.draining
            )
            taking = pool.is_ready and replica in pool.usable_replicas
            key = pool.key_of(replica)
            if taking and queued:
                waiting[key] = waiting.get(key, 0) + queued
                queued = 0
            entry = (replica.slots_total, replica.slots_free, replica.busy) if taking else (0, 0, 0)
            groups.setdefault(key, []).append((member, *entry))
    views = []
    for key, entries in groups.items():
        total = sum(e[1] for e in entries)
        free = sum(e[2] for e in entries)
        busy = sum(e[3] for e in entries) + waiting.get(key, 0)
        load = busy / total if total else 0.0
        views.append(
            ReplicaSetView(key.set_id, key, total, free, load, tuple(e[0] for e in entries))
        )
    return tuple(sorted(views, key=lambda s: s.set_id))
