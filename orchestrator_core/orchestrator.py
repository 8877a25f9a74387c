"""The facade the server drives: input events and the current time in, decisions out.

`Orchestrator` owns every pool, replica, task and session, and decides everything about
them: admission, queueing, placement, the task life cycle (`_state`), the pool life cycle
(`pool_states`: drains, reloads, rollbacks, readiness) and the replica life cycle
(`replica_states`, `supervision`: preloads, probes, restarts with backoff, breakers). It
performs no I/O and reads no clock: each input (`inputs`) carries `now_ms` (any monotonic
millisecond clock; a value older than one already seen is treated as that one, so time
never goes back). Its state is a function of its configuration and its inputs, so a
recorded run replays (`journal`) and a snapshot restores (`persistence`).

Calls return decisions; decisions that arise as a side effect (a session evicted at
admission, a replica lost because a stream broke, a pool that finished draining) wait in
an outbox that `poll` and every other call returning `list[Action]` hand over, in order.
The server carries out every action and reports the outcome as a new input: a `Preload`
is answered by `replica_preloaded` or `replica_preload_failed`, a `Probe` by
`replica_probed`, quoting the replica's generation. It calls `poll` after each event it
feeds in and whenever `next_deadline_ms` comes due. Queries (`task`, `pool_view`,
`routes`, ...) change nothing.

Task ids are never reused: an id is refused as a duplicate while its task is known and,
after `reap`, for the next `dedup_window` reaped ids (a bounded window, oldest forgotten
first). A refused submit does not use up its id, so a client that honours a backoff can
retry with the same id. Terminal tasks stay known (for late stream subscribers) until the
server reaps them.

Cancel is race-free (ORCH-3026): once a task is terminal every later token, finish or
failure report for it is dropped (the methods return None), so no token is ever accepted
after a cancel was acknowledged.

A task whose last open stream closed (`unwatched`) is canceled (reason disconnect) unless a
stream opens again (`watched`) within `stream_grace_ms`: a client that reconnects resumes,
one that left frees its queue place or slot. A shutdown (`shut_down`) admits nothing more,
fails every queued task at once and every running task still running at the end of the
grace with SHUTTING_DOWN, a retriable error distinct from any cancel.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from orchestrator_core import admission, eta, inputs, reloads, supervision
from orchestrator_core._state import RUNNING, TERMINAL, Event, State, advance
from orchestrator_core._task import Task
from orchestrator_core.deadlines import Deadlines
from orchestrator_core.decisions import (
    Abort,
    AbortReason,
    Action,
    Admitted,
    CancelOutcome,
    CancelReason,
    CancelStatus,
    Dispatch,
    PoolChanged,
    Preload,
    Probe,
    Refused,
    SessionEvicted,
    TaskCanceled,
    TaskEnded,
    TaskFailed,
    TaskFigures,
    Terminal,
    TokenAccepted,
)
from orchestrator_core.errors import (
    ConfigError,
    InvalidArgument,
    UnknownPool,
    UnknownReplica,
)
from orchestrator_core.pool_states import SERVING, PoolEvent, advance_pool
from orchestrator_core.pools import Pool, ReloadProgress
from orchestrator_core.prediction import ServiceModel
from orchestrator_core.replica import (
    FailureClass,
    PreloadFailure,
    ProbeReport,
    Replica,
    ReplicaReport,
)
from orchestrator_core.replica_states import PROBED, ReplicaState
from orchestrator_core.seed import derive_seed
from orchestrator_core.sessions import Session, SessionInfo, SessionTable
from orchestrator_core.slo import SloSnapshot
from orchestrator_core.slo_book import SloBook
from orchestrator_core.specs import CoreConfig, PoolSpec, SessionConfig, TaskSpec
from orchestrator_core.supervision import Loss
from orchestrator_core.views import (
    PoolView,
    Readiness,
    ReplicaSetView,
    Route,
    TaskView,
    live_tasks,
    pool_view,
    replica_sets,
    route,
    task_now,
    task_view,
)
from orchestrator_core.vocabulary import (
    Engine,
    ErrorKind,
    FinishReason,
    KvHint,
    PoolPhase,
    Priority,
    QueuePolicy,
    Workload,
)
from orchestrator_core.watchdog import Timeout

_RELOADING = (PoolPhase.LOADING, PoolPhase.ROLLING_BACK)


class Orchestrator:
    """Queues, admission, placement, life cycles and sessions of all pools."""

    def __init__(
        self,
        pools: Iterable[PoolSpec],
        sessions: SessionConfig | None = None,
        *,
        dedup_window: int = 100_000,
        rate_limit_clients: int = 65_536,
        stream_grace_ms: int = 5_000,
        journal: inputs.InputSink | None = None,
    ) -> None:
        config = CoreConfig(
            tuple(pools),
            sessions if sessions is not None else SessionConfig(),
            dedup_window,
            rate_limit_clients,
            stream_grace_ms,
        )
        config.sessions.validate()
        if dedup_window < 0 or rate_limit_clients < 1 or stream_grace_ms < 0:
            raise ConfigError(
                "dedup_window and stream_grace_ms must be >= 0 and rate_limit_clients >= 1"
            )
        self.config = config
        self._pools: dict[str, Pool] = {}
        self._targets: dict[tuple[Engine, str, Workload], list[Pool]] = {}
        self._tasks: dict[str, Task] = {}
        self._reaped: OrderedDict[str, None] = OrderedDict()
        self._sessions = SessionTable(config.sessions)
        self._outbox: list[Action] = []
        self._deadlines = Deadlines()
        #: When each task that nobody follows any more is canceled, unless followed again.
        self._unwatched = Deadlines()
        #: When running tasks fail with SHUTTING_DOWN; None unless shutting down.
        self._shutdown_deadline_ms: int | None = None
        self._slo = SloBook()
        self._now = -(1 << 62)
        self._seq = 0
        #: A lower bound of the earliest replica timer (attempt or probe), None when none.
        self._replica_timer_ms: int | None = None
        for spec in config.pools:
            if spec.pool_id in self._pools:
                raise ConfigError(f"pool {spec.pool_id!r} is configured twice")
            spec.validate()
            pool = Pool(spec, rate_limit_clients)
            self._pools[spec.pool_id] = pool
            self._targets.setdefault((spec.engine, spec.model_ref, spec.workload), []).append(pool)
            if spec.preload:
                supervision.want(pool, self._outbox)
        self._journal = journal
        if journal is not None:
            journal.begin(config)

    # -- clock and outbox --------------------------------------------------------------

    def _clock(self, now_ms: int) -> int:
        if now_ms > self._now:
            self._now = now_ms
            return now_ms
        return self._now

    def _flush(self) -> list[Action]:
        out, self._outbox = self._outbox, []
        return out

    # -- pools and replicas ------------------------------------------------------------

    @property
    def pool_ids(self) -> tuple[str, ...]:
        """Configured pools, in config order."""
        return tuple(self._pools)

    def _pool(self, pool_id: str) -> Pool:
        try:
            return self._pools[pool_id]
        except KeyError:
            raise UnknownPool(f"unknown pool {pool_id!r}") from None

    def _replica(self, pool_id: str, replica_id: str) -> tuple[Pool, Replica]:
        pool = self._pool(pool_id)
        try:
            return pool, pool.replicas[replica_id]
        except KeyError:
            raise UnknownReplica(f"pool {pool.pool_id!r} has no replica {replica_id!r}") from None

    def replica_preloaded(
        self,
        pool_id: str,
        replica_id: str,
        generation: int,
        report: ReplicaReport,
        now_ms: int,
    ) -> list[Action]:
        """A `Preload` succeeded: the replica is Ready (ORCH-3002); a reload goes on."""
        if self._journal is not None:
            self._journal.record(inputs.Preloaded(pool_id, replica_id, generation, report, now_ms))
        now = self._clock(now_ms)
        awaited = self._awaited_preload(pool_id, replica_id, generation)
        if awaited is None:
            return self._flush()
        pool, replica, reload = awaited
        if reload is not None:
            step = reloads.preloaded(pool, reload, replica, report, now, self._outbox)
            self._after_reload_step(pool, reload, step, now)
        else:
            supervision.preloaded(pool, replica, report, now, self._outbox)
        self._after_replica_change(pool)
        self._sync_timers()
        return self._flush()

    def replica_preload_failed(
        self,
        pool_id: str,
        replica_id: str,
        generation: int,
        failure: PreloadFailure,
        now_ms: int,
    ) -> list[Action]:
        """A `Preload` failed: retry with backoff (ORCH-3038), or roll a reload back."""
        if self._journal is not None:
            self._journal.record(
                inputs.PreloadFailed(pool_id, replica_id, generation, failure, now_ms)
            )
        now = self._clock(now_ms)
        awaited = self._awaited_preload(pool_id, replica_id, generation)
        if awaited is None:
            return self._flush()
        pool, replica, reload = awaited
        if reload is not None:
            step = reloads.preload_failed(pool, reload, replica, failure, now, self._outbox)
            self._after_reload_step(pool, reload, step, now)
        else:
            self._lost(
                replica, supervision.preload_failed(pool, replica, failure, now, self._outbox)
            )
        self._after_replica_change(pool)
        self._sync_timers()
        return self._flush()

    def replica_probed(
        self, pool_id: str, replica_id: str, generation: int, probe: ProbeReport, now_ms: int
    ) -> list[Action]:
        """A `Probe` answered (ORCH-3010, ORCH-3038): keep, suspend, restore or lose the
        replica. A replica that stops being live fails its running tasks WORKER_RESET; a
        pool left without any live replica fails its queued tasks POOL_UNAVAILABLE."""
        if self._journal is not None:
            self._journal.record(inputs.Probed(pool_id, replica_id, generation, probe, now_ms))
        now = self._clock(now_ms)
        pool, replica = self._replica(pool_id, replica_id)
        if replica.generation != generation or replica.state not in PROBED:
            return self._flush()
        self._lost(replica, supervision.probed(pool, replica, probe, now, self._outbox))
        self._after_replica_change(pool)
        self._sync_timers()
        return self._flush()

    def _awaited_preload(
        self, pool_id: str, replica_id: str, generation: int
    ) -> tuple[Pool, Replica, ReloadProgress | None] | None:
        """The replica a preload outcome answers, with the reload whose engines are being
        replaced (preload outcomes go to it rather than to ordinary supervision); None
        when the answer is late (the replica has moved on since)."""
        pool, replica = self._replica(pool_id, replica_id)
        if replica.generation != generation or replica.state is not ReplicaState.PRELOADING:
            return None
        return pool, replica, pool.reload if pool.phase in _RELOADING else None

    def _sync_timers(self) -> None:
        """Recompute the earliest replica timer (after timers may have been added)."""
        due = [
            timer
            for pool in self._pools.values()
            for replica in pool.replicas.values()
            if (timer := supervision.next_due_ms(replica)) is not None
        ]
        self._replica_timer_ms = min(due) if due else None

    def _lost(self, replica: Replica, loss: Loss | None) -> None:
        """Fail what runs on a replica that went away (its streams are gone)."""
        if loss is None:
            return
        for task_id in list(replica.running):
            task = self._tasks[task_id]
            failed = self._failed(task, ErrorKind.WORKER_RESET, loss.message, loss.failure_class)
            self._end(task, Event.WORKER_RESET, failed, emit=True, abort=AbortReason.FAILED)

    def _after_replica_change(self, pool: Pool) -> None:
        self._sync_phase(pool)
        if not pool.is_live:
            for priority in Priority:
                for task_id in pool.queue.ids(priority):
                    task = self._tasks[task_id]
                    failed = self._failed(
                        task, ErrorKind.POOL_UNAVAILABLE, "pool has no live replica"
                    )
                    self._end(task, Event.POOL_LOST, failed, emit=True)

    def _sync_phase(self, pool: Pool) -> None:
        """Fold the replicas' readiness into a serving pool's phase."""
        pool.refresh()
        event = PoolEvent.REPLICA_READY if pool.usable_replicas else PoolEvent.NO_REPLICA
        self._set_phase(pool, event)

    def _set_phase(self, pool: Pool, event: PoolEvent, detail: str | None = None) -> None:
        """Advance the pool's phase (and a serving one's readiness); report a change."""
        previous = pool.phase
        phase = advance_pool(previous, event)
        if phase in SERVING and event not in (PoolEvent.REPLICA_READY, PoolEvent.NO_REPLICA):
            pool.phase = phase
            pool.refresh()
            ready = PoolEvent.REPLICA_READY if pool.usable_replicas else PoolEvent.NO_REPLICA
            phase = advance_pool(phase, ready)
        pool.phase = phase
        pool.refresh()
        if phase is not previous:
            self._outbox.append(PoolChanged(pool.pool_id, phase, previous, pool.model_ref, detail))

    # -- drain and reload (ORCH-2101, ORCH-2102) ---------------------------------------

    def drain(self, pool_id: str, deadline_ms: int, now_ms: int) -> list[Action]:
        """Stop admitting; cancel the queue now and running tasks after `deadline_ms`.

        `deadline_ms` is relative to `now_ms`. Queued tasks cannot be dispatched to a
        draining pool, so they are canceled at once (reason drain); running tasks may
        finish until the deadline, then `poll` cancels them and aborts their requests.
        Draining a draining pool keeps the earlier of the two deadlines; a pool under
        reload stays drained once the reload is over.
        """
        if self._journal is not None:
            self._journal.record(inputs.Drain(pool_id, deadline_ms, now_ms))
        now = self._clock(now_ms)
        self._drain(self._pool(pool_id), now + max(0, deadline_ms))
        return self._flush()

    def _drain(self, pool: Pool, deadline: int) -> None:
        if pool.reload is not None:
            pool.reload.hold = True
        if pool.phase in (PoolPhase.DRAINING, PoolPhase.RELOADING):
            deadline = min(deadline, pool.drain_deadline_ms)
        if pool.phase in SERVING or pool.phase in (PoolPhase.DRAINING, PoolPhase.RELOADING):
            pool.drain_deadline_ms = deadline
        self._set_phase(pool, PoolEvent.DRAIN)
        self._drain_queue(pool)
        self._check_idle(pool)

    def shut_down(self, grace_ms: int, now_ms: int) -> list[Action]:
        """The daemon stops: admit nothing more (503 SHUTTING_DOWN), fail every queued task
        now and every task still running after `grace_ms` with SHUTTING_DOWN (retriable,
        with a retry hint). Every pool drains; a second call keeps the earlier deadline."""
        if self._journal is not None:
            self._journal.record(inputs.ShutDown(grace_ms, now_ms))
        now = self._clock(now_ms)
        deadline = now + max(0, grace_ms)
        if self._shutdown_deadline_ms is not None:
            deadline = min(deadline, self._shutdown_deadline_ms)
        self._shutdown_deadline_ms = deadline
        for pool in self._pools.values():
            self._drain(pool, deadline)
        return self._flush()

    @property
    def shutting_down(self) -> bool:
        """A shutdown has begun: nothing new is admitted."""
        return self._shutdown_deadline_ms is not None

    def reload(self, pool_id: str, model_ref: str, now_ms: int) -> list[Action]:
        """Move the pool to `model_ref` (ORCH-2102, ORCH-3031): drain it (the pool's wall
        limit is the deadline), then load the new model on every replica, rolling back to
        the previous one if that fails. A reload asked for while the pool drains for
        another replaces its target; one asked for while engines are being replaced runs
        once that is over. Raises InvalidArgument for a pool whose engines the daemon does
        not run."""
        if self._journal is not None:
            self._journal.record(inputs.Reload(pool_id, model_ref, now_ms))
        now = self._clock(now_ms)
        pool = self._pool(pool_id)
        if not model_ref:
            raise InvalidArgument("a reload needs a model reference")
        unmanaged = [r.replica_id for r in pool.replicas.values() if not r.managed]
        if unmanaged:
            raise InvalidArgument(
                f"pool {pool_id!r}: replica {unmanaged[0]!r} is an engine reached by URL; the "
                "daemon cannot change the model it serves"
            )
        self._start_reload(pool, model_ref, now)
        return self._flush()

    def _start_reload(self, pool: Pool, model_ref: str, now: int) -> None:
        pool.desired_ref = model_ref
        reload = pool.reload
        if reload is not None and pool.phase in _RELOADING:
            reload.pending = model_ref
            return
        if reload is not None:
            reload.target = model_ref
            return
        deadline = now + pool.spec.wall_timeout_ms
        if pool.phase is PoolPhase.DRAINING:
            deadline = min(deadline, pool.drain_deadline_ms)
        pool.drain_deadline_ms = deadline
        pool.reload = ReloadProgress(model_ref, pool.model_ref)
        self._set_phase(
            pool, PoolEvent.RELOAD, f"reloading {pool.pool_id}: {pool.model_ref} -> {model_ref}"
        )
        self._drain_queue(pool)
        self._check_idle(pool)

    def _drain_queue(self, pool: Pool) -> None:
        """End every queued task of a pool that stopped admitting: canceled by a drain or
        a reload, failed by a shutdown."""
        for priority in Priority:
            for task_id in pool.queue.ids(priority):
                self._end_drained(self._tasks[task_id], None)

    def _end_drained(self, task: Task, abort: AbortReason | None) -> None:
        """End a task its pool's drain leaves no room for (`abort` when it was running)."""
        if self._shutdown_deadline_ms is not None:
            failed = self._failed(
                task,
                ErrorKind.SHUTTING_DOWN,
                "the daemon is shutting down; retry after the hint",
                backoff_ms=admission.SHUTDOWN_BACKOFF_MS,
            )
            shutdown = None if abort is None else AbortReason.SHUTDOWN
            self._end(task, Event.SHUTDOWN, failed, emit=True, abort=shutdown)
            return
        replica = task.replica
        canceled = TaskCanceled(
            task.spec.task_id,
            task.pool.pool_id,
            None if replica is None else replica.replica_id,
            CancelReason.DRAIN,
            self._figures(task),
        )
        self._end(task, Event.DRAIN, canceled, emit=True, abort=abort)

    def _check_idle(self, pool: Pool) -> None:
        """A draining pool with nothing running is drained; a reload goes on to load."""
        if pool.running:
            return
        if pool.phase is PoolPhase.DRAINING:
            self._set_phase(pool, PoolEvent.IDLE, "drained")
        elif pool.phase is PoolPhase.RELOADING:
            reload = pool.reload
            assert reload is not None
            self._set_phase(pool, PoolEvent.IDLE, f"loading {reload.target}")
            reloads.begin(pool, reload, self._outbox)
            pool.refresh()

    def _after_reload_step(
        self, pool: Pool, reload: ReloadProgress, step: reloads.Step, now: int
    ) -> None:
        if step is reloads.Step.LOADING:
            return
        if step is reloads.Step.FAILED:
            self._set_phase(pool, PoolEvent.LOAD_FAILED, pool.last_error)
            return
        if step is reloads.Step.LOADED:
            self._apply_model(pool, reload.target)
            pool.last_error = None
            self._set_phase(pool, PoolEvent.LOADED, f"{pool.pool_id} now serves {pool.model_ref}")
        else:
            if reload.pending is None:
                pool.desired_ref = pool.model_ref
            self._set_phase(pool, PoolEvent.ROLLED_BACK, pool.last_error)
        reloads.finish(pool, now)
        pool.reload = None
        if reload.pending is not None:
            self._start_reload(pool, reload.pending, now)
        elif reload.hold:
            pool.drain_deadline_ms = now
            self._set_phase(pool, PoolEvent.DRAIN)
            self._check_idle(pool)

    def _apply_model(self, pool: Pool, model_ref: str) -> None:
        """The pool serves `model_ref` from now on: route it there, and forget what the
        previous model's tasks taught (service time, SLO figures)."""
        engine, workload = pool.spec.engine, pool.spec.workload
        old = self._targets[engine, pool.model_ref, workload]
        old.remove(pool)
        if not old:
            del self._targets[engine, pool.model_ref, workload]
        pool.model_ref = model_ref
        members = self._targets.setdefault((engine, model_ref, workload), [])
        members.append(pool)
        order = list(self._pools)
        members.sort(key=lambda p: order.index(p.pool_id))
        pool.service = ServiceModel(pool.spec.initial_service_ms, pool.spec.ewma_alpha)
        self._slo.forget(pool.pool_id)

    # -- admission ---------------------------------------------------------------------

    def submit(self, spec: TaskSpec, now_ms: int) -> Admitted | Refused:
        """Admit a task into a pool's queue, or refuse it (see `admission` for the order)."""
        if self._journal is not None:
            self._journal.record(inputs.Submit(spec, now_ms))
        now = self._clock(now_ms)
        if self._shutdown_deadline_ms is not None:
            return admission.shutting_down(spec)
        refusal = admission.check_request(spec) or self._check_duplicate(spec)
        if refusal is not None:
            return refusal
        chosen = self._choose_pool(spec, now)
        if isinstance(chosen, Refused):
            return chosen
        refusal = self._check_limits(chosen, spec, now)
        if refusal is not None:
            return refusal
        room = self._make_room(chosen, spec, now)
        if isinstance(room, Refused):
            return room
        return self._enqueue(chosen, spec, now, *room)

    def _check_duplicate(self, spec: TaskSpec) -> Refused | None:
        task_id = spec.task_id
        if task_id in self._tasks or task_id in self._reaped:
            return Refused(
                task_id,
                ErrorKind.DUPLICATE_TASK,
                f"task_id {task_id!r} is already in use",
                0,
                engine=spec.engine,
                field="task_id",
            )
        return None

    def _choose_pool(self, spec: TaskSpec, now: int) -> Pool | Refused:
        """The pool for the task among those serving its model now; a refusal that finds
        only pools waiting for their first task (`preload: false`) starts loading them."""
        candidates = self._targets.get((spec.engine, spec.model_ref, spec.workload), ())
        affine: Pool | None = None
        if len(candidates) > 1 and spec.session_id is not None and spec.kv_hint is not KvHint.COLD:
            session = self._sessions.get(spec.session_id, now)
            if session is not None and session.pool_id is not None:
                affine = self._pools.get(session.pool_id)
        chosen = admission.select_pool(spec, candidates, affine, self._tasks, now)
        if isinstance(chosen, Refused) and chosen.kind in (
            ErrorKind.POOL_UNREADY,
            ErrorKind.POOL_UNAVAILABLE,
        ):
            for pool in candidates:
                supervision.want(pool, self._outbox)
        return chosen

    def _check_limits(self, pool: Pool, spec: TaskSpec, now: int) -> Refused | None:
        """The client's rate limit and the tenant's quota (ORCH-3006, ORCH-3036)."""
        buckets = pool.buckets.get(spec.priority)
        if buckets is not None:
            refusal = admission.check_rate(pool, buckets, spec, now)
            if refusal is not None:
                return refusal
        quota = pool.spec.tenant_max_concurrent
        if quota is not None:
            return admission.check_quota(pool, quota, spec, now, self._tasks)
        return None

    def _make_room(
        self, pool: Pool, spec: TaskSpec, now: int
    ) -> tuple[int, TaskFailed | None] | Refused:
        """The queue-full backoff and the task evicted to make room, or the refusal when the
        pool's full policy makes none (ORCH-3005)."""
        priority = spec.priority
        limit = pool.queue.blocking_limit(priority)
        if limit is None:
            return 0, None
        backoff = admission.queue_backoff_ms(pool, self._tasks, priority, limit, now)
        victim = pool.queue.victim(pool.spec.full_policy, priority, limit)
        if victim is None:
            return admission.queue_full(pool, spec, limit, backoff)
        return backoff, self._evict(pool, victim[0])

    def _enqueue(
        self, pool: Pool, spec: TaskSpec, now: int, backoff: int, evicted: TaskFailed | None
    ) -> Admitted:
        """Take the task in: tokens, quota and session turn are spent, its place and
        predicted start decided (ORCH-3029)."""
        task_id, priority, queue = spec.task_id, spec.priority, pool.queue
        buckets = pool.buckets.get(priority)
        if buckets is not None:
            buckets.take(spec.client_id, now)
        if pool.spec.tenant_max_concurrent is not None:
            pool.tenants.setdefault(spec.tenant_id, OrderedDict())[task_id] = None
        if spec.session_id is not None:
            self._sessions.begin_turn(spec.session_id, now, self._outbox.append)
        seed = spec.seed if spec.seed is not None else derive_seed(task_id)
        index = queue.depth(priority)
        position = queue.position(priority, index)
        forecast = eta.forecast(pool, self._tasks, now, eta.head_for(position))
        predicted = eta.predicted_start_ms(pool, forecast, priority, index, position, now)
        pool.arrivals.arrive(priority, now, eta.dispatch_interval_ms(pool, forecast))
        self._seq += 1
        task = Task(spec, pool, self._seq, now, position, predicted, seed)
        self._tasks[task_id] = task
        queue.push(task_id, priority, self._seq)
        pool.backlog.add(task.budget, spec.max_tokens)
        if evicted is None:
            filled = queue.blocking_limit(priority)
            if filled is not None:
                backoff = admission.queue_backoff_ms(pool, self._tasks, priority, filled, now)
        if spec.deadline_ms is not None:
            self._deadlines.arm(task_id, now + spec.deadline_ms)
        return Admitted(task_id, pool.pool_id, position, predicted, backoff, seed, evicted)

    def _evict(self, pool: Pool, task_id: str) -> TaskFailed:
        task = self._tasks[task_id]
        if pool.spec.full_policy is QueuePolicy.DROP_LRU:
            kind, why = ErrorKind.QUEUE_FULL_DROP_LRU, "oldest queued task dropped"
        else:
            kind, why = ErrorKind.ADMISSION_REJECT, "batch task shed for interactive work"
        failed = self._failed(task, kind, f"{why}: the queue of pool {pool.pool_id!r} is full")
        self._end(task, Event.EVICT, failed)
        return failed

    # -- dispatch and timers -----------------------------------------------------------

    def poll(self, now_ms: int) -> list[Action]:
        """Fire due timers, dispatch queued work onto free slots, hand over pending actions.

        Expired sessions are evicted first. Tasks whose own deadline ran out fail next
        (DECODE_TIMEOUT, with an Abort when running), so an expired queued task is never
        dispatched; then tasks nobody came back to follow within the grace are canceled
        (disconnect). Then per pool, in order: watchdog timeouts (FAILED DECODE_TIMEOUT +
        Abort, ORCH-3016), an expired drain window (CANCELED + Abort), replica timers (the
        next preload attempt, the next probe), then dispatches in scheduling order.
        """
        if self._journal is not None:
            self._journal.record(inputs.Poll(now_ms))
        now = self._clock(now_ms)
        self._sessions.expire(now, self._outbox.append)
        self._expire_deadlines(now)
        self._expire_unwatched(now)
        timers = self._replica_timer_ms
        timers_due = timers is not None and timers <= now
        for pool in self._pools.values():
            if pool.running:
                self._fire_watchdog(pool, now)
                if pool.draining and now >= pool.drain_deadline_ms:
                    self._cancel_running(pool)
            if timers_due:
                for replica in pool.replicas.values():
                    due = supervision.next_due_ms(replica)
                    if due is not None and due <= now:
                        supervision.due(pool, replica, now, self._outbox)
            if pool.queue and pool.free_slots > 0 and not pool.draining:
                self._dispatch(pool, now)
        if timers_due:
            self._sync_timers()
        return self._flush()

    def next_deadline_ms(self) -> int | None:
        """The earliest time at which `poll` has timed work (watchdog, drain, replica
        attempts and probes, session TTL, task deadlines, streams left)."""
        due = []
        for pool in self._pools.values():
            watchdog = pool.watchdog.next_deadline_ms()
            if watchdog is not None:
                due.append(watchdog)
            if pool.draining and pool.running:
                due.append(pool.drain_deadline_ms)
        if self._replica_timer_ms is not None:
            due.append(self._replica_timer_ms)
        expiry = self._sessions.next_expiry_ms()
        if expiry is not None:
            due.append(expiry)
        for deadlines in (self._deadlines, self._unwatched):
            deadline = deadlines.next_deadline_ms()
            if deadline is not None:
                due.append(deadline)
        return min(due) if due else None

    def _expire_deadlines(self, now: int) -> None:
        for task_id in self._deadlines.expired(now):
            task = self._tasks[task_id]
            budget = task.spec.deadline_ms
            failed = self._failed(
                task, ErrorKind.DECODE_TIMEOUT, f"deadline of {budget} ms from admission exceeded"
            )
            abort = AbortReason.TIMEOUT if task.state in RUNNING else None
            self._end(task, Event.DEADLINE, failed, emit=True, abort=abort)

    def _expire_unwatched(self, now: int) -> None:
        for task_id in self._unwatched.expired(now):
            outcome = self._cancel(self._tasks[task_id], CancelReason.DISCONNECT)
            self._outbox.extend(a for a in (outcome.canceled, outcome.abort) if a is not None)

    def _fire_watchdog(self, pool: Pool, now: int) -> None:
        for task_id, timeout in pool.watchdog.expired(now):
            task = self._tasks[task_id]
            limit = (
                pool.spec.wall_timeout_ms if timeout is Timeout.WALL else pool.spec.idle_timeout_ms
            )
            failed = self._failed(
                task, ErrorKind.DECODE_TIMEOUT, f"{timeout} timeout of {limit} ms exceeded"
            )
            self._end(
                task, Event.TIMEOUT, failed, emit=True, abort=AbortReason.TIMEOUT, armed=False
            )

    def _cancel_running(self, pool: Pool) -> None:
        for replica in pool.replicas.values():
            for task_id in list(replica.running):
                self._end_drained(self._tasks[task_id], AbortReason.DRAINED)

    @staticmethod
    def _affine_replica(session: Session, pool: Pool) -> Replica | None:
        """The session's last replica if it is in `pool` and still holds the KV."""
        if session.pool_id != pool.pool_id or session.replica_id is None:
            return None
        replica = pool.replicas.get(session.replica_id)
        if replica is None or replica.epoch != session.epoch:
            return None
        return replica

    def _dispatch(self, pool: Pool, now: int) -> None:
        queue, tasks, outbox = pool.queue, self._tasks, self._outbox
        pool_id, model_ref = pool.spec.pool_id, pool.model_ref
        while queue and pool.free_slots > 0:
            task = tasks[queue.pop_next()]
            task_spec = task.spec
            task_id = task_spec.task_id
            pool.backlog.remove(task.budget, task_spec.max_tokens)
            eta.record_start(pool, task, now)
            session_id = task_spec.session_id
            session = None if session_id is None else self._sessions.get(session_id, now)
            affine = None if session is None else self._affine_replica(session, pool)
            replica = pool.place(affine if task_spec.kv_hint is not KvHint.COLD else None)
            assert replica is not None
            task.state = advance(task.state, Event.DISPATCH)
            task.replica = replica
            task.dispatched_ms = now
            pool.occupy(replica, task_id)
            pool.watchdog.arm(task_id, now)
            warm = replica is affine
            returning_cold = session is not None and session.replica_id is not None and not warm
            if session is not None:
                session.kv_warmth = warm
            outbox.append(
                Dispatch(
                    task_id,
                    pool_id,
                    replica.replica_id,
                    model_ref,
                    replica.engine_version,
                    replica.model_digest,
                    task.seed,
                    warm,
                    now - task.admitted_ms,
                    task.queue_position,
                    task.predicted_start_ms,
                    False if returning_cold else None,
                )
            )

    # -- running tasks -----------------------------------------------------------------

    def on_token(self, task_id: str, now_ms: int) -> TokenAccepted | None:
        """Accept the next token of a running task; None drops it (task not running)."""
        if self._journal is not None:
            self._journal.record(inputs.Token(task_id, now_ms))
        task = self._tasks.get(task_id)
        if task is None or task.state in TERMINAL:
            return None
        now = self._clock(now_ms)
        task.state = advance(task.state, Event.TOKEN)
        index = task.tokens
        task.tokens = index + 1
        replica = task.replica
        assert replica is not None
        task.busy_sum += replica.busy
        if index == 0:
            task.first_token_ms = now
        task.pool.watchdog.touch(task_id, now)
        return TokenAccepted(task_id, index)

    def on_finish(
        self, task_id: str, finish_reason: FinishReason, tokens_in: int, now_ms: int
    ) -> TaskEnded | None:
        """The engine finished a task normally; None when it already ended otherwise.

        `tokens_in` is the engine's prompt-token count; the tokens out are the tokens
        accepted, which is what the client was sent (ORCH-2002: `end` agrees with the
        stream).
        """
        if self._journal is not None:
            self._journal.record(inputs.Finish(task_id, finish_reason, tokens_in, now_ms))
        if finish_reason is FinishReason.CANCELED:
            raise InvalidArgument(
                "a finish reason of 'canceled' comes from cancel(), not the engine"
            )
        task = self._tasks.get(task_id)
        if task is None or task.state in TERMINAL:
            return None
        advance(task.state, Event.FINISH)
        now = self._clock(now_ms)
        replica = task.replica
        assert replica is not None
        pool = task.pool
        task.tokens_in = tokens_in
        ended = TaskEnded(
            task_id, pool.pool_id, replica.replica_id, finish_reason, self._figures(task)
        )
        eta.learn(pool, task, now)
        self._end(task, Event.FINISH, ended)
        session_id = task.spec.session_id
        if session_id is not None:
            self._sessions.record_end(
                session_id,
                pool.pool_id,
                replica,
                (tokens_in + task.tokens) * pool.spec.kv_bytes_per_token,
                now,
                self._outbox.append,
            )
        return ended

    def on_failure(
        self,
        task_id: str,
        kind: ErrorKind,
        message: str,
        now_ms: int,
        failure_class: FailureClass | None = None,
    ) -> TaskFailed | None:
        """The adapter reports a running task failed; None when it already ended.

        A WORKER_RESET means the task's stream broke: its replica is lost (ORCH-3038),
        the other tasks on it fail the same way, and what that decides waits in the
        outbox.
        """
        if self._journal is not None:
            self._journal.record(inputs.Fail(task_id, kind, message, now_ms, failure_class))
        task = self._tasks.get(task_id)
        if task is None or task.state in TERMINAL:
            return None
        now = self._clock(now_ms)
        failed = self._failed(task, kind, message, failure_class)
        replica = task.replica
        self._end(
            task, Event.WORKER_RESET if kind is ErrorKind.WORKER_RESET else Event.FAIL, failed
        )
        if kind is ErrorKind.WORKER_RESET and replica is not None and replica.state in PROBED:
            pool = task.pool
            self._lost(
                replica,
                supervision.lose(
                    pool, replica, "reset a stream", failure_class, now, self._outbox, message
                ),
            )
            self._after_replica_change(pool)
            self._sync_timers()
        return failed

    def cancel(
        self, task_id: str, now_ms: int, reason: CancelReason = CancelReason.CLIENT
    ) -> CancelOutcome:
        """Cancel a task in any state; idempotent (ORCH-3017, ORCH-3026)."""
        if self._journal is not None:
            self._journal.record(inputs.Cancel(task_id, now_ms, reason))
        self._clock(now_ms)
        task = self._tasks.get(task_id)
        if task is None:
            if task_id in self._reaped:
                return CancelOutcome(CancelStatus.ALREADY_TERMINAL)
            return CancelOutcome(CancelStatus.UNKNOWN)
        if task.state in TERMINAL:
            return CancelOutcome(CancelStatus.ALREADY_TERMINAL, terminal=task.outcome)
        return self._cancel(task, reason)

    def _cancel(self, task: Task, reason: CancelReason) -> CancelOutcome:
        replica = task.replica
        canceled = TaskCanceled(
            task.spec.task_id,
            task.pool.pool_id,
            None if replica is None else replica.replica_id,
            reason,
            self._figures(task),
        )
        was_running = task.state in RUNNING
        self._end(task, Event.CANCEL, canceled)
        if not was_running:
            return CancelOutcome(CancelStatus.CANCELED_QUEUED, canceled)
        return CancelOutcome(
            CancelStatus.CANCELED_RUNNING, canceled, self._abort(task, AbortReason.CANCELED)
        )

    def unwatched(self, task_id: str, now_ms: int) -> list[Action]:
        """The last open stream of a task closed: unless one opens within
        `stream_grace_ms` (a client reconnecting), the task is canceled (disconnect)."""
        if self._journal is not None:
            self._journal.record(inputs.Unwatched(task_id, now_ms))
        now = self._clock(now_ms)
        task = self._tasks.get(task_id)
        if task is not None and task.state not in TERMINAL:
            self._unwatched.arm(task_id, now + self.config.stream_grace_ms)
            self._expire_unwatched(now)
        return self._flush()

    def watched(self, task_id: str, now_ms: int) -> None:
        """A stream of a task opened: a cancel pending since its last stream closed is off."""
        if self._journal is not None:
            self._journal.record(inputs.Watched(task_id, now_ms))
        self._clock(now_ms)
        self._unwatched.disarm(task_id)

    # -- terminal bookkeeping ----------------------------------------------------------

    def _figures(self, task: Task) -> TaskFigures:
        """The task's figures as of now (the core's clock)."""
        now = self._now
        dispatched = task.dispatched_ms
        if dispatched < 0:
            return TaskFigures(now - task.admitted_ms, None, None, task.tokens_in, task.tokens)
        first = task.first_token_ms
        return TaskFigures(
            dispatched - task.admitted_ms,
            now - dispatched,
            None if first is None else first - dispatched,
            task.tokens_in,
            task.tokens,
        )

    def _failed(
        self,
        task: Task,
        kind: ErrorKind,
        message: str,
        failure_class: FailureClass | None = None,
        backoff_ms: int = 0,
    ) -> TaskFailed:
        replica = task.replica
        return TaskFailed(
            task.spec.task_id,
            task.pool.pool_id,
            None if replica is None else replica.replica_id,
            task.pool.spec.engine,
            kind,
            message,
            self._figures(task),
            failure_class,
            backoff_ms,
        )

    @staticmethod
    def _abort(task: Task, reason: AbortReason) -> Abort:
        replica = task.replica
        assert replica is not None
        return Abort(task.spec.task_id, task.pool.pool_id, replica.replica_id, reason)

    def _end(
        self,
        task: Task,
        event: Event,
        outcome: Terminal,
        *,
        emit: bool = False,
        abort: AbortReason | None = None,
        armed: bool = True,
    ) -> None:
        """Move a task to its terminal state and give back whatever it held.

        With `emit` the outcome (and an Abort, when given) goes to the outbox, ahead of
        what releasing the task may cause (a drained pool, a reload going on). `armed=False`
        when the watchdog has already let go of the task.
        """
        previous = task.state
        task.state = advance(previous, event)
        task.outcome = outcome
        spec = task.spec
        task_id = spec.task_id
        if spec.deadline_ms is not None:
            self._deadlines.disarm(task_id)
        self._unwatched.disarm(task_id)
        if emit:
            self._outbox.append(outcome)
            if abort is not None:
                self._outbox.append(self._abort(task, abort))
        pool = task.pool
        replica = task.replica
        if previous is State.QUEUED:
            pool.queue.remove(task_id, spec.priority)
            pool.backlog.remove(task.budget, spec.max_tokens)
        else:
            assert replica is not None
            pool.vacate(replica, task_id)
            if armed:
                pool.watchdog.disarm(task_id)
        if pool.spec.tenant_max_concurrent is not None:
            in_flight = pool.tenants[spec.tenant_id]
            del in_flight[task_id]
            if not in_flight:
                del pool.tenants[spec.tenant_id]
        if not isinstance(outcome, TaskCanceled):
            self._count_slo(task, outcome)
        if pool.draining and previous is not State.QUEUED:
            self._check_idle(pool)

    def _count_slo(self, task: Task, outcome: TaskEnded | TaskFailed) -> None:
        """Count an ended or failed task toward its pool's and replica set's SLOs."""
        replica, figures = task.replica, outcome.figures
        scopes = (task.pool.pool_id,) if replica is None else replica.slo_scopes
        first = task.first_token_ms
        self._slo.record(
            scopes,
            task.spec.priority,
            self._now,
            first_token_ms=figures.first_token_ms,
            decode_ms=None if first is None else self._now - first,
            tokens_out=task.tokens,
            kind=outcome.kind if isinstance(outcome, TaskFailed) else None,
        )

    def reap(self, task_id: str) -> bool:
        """Forget a terminal task (its id stays taken for the dedup window); False if not."""
        if self._journal is not None:
            self._journal.record(inputs.Reap(task_id))
        task = self._tasks.get(task_id)
        if task is None or task.state not in TERMINAL:
            return False
        del self._tasks[task_id]
        if self.config.dedup_window:
            reaped = self._reaped
            reaped[task_id] = None
            if len(reaped) > self.config.dedup_window:
                reaped.popitem(last=False)
        return True

    # -- sessions ----------------------------------------------------------------------

    def delete_session(self, session_id: str, now_ms: int) -> SessionEvicted | None:
        """`DELETE /v1/sessions/{id}`; None when unknown or expired (ORCH-2005)."""
        if self._journal is not None:
            self._journal.record(inputs.DeleteSession(session_id, now_ms))
        return self._sessions.delete(session_id, self._clock(now_ms))

    # -- queries (they change nothing) -------------------------------------------------

    def task(self, task_id: str, now_ms: int | None = None) -> TaskView | None:
        """Where a known task is, or None; with `now_ms`, a queued task's position and
        predicted start are as of then (ORCH-3029), else its admission's."""
        task = self._tasks.get(task_id)
        if task is None:
            return None
        if now_ms is None:
            return task_view(task)
        return task_now(task.pool, self._tasks, task, max(now_ms, self._now))

    def pool_tasks(
        self, pool_id: str, now_ms: int, queued_limit: int | None = None
    ) -> tuple[TaskView, ...]:
        """A pool's running and queued tasks (the first `queued_limit` queued ones when
        given), the queue in serving order with positions and predicted starts as of
        `now_ms`; raises UnknownPool."""
        pool = self._pool(pool_id)
        return live_tasks(pool, self._tasks, max(now_ms, self._now), queued_limit)

    def session_info(self, session_id: str, now_ms: int) -> SessionInfo | None:
        """`GET /v1/sessions/{id}`; None when unknown or expired (ORCH-2004)."""
        return self._sessions.info(session_id, max(now_ms, self._now))

    def pool_view(self, pool_id: str, now_ms: int) -> PoolView:
        """`GET /v1/pools/{id}/health` (ORCH-2103); raises UnknownPool."""
        return pool_view(self._pool(pool_id), max(now_ms, self._now))

    def replica_sets(self) -> tuple[ReplicaSetView, ...]:
        """`GET /v1/replicasets` (ORCH-2104)."""
        return replica_sets(self._pools.values())

    def routes(self, model_ref: str) -> tuple[Route, ...]:
        """The pools that serve `model_ref` as applied now, any engine, in config order:
        the one routing answer that admission, the OpenAI routes and `/v1/models` share."""
        return tuple(route(p) for p in self._pools.values() if p.model_ref == model_ref)

    def models(self) -> tuple[str, ...]:
        """The models served now, each once, in config order of their first pool."""
        return tuple(dict.fromkeys(p.model_ref for p in self._pools.values()))

    def readiness(self) -> Readiness:
        """Per pool whether it takes work, and whether every pool that preloads has
        finished its first attempt on every replica (ORCH-3002)."""
        pools = tuple((p.pool_id, p.is_ready) for p in self._pools.values())
        done = all(
            r.attempted for p in self._pools.values() if p.spec.preload for r in p.replicas.values()
        )
        return Readiness(pools, done)

    def slo(self, scope: str, now_ms: int) -> SloSnapshot:
        """SLO figures of a pool (or, with `slo_book.set_scope`, a replica set) over the
        recent window (ORCH-3041)."""
        return self._slo.snapshot(scope, max(now_ms, self._now))

    def in_flight(self) -> list[Preload | Probe]:
        """The engine actions the core has decided and still waits to hear back from
        (preloads under way, probes sent; not those still in the outbox): what a scheduler
        taking over from one that died sends again."""
        out: list[Preload | Probe] = []
        for pool in self._pools.values():
            for replica in pool.replicas.values():
                action = supervision.awaiting(pool, replica)
                if action is not None and action not in self._outbox:
                    out.append(action)
        return out

    def running(self) -> tuple[str, ...]:
        """The ids of the tasks placed on a replica and not ended, in admission order."""
        return tuple(t.spec.task_id for t in self._tasks.values() if t.state in RUNNING)

    @property
    def has_pending_actions(self) -> bool:
        """Actions wait in the outbox for the next `poll`."""
        return bool(self._outbox)

    @property
    def kv_bytes(self) -> int:
        """KV bytes resident for all sessions, for the KV-pressure metric (ORCH-3022)."""
        return self._sessions.kv_bytes

    @property
    def kv_budget_bytes(self) -> int:
        """The configured session KV budget."""
        return self._sessions.config.kv_budget_bytes
