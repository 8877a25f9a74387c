"""The facade the server drives: events and the current time in, decisions out.

`Orchestrator` owns every pool, task and session. It performs no I/O and reads no clock:
each call takes `now_ms` (any monotonic millisecond clock; a value older than one already
seen is treated as that one, so time never goes back). Calls return decisions; decisions
that arise as a side effect (a session evicted at admission, a pool that finished
draining) wait in an outbox that `poll` and every other call returning `list[Action]`
hand over, in order. The server calls `poll` after each event it feeds in and whenever
`next_deadline_ms` comes due.

Task ids are never reused: an id is refused as a duplicate while its task is known and,
after `reap`, for the next `dedup_window` reaped ids (a bounded window, oldest forgotten
first). A refused submit does not use up its id, so a client that honours a backoff can
retry with the same id. Terminal tasks stay known (for late stream subscribers) until the
server reaps them.

Cancel is race-free (ORCH-3026): once a task is terminal every later token, finish or
failure report for it is dropped (the methods return None), so no token is ever accepted
after a cancel was acknowledged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from orchestrator_core import admission
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
    PoolDrained,
    Refused,
    SessionEvicted,
    TaskCanceled,
    TaskEnded,
    TaskFailed,
    Terminal,
    TokenAccepted,
)
from orchestrator_core.errors import (
    ConfigError,
    ErrorKind,
    InvalidArgument,
    PoolBusy,
    UnknownPool,
    UnknownReplica,
)
from orchestrator_core.placement import Replica
from orchestrator_core.pools import Pool
from orchestrator_core.prediction import predict_start_ms
from orchestrator_core.seed import derive_seed
from orchestrator_core.sessions import Session, SessionInfo, SessionTable
from orchestrator_core.snapshots import (
    PoolHealth,
    ReplicaSetSnapshot,
    TaskView,
    pool_health,
    replica_sets,
)
from orchestrator_core.specs import (
    FinishReason,
    KvHint,
    PoolSpec,
    Priority,
    QueuePolicy,
    ReplicaStatus,
    SessionConfig,
    TaskSpec,
)
from orchestrator_core.watchdog import Timeout


class Orchestrator:
    """Queues, admission, placement, life cycle and sessions of all pools."""

    def __init__(self, pools: Iterable[PoolSpec], sessions: SessionConfig | None = None, *,
                 dedup_window: int = 100_000, rate_limit_clients: int = 65_536) -> None:
        session_config = sessions if sessions is not None else SessionConfig()
        session_config.validate()
        if dedup_window < 0 or rate_limit_clients < 1:
            raise ConfigError("dedup_window must be >= 0 and rate_limit_clients >= 1")
        self._rate_limit_clients = rate_limit_clients
        self._dedup_window = dedup_window
        self._pools: dict[str, Pool] = {}
        self._targets: dict[tuple[str, str], list[Pool]] = {}
        self._tasks: dict[str, Task] = {}
        self._reaped: OrderedDict[str, None] = OrderedDict()
        self._sessions = SessionTable(session_config)
        self._outbox: list[Action] = []
        self._deadlines = Deadlines()
        self._now = -(1 << 62)
        self._seq = 0
        for spec in pools:
            if spec.pool_id in self._pools:
                raise ConfigError(f"pool {spec.pool_id!r} is configured twice")
            self.replace_pool(spec)

    # -- clock and outbox --------------------------------------------------------------

    def _clock(self, now_ms: int) -> int:
        if now_ms > self._now:
            self._now = now_ms
            return now_ms
        return self._now

    def _flush(self) -> list[Action]:
        out, self._outbox = self._outbox, []
        return out

    def _emit_session(self, evicted: SessionEvicted) -> None:
        self._outbox.append(evicted)

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

    def _replica(self, pool: Pool, replica_id: str) -> Replica:
        try:
            return pool.replicas[replica_id]
        except KeyError:
            raise UnknownReplica(
                f"pool {pool.pool_id!r} has no replica {replica_id!r}") from None

    def replace_pool(self, spec: PoolSpec) -> None:
        """Add a pool, or replace an idle one (a reload swaps the model this way).

        A replaced pool keeps its draining flag; its replicas start not live until they
        report. Raises PoolBusy while it still has queued or running tasks.
        """
        spec.validate()
        old = self._pools.get(spec.pool_id)
        pool = Pool(spec, self._rate_limit_clients)
        if old is not None:
            if old.queue or old.running:
                raise PoolBusy(f"pool {spec.pool_id!r} still has tasks; drain it first")
            pool.draining, pool.drain_deadline_ms = old.draining, old.drain_deadline_ms
            pool.refresh()
            old_target = self._targets[old.spec.engine, old.spec.model_ref]
            old_target.remove(old)
            if not old_target:
                del self._targets[old.spec.engine, old.spec.model_ref]
        self._pools[spec.pool_id] = pool
        members = self._targets.setdefault((spec.engine, spec.model_ref), [])
        members.append(pool)
        order = list(self._pools)
        members.sort(key=lambda p: order.index(p.pool_id))

    def update_replica(self, pool_id: str, replica_id: str, status: ReplicaStatus,
                       now_ms: int) -> list[Action]:
        """Take a replica's reported state (ORCH-3019, ORCH-3032, ORCH-3046).

        A replica that stops being live fails its running tasks with WORKER_RESET; a pool
        left without any live replica fails its queued tasks with POOL_UNAVAILABLE.
        """
        now = self._clock(now_ms)
        pool = self._pool(pool_id)
        replica = self._replica(pool, replica_id)
        was_live = replica.live
        replica.apply(status, now)
        if was_live and not replica.live:
            self._fail_running(replica, "replica is no longer live")
        self._after_replica_change(pool)
        return self._flush()

    def replica_failed(self, pool_id: str, replica_id: str, now_ms: int,
                       message: str = "worker failed") -> list[Action]:
        """A worker crashed or reset (ORCH-3038): fail its tasks, mark it down."""
        self._clock(now_ms)
        pool = self._pool(pool_id)
        replica = self._replica(pool, replica_id)
        replica.mark_down()
        self._fail_running(replica, message)
        self._after_replica_change(pool)
        return self._flush()

    def _fail_running(self, replica: Replica, message: str) -> None:
        for task_id in list(replica.running):
            task = self._tasks[task_id]
            self._end(task, Event.WORKER_RESET,
                      self._failed(task, ErrorKind.WORKER_RESET, message), emit=True)

    def _after_replica_change(self, pool: Pool) -> None:
        pool.refresh()
        if not pool.is_live:
            self._fail_queue(pool, "pool has no live replica")

    def _fail_queue(self, pool: Pool, message: str) -> None:
        for priority in Priority:
            for task_id in pool.queue.ids(priority):
                task = self._tasks[task_id]
                self._end(task, Event.POOL_LOST,
                          self._failed(task, ErrorKind.POOL_UNAVAILABLE, message), emit=True)

    def drain(self, pool_id: str, deadline_ms: int, now_ms: int) -> list[Action]:
        """Stop admitting; cancel the queue now and running tasks after `deadline_ms`.

        `deadline_ms` is relative to `now_ms`. Queued tasks cannot be dispatched to a
        draining pool, so they are canceled at once (reason drain); running tasks may
        finish until the deadline, then `poll` cancels them and aborts their requests.
        Draining a draining pool keeps the earlier of the two deadlines.
        `PoolDrained` follows when nothing runs any more (ORCH-2101).
        """
        now = self._clock(now_ms)
        pool = self._pool(pool_id)
        deadline = now + max(0, deadline_ms)
        if pool.draining:
            deadline = min(deadline, pool.drain_deadline_ms)
        pool.draining = True
        pool.drain_deadline_ms = deadline
        pool.refresh()
        for priority in Priority:
            for task_id in pool.queue.ids(priority):
                task = self._tasks[task_id]
                self._end(task, Event.DRAIN,
                          TaskCanceled(task_id, pool.pool_id, None, CancelReason.DRAIN),
                          emit=True)
        if pool.running == 0:
            self._outbox.append(PoolDrained(pool.pool_id))
        return self._flush()

    def drain_remaining_ms(self, pool_id: str, now_ms: int) -> int | None:
        """Milliseconds left of the pool's drain window; None when it is not draining."""
        pool = self._pool(pool_id)
        return max(0, pool.drain_deadline_ms - now_ms) if pool.draining else None

    def undrain(self, pool_id: str) -> None:
        """Let a drained pool admit and dispatch again (after a reload, say).

        A `PoolDrained` of this pool still waiting in the outbox is withdrawn: the pool
        serves again, and a stale notice must not let a reload proceed.
        """
        pool = self._pool(pool_id)
        pool.draining = False
        pool.refresh()
        self._outbox = [a for a in self._outbox
                        if not (isinstance(a, PoolDrained) and a.pool_id == pool_id)]

    # -- admission ---------------------------------------------------------------------

    def submit(self, spec: TaskSpec, now_ms: int) -> Admitted | Refused:
        """Admit a task into a pool's queue, or refuse it (see `admission` for the order)."""
        now = self._clock(now_ms)
        task_id = spec.task_id
        refusal = admission.check_request(spec)
        if refusal is not None:
            return refusal
        if task_id in self._tasks or task_id in self._reaped:
            return Refused(task_id, ErrorKind.DUPLICATE_TASK,
                           f"task_id {task_id!r} is already in use", 0, engine=spec.engine,
                           field="task_id")
        candidates = self._targets.get((spec.engine, spec.model_ref), ())
        affine: Pool | None = None
        if len(candidates) > 1 and spec.session_id is not None and spec.kv_hint is not KvHint.COLD:
            session = self._sessions.get(spec.session_id, now)
            if session is not None and session.pool_id is not None:
                affine = self._pools.get(session.pool_id)
        chosen = admission.select_pool(spec, candidates, affine, now)
        if isinstance(chosen, Refused):
            return chosen
        pool = chosen
        priority = spec.priority
        buckets = pool.buckets.get(priority)
        if buckets is not None:
            refusal = admission.check_rate(pool, buckets, spec, now)
            if refusal is not None:
                return refusal
        quota = pool.spec.tenant_max_concurrent
        if quota is not None:
            refusal = admission.check_quota(pool, quota, spec, now, self._tasks)
            if refusal is not None:
                return refusal
        queue = pool.queue
        limit = queue.blocking_limit(priority)
        backoff = 0
        evicted: TaskFailed | None = None
        if limit is not None:
            backoff = admission.queue_backoff_ms(pool, priority, limit)
            victim = queue.victim(pool.spec.full_policy, priority, limit)
            if victim is None:
                return admission.queue_full(pool, spec, limit, backoff)
            evicted = self._evict(pool, victim[0])
        if buckets is not None:
            buckets.take(spec.client_id, now)
        if quota is not None:
            pool.tenants.setdefault(spec.tenant_id, OrderedDict())[task_id] = None
        if spec.session_id is not None:
            self._sessions.begin_turn(spec.session_id, now, self._emit_session)
        seed = spec.seed if spec.seed is not None else derive_seed(task_id)
        position = queue.position(priority, queue.depth(priority))
        total, free = pool.slots()
        predicted = predict_start_ms(position, total, free, pool.service.estimate_ms)
        self._seq += 1
        self._tasks[task_id] = Task(spec, pool, self._seq, now, position, predicted, seed)
        queue.push(task_id, priority, self._seq)
        if evicted is None:
            filled = queue.blocking_limit(priority)
            if filled is not None:
                backoff = admission.queue_backoff_ms(pool, priority, filled)
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

        Tasks whose own deadline ran out fail first (DECODE_TIMEOUT, with an Abort when
        running), so an expired queued task is never dispatched. Then per pool, in order:
        watchdog timeouts (FAILED DECODE_TIMEOUT + Abort, ORCH-3016),
        an expired drain window (CANCELED + Abort), then dispatches in scheduling order.
        Expired sessions are evicted first.
        """
        now = self._clock(now_ms)
        self._sessions.expire(now, self._emit_session)
        self._expire_deadlines(now)
        for pool in self._pools.values():
            if pool.running:
                self._fire_watchdog(pool, now)
                if pool.draining and now >= pool.drain_deadline_ms:
                    self._cancel_running(pool)
            if pool.queue and pool.free_slots > 0 and not pool.draining:
                self._dispatch(pool, now)
        return self._flush()

    def next_deadline_ms(self) -> int | None:
        """The earliest time at which `poll` has timed work (watchdog, drain, session TTL,
        task deadlines)."""
        due = [d for d in (p.watchdog.next_deadline_ms() for p in self._pools.values())
               if d is not None]
        due.extend(p.drain_deadline_ms for p in self._pools.values()
                   if p.draining and p.running)
        expiry = self._sessions.next_expiry_ms()
        if expiry is not None:
            due.append(expiry)
        deadline = self._deadlines.next_deadline_ms()
        if deadline is not None:
            due.append(deadline)
        return min(due) if due else None

    def _expire_deadlines(self, now: int) -> None:
        for task_id in self._deadlines.expired(now):
            task = self._tasks[task_id]
            budget = task.spec.deadline_ms
            failed = self._failed(task, ErrorKind.DECODE_TIMEOUT,
                                  f"deadline of {budget} ms from admission exceeded")
            abort = AbortReason.TIMEOUT if task.state in RUNNING else None
            self._end(task, Event.DEADLINE, failed, emit=True, abort=abort)

    def _fire_watchdog(self, pool: Pool, now: int) -> None:
        for task_id, timeout in pool.watchdog.expired(now):
            task = self._tasks[task_id]
            limit = (pool.spec.wall_timeout_ms if timeout is Timeout.WALL
                     else pool.spec.idle_timeout_ms)
            failed = self._failed(task, ErrorKind.DECODE_TIMEOUT,
                                  f"{timeout} timeout of {limit} ms exceeded")
            self._end(task, Event.TIMEOUT, failed, emit=True, abort=AbortReason.TIMEOUT,
                      armed=False)

    def _cancel_running(self, pool: Pool) -> None:
        for replica in pool.replicas.values():
            for task_id in list(replica.running):
                task = self._tasks[task_id]
                canceled = TaskCanceled(task_id, pool.pool_id, replica.replica_id,
                                        CancelReason.DRAIN)
                self._end(task, Event.DRAIN, canceled, emit=True, abort=AbortReason.DRAINED)

    @staticmethod
    def _affine_replica(session: Session, pool: Pool) -> Replica | None:
        """The session's last replica if it is in `pool` and still holds the KV."""
        replica = session.replica
        if (replica is None or replica.epoch != session.epoch
                or pool.replicas.get(replica.replica_id) is not replica):
            return None
        return replica

    def _dispatch(self, pool: Pool, now: int) -> None:
        queue, tasks, outbox = pool.queue, self._tasks, self._outbox
        pool_id = pool.spec.pool_id
        while queue and pool.free_slots > 0:
            task = tasks[queue.pop_next()]
            task_spec = task.spec
            task_id = task_spec.task_id
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
            if session is not None:
                session.kv_warmth = warm
            outbox.append(Dispatch(
                task_id, pool_id, replica.replica_id, replica.engine_version,
                replica.model_digest, task.seed, warm, now - task.admitted_ms,
                task.queue_position, task.predicted_start_ms))

    # -- running tasks -----------------------------------------------------------------

    def on_token(self, task_id: str, now_ms: int) -> TokenAccepted | None:
        """Accept the next token of a running task; None drops it (task not running)."""
        task = self._tasks.get(task_id)
        if task is None or task.state in TERMINAL:
            return None
        now = self._clock(now_ms)
        task.state = advance(task.state, Event.TOKEN)
        index = task.tokens
        task.tokens = index + 1
        if index == 0:
            task.first_token_ms = now
        task.pool.watchdog.touch(task_id, now)
        return TokenAccepted(task_id, index)

    def on_finish(self, task_id: str, finish_reason: FinishReason, tokens_in: int,
                  tokens_out: int, now_ms: int) -> TaskEnded | None:
        """The engine finished a task normally; None when it already ended otherwise."""
        if finish_reason is FinishReason.CANCELED:
            raise InvalidArgument("a finish reason of 'canceled' comes from cancel(), not the "
                                  "engine")
        task = self._tasks.get(task_id)
        if task is None or task.state in TERMINAL:
            return None
        advance(task.state, Event.FINISH)
        now = self._clock(now_ms)
        replica = task.replica
        assert replica is not None
        pool = task.pool
        decode_ms = now - task.dispatched_ms
        first = task.first_token_ms
        ended = TaskEnded(task_id, pool.pool_id, replica.replica_id, finish_reason, tokens_in,
                          tokens_out, task.dispatched_ms - task.admitted_ms, decode_ms,
                          None if first is None else first - task.dispatched_ms)
        self._end(task, Event.FINISH, ended)
        pool.service.observe(decode_ms)
        session_id = task.spec.session_id
        if session_id is not None:
            self._sessions.record_end(session_id, pool.pool_id, replica,
                                      (tokens_in + tokens_out) * pool.spec.kv_bytes_per_token,
                                      now, self._emit_session)
        return ended

    def on_failure(self, task_id: str, kind: ErrorKind, message: str,
                   now_ms: int) -> TaskFailed | None:
        """The adapter reports a running task failed; None when it already ended."""
        task = self._tasks.get(task_id)
        if task is None or task.state in TERMINAL:
            return None
        self._clock(now_ms)
        failed = self._failed(task, kind, message)
        self._end(task, Event.FAIL, failed)
        return failed

    def cancel(self, task_id: str, now_ms: int) -> CancelOutcome:
        """Cancel a task in any state; idempotent (ORCH-3017, ORCH-3026)."""
        self._clock(now_ms)
        task = self._tasks.get(task_id)
        if task is None:
            if task_id in self._reaped:
                return CancelOutcome(CancelStatus.ALREADY_TERMINAL)
            return CancelOutcome(CancelStatus.UNKNOWN)
        if task.state in TERMINAL:
            return CancelOutcome(CancelStatus.ALREADY_TERMINAL, terminal=task.outcome)
        replica = task.replica
        canceled = TaskCanceled(task_id, task.pool.pool_id,
                                None if replica is None else replica.replica_id,
                                CancelReason.CLIENT)
        was_running = task.state in RUNNING
        self._end(task, Event.CANCEL, canceled)
        if not was_running:
            return CancelOutcome(CancelStatus.CANCELED_QUEUED, canceled)
        return CancelOutcome(CancelStatus.CANCELED_RUNNING, canceled,
                             self._abort(task, AbortReason.CANCELED))

    # -- terminal bookkeeping ----------------------------------------------------------

    def _failed(self, task: Task, kind: ErrorKind, message: str) -> TaskFailed:
        replica = task.replica
        return TaskFailed(task.spec.task_id, task.pool.pool_id,
                          None if replica is None else replica.replica_id,
                          task.pool.spec.engine, kind, message)

    @staticmethod
    def _abort(task: Task, reason: AbortReason) -> Abort:
        replica = task.replica
        assert replica is not None
        return Abort(task.spec.task_id, task.pool.pool_id, replica.replica_id, reason)

    def _end(self, task: Task, event: Event, outcome: Terminal, *, emit: bool = False,
             abort: AbortReason | None = None, armed: bool = True) -> None:
        """Move a task to its terminal state and give back whatever it held.

        With `emit` the outcome (and an Abort, when given) goes to the outbox, ahead of a
        PoolDrained that releasing the task may cause. `armed=False` when the watchdog has
        already let go of the task.
        """
        previous = task.state
        task.state = advance(previous, event)
        task.outcome = outcome
        if task.spec.deadline_ms is not None:
            self._deadlines.disarm(task.spec.task_id)
        if emit:
            self._outbox.append(outcome)
            if abort is not None:
                self._outbox.append(self._abort(task, abort))
        pool = task.pool
        task_id = task.spec.task_id
        if previous is State.QUEUED:
            pool.queue.remove(task_id, task.spec.priority)
        else:
            replica = task.replica
            assert replica is not None
            pool.vacate(replica, task_id)
            if armed:
                pool.watchdog.disarm(task_id)
            if pool.draining and pool.running == 0:
                self._outbox.append(PoolDrained(pool.pool_id))
        if pool.spec.tenant_max_concurrent is not None:
            in_flight = pool.tenants[task.spec.tenant_id]
            del in_flight[task_id]
            if not in_flight:
                del pool.tenants[task.spec.tenant_id]

    def reap(self, task_id: str) -> bool:
        """Forget a terminal task (its id stays taken for the dedup window); False if not."""
        task = self._tasks.get(task_id)
        if task is None or task.state not in TERMINAL:
            return False
        del self._tasks[task_id]
        if self._dedup_window:
            reaped = self._reaped
            reaped[task_id] = None
            if len(reaped) > self._dedup_window:
                reaped.popitem(last=False)
        return True

    # -- queries -----------------------------------------------------------------------

    def task(self, task_id: str) -> TaskView | None:
        """Where a known task is, or None."""
        task = self._tasks.get(task_id)
        if task is None:
            return None
        spec, replica = task.spec, task.replica
        return TaskView(task_id, task.state, task.pool.pool_id,
                        None if replica is None else replica.replica_id, spec.priority,
                        spec.session_id, task.seed, task.queue_position,
                        task.predicted_start_ms, task.tokens, task.outcome)

    def session_info(self, session_id: str, now_ms: int) -> SessionInfo | None:
        """`GET /v1/sessions/{id}`; None when unknown or expired (ORCH-2004)."""
        return self._sessions.info(session_id, self._clock(now_ms))

    def delete_session(self, session_id: str, now_ms: int) -> SessionEvicted | None:
        """`DELETE /v1/sessions/{id}`; None when unknown or expired (ORCH-2005)."""
        return self._sessions.delete(session_id, self._clock(now_ms))

    def pool_health(self, pool_id: str) -> PoolHealth:
        """`GET /v1/pools/{id}/health` (ORCH-2103); raises UnknownPool."""
        return pool_health(self._pool(pool_id))

    def replica_sets(self) -> tuple[ReplicaSetSnapshot, ...]:
        """`GET /v1/replicasets` (ORCH-2104)."""
        return replica_sets(self._pools.values())

    @property
    def kv_bytes(self) -> int:
        """KV bytes resident for all sessions, for the KV-pressure metric (ORCH-3022)."""
        return self._sessions.kv_bytes

    @property
    def kv_budget_bytes(self) -> int:
        """The configured session KV budget."""
        return self._sessions.config.kv_budget_bytes
