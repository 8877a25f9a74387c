"""Model-based test: random event sequences against a simple reference model.

A hypothesis RuleBasedStateMachine drives submit, poll (with time passing), token, finish,
failure, cancel, reap, replica probes, crashes and restarts, drain and reload against the
core and against a plain-list reference model, and checks after every step:

* queues stay bounded by the pool capacity and the per-priority cap (ORCH-3004);
* dispatch is FIFO within a priority and follows the burst rule (ORCH-3004, ORCH-3051);
* each admitted task gets exactly one terminal decision: nothing lost, nothing twice
  (ORCH-3017), and the core's state of every task equals the model's;
* no token is accepted after a cancel or any other terminal state (ORCH-3026);
* nothing is dispatched to a non-Ready replica or a draining pool (ORCH-3010) or to a
  replica running outside the pool's mask (ORCH-3011), and the replica taken is the
  least loaded unless it is the session's warm one (ORCH-3008);
* slots are never negative nor above the total (ORCH-3019), and the watchdog and drain
  deadlines leave nothing running past them (ORCH-3016, ORCH-2101).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
from corekit import ENGINE, MODEL, QUICK_RESTARTS, RARE_PROBES_MS, report, task, uid
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from orchestrator_core import (
    Abort,
    Action,
    Admitted,
    CancelStatus,
    Dispatch,
    ErrorKind,
    FinishReason,
    IllegalTransition,
    Orchestrator,
    PoolChanged,
    PoolPhase,
    PoolSpec,
    Preload,
    PreloadFailure,
    PreloadOutcome,
    Priority,
    PriorityLimits,
    ProbeReport,
    QueuePolicy,
    Refused,
    ReplicaChanged,
    ReplicaSpec,
    ReplicaState,
    SessionConfig,
    SessionEvicted,
    State,
    StopEngine,
    TaskCanceled,
    TaskFailed,
)

INTER, BATCH = Priority.INTERACTIVE, Priority.BATCH
WALL, IDLE = 40, 20
SESSIONS = [None, "5e55e55e-0000-4000-8000-000000000001", "5e55e55e-0000-4000-8000-000000000002"]
# pool id -> (mask, [(replica id, devices, slots)])
LAYOUT = {
    "a": ((0, 1), [("r0", (0,), 1), ("r1", (1,), 2)]),
    "b": ((2,), [("r0", (2,), 1)]),
}
LIVE_STATES = {State.QUEUED, State.DISPATCHED, State.STREAMING}


@dataclass
class RefReplica:
    devices: tuple[int, ...]
    slots: int
    live: bool = True
    state: ReplicaState = ReplicaState.READY
    failures: int = 0
    successes: int = 0
    retry_at: int = 0
    running: set[str] = field(default_factory=set)

    def usable(self, mask: tuple[int, ...]) -> bool:
        return self.live and self.state is ReplicaState.READY and set(self.devices) <= set(mask)


@dataclass
class RefPool:
    mask: tuple[int, ...]
    replicas: dict[str, RefReplica]
    queues: dict[Priority, list[str]] = field(default_factory=lambda: {INTER: [], BATCH: []})
    streak: int = 0
    draining: bool = False
    drained: bool = False
    deadline: int = 0

    def ready(self) -> bool:
        return not self.draining and any(r.usable(self.mask) for r in self.replicas.values())

    def live(self) -> bool:
        return any(r.live for r in self.replicas.values())

    def depth(self) -> int:
        return len(self.queues[INTER]) + len(self.queues[BATCH])


@dataclass
class RefTask:
    pool: str
    priority: Priority
    tenant: str
    state: State = State.QUEUED
    replica: str | None = None
    dispatched: int = 0
    activity: int = 0
    tokens: int = 0
    seq: int = 0


class CoreModel(RuleBasedStateMachine):
    """The core against the reference model."""

    def __init__(self) -> None:
        super().__init__()
        self.orch: Orchestrator
        self.now = 0
        self.next_id = 0
        self.seq = 0
        self.pools: dict[str, RefPool] = {}
        self.tasks: dict[str, RefTask] = {}
        self.reaped: set[str] = set()
        self.terminals: Counter[str] = Counter()

    # -- set-up ---------------------------------------------------------------------------

    @initialize(
        policy=st.sampled_from(QueuePolicy),
        burst=st.integers(1, 3),
        capacity=st.integers(2, 5),
        batch_cap=st.none() | st.integers(1, 3),
        quota=st.none() | st.integers(2, 4),
    )
    def setup(
        self,
        policy: QueuePolicy,
        burst: int,
        capacity: int,
        batch_cap: int | None,
        quota: int | None,
    ) -> None:
        self.policy, self.burst, self.capacity = policy, burst, capacity
        self.batch_cap, self.quota = batch_cap, quota
        specs = []
        for pool_id, (mask, replicas) in LAYOUT.items():
            specs.append(
                PoolSpec(
                    pool_id,
                    ENGINE,
                    MODEL,
                    8192,
                    mask,
                    tuple(ReplicaSpec(rid, devices, slots) for rid, devices, slots in replicas),
                    capacity=capacity,
                    full_policy=policy,
                    interactive_burst=burst,
                    batch=PriorityLimits(queue_capacity=batch_cap),
                    tenant_max_concurrent=quota,
                    wall_timeout_ms=WALL,
                    idle_timeout_ms=IDLE,
                    kv_bytes_per_token=1,
                    restart=QUICK_RESTARTS,
                    probe_interval_ms=RARE_PROBES_MS,
                )
            )
            self.pools[pool_id] = RefPool(
                mask, {rid: RefReplica(devices, slots) for rid, devices, slots in replicas}
            )
        self.orch = Orchestrator(specs, SessionConfig(ttl_ms=100, max_turns=3, kv_budget_bytes=60))
        for action in self.orch.poll(0):
            if isinstance(action, Preload):
                self.orch.replica_preloaded(
                    action.pool_id, action.replica_id, action.generation, report(), 0
                )

    # -- helpers ----------------------------------------------------------------------------

    def pick(self, index: int) -> str:
        known = sorted(self.tasks) + sorted(self.reaped) + [uid(10**6)]
        return known[index % len(known)]

    def full(self, pool: RefPool, priority: Priority) -> bool:
        cap = self.batch_cap if priority is BATCH else None
        return (
            cap is not None and len(pool.queues[priority]) >= cap
        ) or pool.depth() >= self.capacity

    def in_flight(self, pool_id: str, tenant: str) -> int:
        return sum(
            1
            for t in self.tasks.values()
            if t.pool == pool_id and t.tenant == tenant and t.state in LIVE_STATES
        )

    def terminate(self, tid: str, state: State) -> None:
        ref = self.tasks[tid]
        assert ref.state in LIVE_STATES, f"{tid} ended twice"
        pool = self.pools[ref.pool]
        if ref.state is State.QUEUED:
            pool.queues[ref.priority].remove(tid)
        else:
            assert ref.replica is not None
            pool.replicas[ref.replica].running.discard(tid)
        ref.state = state
        self.terminals[tid] += 1
        assert self.terminals[tid] == 1

    def apply(self, actions: list[Action]) -> None:
        """Check each action against the model, in order, and update the model."""
        ended_now: set[str] = set()
        for action in actions:
            if isinstance(action, Dispatch):
                self.check_dispatch(action)
            elif isinstance(action, TaskFailed):
                ref = self.tasks[action.task_id]
                pool = self.pools[ref.pool]
                if action.kind is ErrorKind.DECODE_TIMEOUT:
                    assert ref.state in (State.DISPATCHED, State.STREAMING)
                    assert self.now - ref.dispatched >= WALL or self.now - ref.activity >= IDLE
                elif action.kind is ErrorKind.WORKER_RESET:
                    assert ref.replica is not None and not pool.replicas[ref.replica].live
                else:
                    assert action.kind is ErrorKind.POOL_UNAVAILABLE
                    assert ref.state is State.QUEUED and not pool.live()
                self.terminate(action.task_id, State.FAILED)
                ended_now.add(action.task_id)
            elif isinstance(action, TaskCanceled):
                ref = self.tasks[action.task_id]
                pool = self.pools[ref.pool]
                assert pool.draining
                if ref.state is not State.QUEUED:
                    assert self.now >= pool.deadline
                self.terminate(action.task_id, State.CANCELED)
                ended_now.add(action.task_id)
            elif isinstance(action, Abort):
                assert action.task_id in ended_now
                assert self.tasks[action.task_id].replica == action.replica_id
            elif isinstance(action, PoolChanged):
                pool = self.pools[action.pool_id]
                if action.phase is PoolPhase.DRAINED:
                    assert pool.draining
                    assert not any(r.running for r in pool.replicas.values())
                    pool.drained = True
            elif isinstance(action, Preload):
                replica = self.pools[action.pool_id].replicas[action.replica_id]
                assert replica.state is ReplicaState.BACKING_OFF, "a preload nobody waits for"
                assert self.now >= replica.retry_at, "a restart before its backoff ran out"
                replica.state = ReplicaState.PRELOADING
            else:
                assert isinstance(action, SessionEvicted | StopEngine | ReplicaChanged)

    def check_dispatch(self, d: Dispatch) -> None:
        pool = self.pools[d.pool_id]
        assert not pool.draining, "dispatch to a draining pool"
        replica = pool.replicas[d.replica_id]
        assert replica.live and replica.state is ReplicaState.READY, (
            "dispatch to a non-Ready replica"
        )
        assert set(replica.devices) <= set(pool.mask), "dispatch outside the device mask"
        free = {
            rid: r.slots - len(r.running) for rid, r in pool.replicas.items() if r.usable(pool.mask)
        }
        assert free[d.replica_id] > 0
        if not d.kv_warmth:
            assert free[d.replica_id] == max(free.values()), "not the least-loaded replica"
        queues = pool.queues
        batch_next = not queues[INTER] or (bool(queues[BATCH]) and pool.streak >= self.burst)
        expected_class = BATCH if batch_next else INTER
        assert queues[expected_class], "nothing of the expected class is queued"
        assert d.task_id == queues[expected_class][0], "not FIFO / not the burst rule"
        if batch_next:
            pool.streak = 0
        else:
            pool.streak = pool.streak + 1 if queues[BATCH] else 0
        queues[expected_class].pop(0)
        ref = self.tasks[d.task_id]
        ref.state, ref.replica = State.DISPATCHED, d.replica_id
        ref.dispatched = ref.activity = self.now
        replica.running.add(d.task_id)

    # -- rules --------------------------------------------------------------------------------

    @rule(
        arrivals=st.lists(
            st.tuples(st.sampled_from([INTER, BATCH]), st.sampled_from([None, "a"])),
            min_size=2,
            max_size=5,
        )
    )
    def submit_many(self, arrivals: list[tuple[Priority, str | None]]) -> None:
        for n, (priority, pin) in enumerate(arrivals):
            self.submit(priority, pin, SESSIONS[n % 3], f"t{n % 2}", 1)

    @rule(
        priority=st.sampled_from([INTER, BATCH]),
        pin=st.sampled_from([None, "a", "b"]),
        session=st.sampled_from(SESSIONS),
        tenant=st.sampled_from(["t0", "t1"]),
        reuse=st.integers(0, 9),
    )
    def submit(
        self, priority: Priority, pin: str | None, session: str | None, tenant: str, reuse: int
    ) -> None:
        used = sorted(self.tasks) + sorted(self.reaped)
        if reuse == 0 and used:
            tid = used[self.next_id % len(used)]
            spec = replace(task(0, priority, pool_id=pin), task_id=tid)
            result = self.orch.submit(spec, self.now)
            assert isinstance(result, Refused) and result.kind is ErrorKind.DUPLICATE_TASK
            return
        n = self.next_id = self.next_id + 1
        spec = task(n, priority, pool_id=pin, session_id=session, tenant_id=tenant)
        result = self.orch.submit(spec, self.now)
        candidates = [pin] if pin else list(self.pools)
        ready = [p for p in candidates if self.pools[p].ready()]
        if isinstance(result, Refused):
            self.check_refusal(result, priority, tenant, candidates, ready)
            return
        assert isinstance(result, Admitted) and result.pool_id in ready
        pool = self.pools[result.pool_id]
        if self.quota is not None:
            assert self.in_flight(result.pool_id, tenant) < self.quota
        was_full = self.full(pool, priority)
        if was_full:
            assert result.evicted is not None and result.backoff_ms >= 1
            self.check_eviction(pool, priority, result.evicted)
        else:
            assert result.evicted is None
        self.seq += 1
        self.tasks[spec.task_id] = RefTask(result.pool_id, priority, tenant, seq=self.seq)
        pool.queues[priority].append(spec.task_id)
        if not was_full:
            # ORCH-2007: backoff only when this admission left the queue full.
            assert (result.backoff_ms >= 1) == self.full(pool, priority)

    def check_refusal(
        self,
        refused: Refused,
        priority: Priority,
        tenant: str,
        candidates: list[str],
        ready: list[str],
    ) -> None:
        assert refused.retriable and refused.backoff_ms >= 1
        if refused.kind in (ErrorKind.POOL_UNREADY, ErrorKind.POOL_UNAVAILABLE):
            assert not ready
            any_live = any(self.pools[p].live() for p in candidates)
            assert (refused.kind is ErrorKind.POOL_UNREADY) == any_live
        elif refused.kind is ErrorKind.QUOTA_EXCEEDED:
            assert self.quota is not None and refused.pool_id is not None
            assert self.in_flight(refused.pool_id, tenant) >= self.quota
        else:
            assert refused.kind is ErrorKind.ADMISSION_REJECT
            assert refused.policy is self.policy
            assert all(self.full(self.pools[p], priority) for p in ready)
            pool = self.pools[refused.pool_id or ""]
            class_full = (
                priority is BATCH
                and self.batch_cap is not None
                and len(pool.queues[BATCH]) >= self.batch_cap
            )
            assert self.policy is QueuePolicy.REJECT or (
                self.policy is QueuePolicy.SHED_LOW_PRIORITY
                and (priority is BATCH or class_full or not pool.queues[BATCH])
            )
            # ORCH-2007, ORCH-3029: the hint comes from the forecast the queue's own
            # predictions do: room comes no later than the last queued task is predicted
            # to start.
            views = self.orch.pool_tasks(refused.pool_id or "", self.now)
            starts = [v.predicted_start_ms for v in views if v.state is State.QUEUED]
            assert refused.backoff_ms <= max(1, *starts)

    def check_eviction(self, pool: RefPool, priority: Priority, evicted: TaskFailed) -> None:
        class_full = (
            priority is BATCH
            and self.batch_cap is not None
            and len(pool.queues[BATCH]) >= self.batch_cap
        )
        if self.policy is QueuePolicy.DROP_LRU:
            assert evicted.kind is ErrorKind.QUEUE_FULL_DROP_LRU
            queued = (
                pool.queues[priority] if class_full else pool.queues[INTER] + pool.queues[BATCH]
            )
            expected = min(queued, key=lambda tid: self.tasks[tid].seq)
        else:
            assert self.policy is QueuePolicy.SHED_LOW_PRIORITY and priority is INTER
            assert evicted.kind is ErrorKind.ADMISSION_REJECT
            expected = pool.queues[BATCH][-1]
        assert evicted.task_id == expected
        self.terminate(expected, State.FAILED)

    @rule(advance=st.integers(0, 20))
    def poll(self, advance: int) -> None:
        self.now += advance
        self.apply(self.orch.poll(self.now))
        for pool in self.pools.values():
            running = [t for r in pool.replicas.values() for t in r.running]
            for tid in running:  # the watchdog leaves nothing past its deadlines
                ref = self.tasks[tid]
                assert self.now - ref.dispatched < WALL and self.now - ref.activity < IDLE
            if pool.draining:
                assert pool.depth() == 0
                assert self.now < pool.deadline or not running
            elif pool.depth():  # work-conserving: queued work means no usable free slot
                assert all(
                    len(r.running) >= r.slots for r in pool.replicas.values() if r.usable(pool.mask)
                )

    @rule(advance=st.integers(1, 12))
    def progress(self, advance: int) -> None:
        """Time passes while every running task streams a token, then a poll."""
        self.now += advance
        for tid in sorted(self.tasks):
            if self.tasks[tid].state in (State.DISPATCHED, State.STREAMING):
                self.token_for(tid)
        self.poll(0)

    @rule(index=st.integers(0, 10**6))
    def token(self, index: int) -> None:
        self.token_for(self.pick(index))

    def token_for(self, tid: str) -> None:
        ref = self.tasks.get(tid)
        if ref is not None and ref.state is State.QUEUED:
            with pytest.raises(IllegalTransition):
                self.orch.on_token(tid, self.now)
            return
        accepted = self.orch.on_token(tid, self.now)
        if ref is None or ref.state not in LIVE_STATES:
            assert accepted is None, "token accepted for a task that no longer runs"
            return
        assert accepted is not None and accepted.index == ref.tokens
        ref.tokens += 1
        ref.activity = self.now
        ref.state = State.STREAMING

    @rule(index=st.integers(0, 10**6), fail=st.booleans())
    def finish(self, index: int, fail: bool) -> None:
        tid = self.pick(index)
        ref = self.tasks.get(tid)

        def report() -> object:
            if fail:
                return self.orch.on_failure(tid, ErrorKind.INTERNAL, "adapter", self.now)
            return self.orch.on_finish(tid, FinishReason.STOP, 3, self.now)

        if ref is not None and ref.state is State.QUEUED:
            with pytest.raises(IllegalTransition):
                report()
            return
        outcome = report()
        if ref is None or ref.state not in LIVE_STATES:
            assert outcome is None
            return
        assert outcome is not None
        self.terminate(tid, State.FAILED if fail else State.ENDED)

    @rule(index=st.integers(0, 10**6))
    def cancel(self, index: int) -> None:
        self.cancel_task(self.pick(index))

    def cancel_task(self, tid: str) -> None:
        ref = self.tasks.get(tid)
        outcome = self.orch.cancel(tid, self.now)
        if ref is None:
            expected = CancelStatus.ALREADY_TERMINAL if tid in self.reaped else CancelStatus.UNKNOWN
            assert outcome.status is expected
        elif ref.state not in LIVE_STATES:
            assert outcome.status is CancelStatus.ALREADY_TERMINAL and outcome.canceled is None
        else:
            running = ref.state is not State.QUEUED
            assert outcome.status is (
                CancelStatus.CANCELED_RUNNING if running else CancelStatus.CANCELED_QUEUED
            )
            assert (outcome.abort is not None) == running
            self.terminate(tid, State.CANCELED)

    @rule(index=st.integers(0, 10**6))
    def reap(self, index: int) -> None:
        tid = self.pick(index)
        ref = self.tasks.get(tid)
        reaped = self.orch.reap(tid)
        assert reaped == (ref is not None and ref.state not in LIVE_STATES)
        if reaped:
            del self.tasks[tid]
            self.reaped.add(tid)

    def replica_at(self, pool_id: str, slot: int) -> tuple[str, RefReplica]:
        pool = self.pools[pool_id]
        rid = sorted(pool.replicas)[slot % len(pool.replicas)]
        return rid, pool.replicas[rid]

    def generation(self, pool_id: str, rid: str) -> int:
        view = self.orch.pool_view(pool_id, self.now)
        return next(r.generation for r in view.replicas if r.replica_id == rid)

    def lose(self, replica: RefReplica) -> None:
        replica.live = False
        replica.state = ReplicaState.BACKING_OFF
        replica.failures = replica.successes = 0
        replica.retry_at = self.now + QUICK_RESTARTS.base_ms

    @rule(
        pool_id=st.sampled_from(sorted(LAYOUT)),
        slot=st.integers(0, 1),
        live=st.booleans(),
        ready=st.booleans(),
    )
    def probe(self, pool_id: str, slot: int, live: bool, ready: bool) -> None:
        """A probe of a Ready or suspect replica (ORCH-3038): one failure takes it out of
        placement (and its tasks when it is not live), two good ones bring it back, three
        failed ones lose it."""
        rid, replica = self.replica_at(pool_id, slot)
        generation = self.generation(pool_id, rid)
        call = lambda: self.orch.replica_probed(  # noqa: E731
            pool_id, rid, generation, ProbeReport(live=live, ready=ready), self.now
        )
        if replica.state not in (ReplicaState.READY, ReplicaState.SUSPECT):
            actions = call()  # dropped; hands over only what waited in the outbox
            assert all(isinstance(a, SessionEvicted | PoolChanged) for a in actions), actions
            self.apply(actions)
            return
        reset: set[str] = set()
        if live and ready:
            replica.failures, replica.successes = 0, replica.successes + 1
            replica.live = True
            if replica.state is ReplicaState.SUSPECT and replica.successes >= 2:
                replica.state = ReplicaState.READY
        else:
            replica.successes, replica.failures = 0, replica.failures + 1
            if (replica.live and not live) or replica.failures >= 3:
                reset = set(replica.running)
            replica.live = live
            if replica.failures >= 3:
                self.lose(replica)
            else:
                replica.state = ReplicaState.SUSPECT
        self.expect_down(pool_id, rid, reset, call)

    @rule(pool_id=st.sampled_from(sorted(LAYOUT)), slot=st.integers(0, 1))
    def crash(self, pool_id: str, slot: int) -> None:
        """The engine of a probed replica exited: lost at once."""
        rid, replica = self.replica_at(pool_id, slot)
        if replica.state not in (ReplicaState.READY, ReplicaState.SUSPECT):
            return
        generation = self.generation(pool_id, rid)
        reset = set(replica.running) if replica.live else set()
        self.lose(replica)
        gone = ProbeReport(live=False, ready=False, exited=True)
        self.expect_down(
            pool_id,
            rid,
            reset,
            lambda: self.orch.replica_probed(pool_id, rid, generation, gone, self.now),
        )

    @rule(
        pool_id=st.sampled_from(sorted(LAYOUT)),
        slot=st.integers(0, 1),
        ok=st.booleans(),
        devices=st.sampled_from(["same", "out"]),
    )
    def answer_preload(self, pool_id: str, slot: int, ok: bool, devices: str) -> None:
        """The restart of a lost replica succeeds (on its devices, or outside the mask) or
        fails again."""
        rid, replica = self.replica_at(pool_id, slot)
        if replica.state is not ReplicaState.PRELOADING:
            return
        generation = self.generation(pool_id, rid)
        if ok:
            reported = LAYOUT[pool_id][1][sorted(self.pools[pool_id].replicas).index(rid)][1]
            replica.devices = reported if devices == "same" else (7,)
            replica.live, replica.state = True, ReplicaState.READY
            self.apply(
                self.orch.replica_preloaded(
                    pool_id, rid, generation, report(devices=replica.devices), self.now
                )
            )
            return
        self.lose(replica)
        failure = PreloadFailure(PreloadOutcome.ENGINE_START_FAILED, "no")
        self.expect_down(
            pool_id,
            rid,
            set(),
            lambda: self.orch.replica_preload_failed(pool_id, rid, generation, failure, self.now),
        )

    def expect_down(
        self, pool_id: str, rid: str, reset: set[str], call: Callable[[], list[Action]]
    ) -> None:
        """Run a replica change; the running tasks `reset` fail WORKER_RESET and, when the
        pool has no live replica left, its queue fails POOL_UNAVAILABLE."""
        pool = self.pools[pool_id]
        lost = set(pool.queues[INTER] + pool.queues[BATCH]) if not pool.live() else set()
        actions = call()
        failed = {(a.task_id, a.kind) for a in actions if isinstance(a, TaskFailed)}
        assert failed == {(t, ErrorKind.WORKER_RESET) for t in reset} | {
            (t, ErrorKind.POOL_UNAVAILABLE) for t in lost
        }
        self.apply(actions)

    @rule(pool_id=st.sampled_from(sorted(LAYOUT)), deadline=st.integers(0, 12))
    def drain(self, pool_id: str, deadline: int) -> None:
        pool = self.pools[pool_id]
        was_drained = pool.drained
        queued = set(pool.queues[INTER] + pool.queues[BATCH])
        due = self.now + deadline
        pool.deadline = min(due, pool.deadline) if pool.draining else due
        pool.draining = True
        actions = self.orch.drain(pool_id, deadline, self.now)
        assert {a.task_id for a in actions if isinstance(a, TaskCanceled)} == queued
        drained = [
            a
            for a in actions
            if isinstance(a, PoolChanged) and a.pool_id == pool_id and a.phase is PoolPhase.DRAINED
        ]
        self.apply(actions)
        idle = not any(r.running for r in pool.replicas.values())
        assert bool(drained) == (idle and not was_drained)
        pool.drained = pool.drained or idle

    @precondition(lambda self: any(p.drained for p in self.pools.values()))
    @rule(pool_id=st.sampled_from(sorted(LAYOUT)))
    def reload(self, pool_id: str) -> None:
        """A drained pool is reloaded (ORCH-2102): every replica is held, then preloaded
        again one by one (all succeed here), and the pool serves again."""
        pool = self.pools[pool_id]
        if not pool.drained:
            return
        actions = self.orch.reload(pool_id, MODEL, self.now)
        while True:
            preloads = [a for a in actions if isinstance(a, Preload)]
            assert not [a for a in actions if isinstance(a, TaskFailed | TaskCanceled)]
            self.apply([a for a in actions if not isinstance(a, Preload)])
            if not preloads:
                break
            (preload,) = preloads
            actions = self.orch.replica_preloaded(
                pool_id, preload.replica_id, preload.generation, report(), self.now
            )
        for rid, devices, _ in LAYOUT[pool_id][1]:
            replica = pool.replicas[rid]
            replica.devices, replica.live, replica.state = devices, True, ReplicaState.READY
            replica.failures = replica.successes = 0
        pool.draining = pool.drained = False
        assert self.orch.pool_view(pool_id, self.now).phase is PoolPhase.READY

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def queues_are_bounded_and_match(self) -> None:
        for pool_id, pool in self.pools.items():
            health = self.orch.pool_view(pool_id, 0)
            assert health.queue_depth <= self.capacity
            if self.batch_cap is not None:
                assert health.queue_depth_batch <= self.batch_cap
            assert health.queue_depth_interactive == len(pool.queues[INTER])
            assert health.queue_depth_batch == len(pool.queues[BATCH])

    @invariant()
    def slots_stay_within_bounds(self) -> None:
        for pool_id, pool in self.pools.items():
            health = self.orch.pool_view(pool_id, 0)
            assert 0 <= health.slots_free <= health.slots_total
            usable = [r for r in health.replicas if r.usable]
            assert health.slots_free == sum(r.slots_free for r in usable)
            for replica in health.replicas:
                assert 0 <= replica.slots_free <= replica.slots_total
                assert replica.running == len(pool.replicas[replica.replica_id].running)

    @invariant()
    def replicas_match(self) -> None:
        for pool_id, pool in self.pools.items():
            for view in self.orch.pool_view(pool_id, self.now).replicas:
                ref = pool.replicas[view.replica_id]
                assert (view.state, view.live) == (ref.state, ref.live), view
                assert view.usable == ref.usable(pool.mask)

    def serving_order(self, pool: RefPool) -> list[str]:
        """The reference queue's tasks in the order the burst rule will dispatch them."""
        queues = {INTER: list(pool.queues[INTER]), BATCH: list(pool.queues[BATCH])}
        streak, order = pool.streak, []
        while queues[INTER] or queues[BATCH]:
            batch_next = not queues[INTER] or (bool(queues[BATCH]) and streak >= self.burst)
            streak = 0 if batch_next else (streak + 1 if queues[BATCH] else 0)
            order.append(queues[BATCH if batch_next else INTER].pop(0))
        return order

    @invariant()
    def the_live_task_list_is_what_runs_then_the_queue_in_serving_order(self) -> None:
        """What the console lists (ORCH-3029): every running task once with its replica
        and tokens, then the queue in dispatch order, positions 0..n-1 as of now, and
        predicted starts that never go down along the queue (each the figure a read of
        that one task gives)."""
        for pool_id, pool in self.pools.items():
            views = self.orch.pool_tasks(pool_id, self.now)
            running = [v for v in views if v.state is not State.QUEUED]
            queued = views[len(running) :]
            assert all(v.state is State.QUEUED for v in queued)
            expected_running = {tid: rid for rid, r in pool.replicas.items() for tid in r.running}
            assert {v.task_id: v.replica_id for v in running} == expected_running
            for view in running:
                assert view.tokens == self.tasks[view.task_id].tokens
                assert view.queue_time_ms is not None and view.queue_time_ms >= 0
            assert [v.task_id for v in queued] == self.serving_order(pool)
            assert [v.queue_position for v in queued] == list(range(len(queued)))
            starts = [v.predicted_start_ms for v in queued]
            assert starts == sorted(starts)
            # A task read (GET /v1/tasks/{id}) says what the list says of it.
            for view in queued:
                assert self.orch.task(view.task_id, self.now) == view
            for limit in range(len(queued) + 1):
                head = self.orch.pool_tasks(pool_id, self.now, queued_limit=limit)
                assert head == (*running, *queued[:limit])

    @invariant()
    def every_task_has_one_fate(self) -> None:
        for tid, ref in self.tasks.items():
            view = self.orch.task(tid)
            assert view is not None, f"{tid} was lost"
            live = ref.state in LIVE_STATES
            assert self.terminals[tid] == (0 if live else 1)
            expected = ref.state
            if ref.state is State.STREAMING and ref.tokens == 0:
                expected = State.DISPATCHED
            assert view.state is expected
            assert (view.outcome is None) == live
        for tid in self.reaped:
            assert self.orch.task(tid) is None

    def teardown(self) -> None:
        """Cancel whatever is left: every admitted task then has exactly one fate."""
        if not self.pools:
            return
        for tid in sorted(self.tasks):
            self.cancel_task(tid)
        assert all(self.terminals[tid] == 1 for tid in self.tasks)
        assert all(
            self.orch.pool_view(p, 0).slots_free == self.orch.pool_view(p, 0).slots_total
            for p in self.pools
        )


TestCoreModel = CoreModel.TestCase
TestCoreModel.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
