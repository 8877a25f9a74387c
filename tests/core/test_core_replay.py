"""A replayable core (ORCH-3048): recorded inputs replay into the same state and decisions,
and a state snapshot restores into a core that goes on exactly as the original.

A hypothesis state machine drives a core (with a `Journal`) through every kind of input:
admissions, tokens, finishes and failures (worker resets included), cancels, reaps,
session deletes, time passing, drains and reloads (to another model and back), the
outcomes of the Preload and Probe actions the core asks for (successes, failures, exits,
late answers to superseded actions). At the end:

* replaying the journal into a fresh core gives the same result for every input and the
  same state snapshot;
* restoring a snapshot taken midway (through JSON) and feeding it the rest of the inputs
  gives the same results and the same final snapshot as the original;
* a snapshot round-trips: restoring and snapshotting again gives it back unchanged, and
  the restored core equals the original object by object (`deep_state`), so no field the
  inputs built is left out of the snapshot, whether or not later inputs would notice.
"""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from enum import Enum
from typing import Any

from corekit import ENGINE, MODEL, QUICK_RESTARTS, report, task, uid
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from orchestrator_core import (
    CancelReason,
    CoreError,
    ErrorKind,
    FailureClass,
    FinishReason,
    Journal,
    Orchestrator,
    PoolSpec,
    Preload,
    PreloadFailure,
    PreloadOutcome,
    Priority,
    PriorityLimits,
    Probe,
    ProbeReport,
    QueuePolicy,
    ReplicaSpec,
    SessionConfig,
    replay,
    restore,
    snapshot,
)
from orchestrator_core.journal import feed

OTHER = "sha256:" + "cd" * 32
SESSIONS = [None, "5e55e55e-0000-4000-8000-000000000001", "5e55e55e-0000-4000-8000-000000000002"]


def pools() -> list[PoolSpec]:
    return [
        PoolSpec(
            "a",
            ENGINE,
            MODEL,
            8192,
            (0, 1),
            (ReplicaSpec("r0", (0,), 1), ReplicaSpec("r1", (1,), 2)),
            capacity=4,
            full_policy=QueuePolicy.DROP_LRU,
            batch=PriorityLimits(queue_capacity=2, rate_limit_rps=50.0),
            tenant_max_concurrent=3,
            wall_timeout_ms=80,
            idle_timeout_ms=30,
            kv_bytes_per_token=1,
            restart=QUICK_RESTARTS,
            probe_interval_ms=25,
        ),
        PoolSpec(
            "b",
            ENGINE,
            MODEL,
            8192,
            (2,),
            (ReplicaSpec("r0", (2,), 1),),
            capacity=3,
            full_policy=QueuePolicy.SHED_LOW_PRIORITY,
            preload=False,
            restart=QUICK_RESTARTS,
            probe_interval_ms=40,
        ),
    ]


#: Fields that are derived lower bounds or caches, which a restore recomputes exactly.
DERIVED = {"_check_at", "_heap", "_journal", "_replica_timer_ms"}
#: Indexes whose key order means nothing (only lookups use them).
UNORDERED = {"_targets"}


def deep_state(value: object, seen: dict[int, str] | None = None, path: str = "core") -> object:
    """Every field reachable from `value`, as plain comparable data (orders kept); an object
    met again is named by the path where it was first met."""
    seen = {} if seen is None else seen
    if value is None or isinstance(value, bool | int | float | str | Enum):
        return value
    if dataclasses.is_dataclass(value) and value.__dataclass_params__.frozen:
        return value
    if isinstance(value, tuple):  # immutable: its value is all there is to it
        return [deep_state(v, seen, f"{path}[{i}]") for i, v in enumerate(value)]
    if id(value) in seen:
        return ("ref", seen[id(value)])
    seen[id(value)] = path
    if isinstance(value, dict):
        pairs = [(k, deep_state(v, seen, f"{path}[{k!r}]")) for k, v in value.items()]
        return sorted(pairs, key=repr) if path.rsplit(".", 1)[-1] in UNORDERED else pairs
    if isinstance(value, list | deque):
        return [deep_state(v, seen, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        return sorted(value)
    names = list(getattr(value, "__dict__", {}))
    for cls in type(value).__mro__:
        names += [n for n in getattr(cls, "__slots__", ()) if n not in names]
    return (
        type(value).__name__,
        [
            (n, deep_state(getattr(value, n), seen, f"{path}.{n}"))
            for n in names
            if n not in DERIVED and hasattr(value, n)
        ],
    )


def normalised(result: object) -> object:
    """A result comparable across cores: exceptions by type and text."""
    if isinstance(result, CoreError):
        return (type(result).__name__, str(result))
    return result


class ReplayedCore(RuleBasedStateMachine):
    """ORCH-3048: drive a journaled core with arbitrary inputs; check replay and restore."""

    def __init__(self) -> None:
        super().__init__()
        self.journal = Journal()
        self.core: Orchestrator
        self.now = 0
        self.next_id = 0
        self.results: list[object] = []
        self.preloads: list[Preload] = []
        self.probes: list[Probe] = []
        self.midway: tuple[int, dict[str, Any]] | None = None

    @initialize()
    def build(self) -> None:
        self.core = Orchestrator(
            pools(),
            SessionConfig(ttl_ms=200, max_turns=3, kv_budget_bytes=80),
            dedup_window=4,
            stream_grace_ms=20,
            journal=self.journal,
        )
        self.step(lambda: self.core.poll(0))

    def step(self, call: Any) -> None:
        """Run one input, keep its result, and collect the actions that want an answer."""
        try:
            result = call()
        except CoreError as exc:
            result = exc
        self.results.append(result)
        if isinstance(result, list):
            for action in result:
                if isinstance(action, Preload):
                    self.preloads.append(action)
                elif isinstance(action, Probe):
                    self.probes.append(action)

    def known(self, index: int) -> str:
        return uid(index % (self.next_id + 1))

    @rule(
        priority=st.sampled_from(Priority),
        session=st.sampled_from(SESSIONS),
        model=st.sampled_from([MODEL, OTHER]),
        deadline=st.none() | st.integers(1, 100),
    )
    def submit(
        self, priority: Priority, session: str | None, model: str, deadline: int | None
    ) -> None:
        self.next_id += 1
        spec = task(
            self.next_id,
            priority,
            session_id=session,
            model_ref=model,
            tenant_id=f"t{self.next_id % 2}",
            client_id=f"c{self.next_id % 3}",
            deadline_ms=deadline,
        )
        self.step(lambda: self.core.submit(spec, self.now))

    @rule(advance=st.integers(0, 30))
    def poll(self, advance: int) -> None:
        self.now += advance
        self.step(lambda: self.core.poll(self.now))

    @rule(index=st.integers(0, 100), count=st.integers(1, 3))
    def tokens(self, index: int, count: int) -> None:
        task_id = self.known(index)
        for _ in range(count):
            self.step(lambda: self.core.on_token(task_id, self.now))

    @rule(
        index=st.integers(0, 100), reason=st.sampled_from([FinishReason.STOP, FinishReason.LENGTH])
    )
    def finish(self, index: int, reason: FinishReason) -> None:
        task_id = self.known(index)
        self.step(lambda: self.core.on_finish(task_id, reason, 5, self.now))

    @rule(
        index=st.integers(0, 100),
        kind=st.sampled_from([ErrorKind.ENGINE_ERROR, ErrorKind.WORKER_RESET]),
        failure=st.none() | st.sampled_from(FailureClass),
    )
    def fail(self, index: int, kind: ErrorKind, failure: FailureClass | None) -> None:
        task_id = self.known(index)
        self.step(lambda: self.core.on_failure(task_id, kind, "boom", self.now, failure))

    @rule(index=st.integers(0, 100), reason=st.sampled_from(CancelReason))
    def cancel(self, index: int, reason: CancelReason) -> None:
        task_id = self.known(index)
        self.step(lambda: self.core.cancel(task_id, self.now, reason))

    @rule(index=st.integers(0, 100), back=st.booleans())
    def stream_left(self, index: int, back: bool) -> None:
        task_id = self.known(index)
        self.step(lambda: self.core.unwatched(task_id, self.now))
        if back:
            self.step(lambda: self.core.watched(task_id, self.now))

    @rule(grace=st.integers(0, 50))
    def shut_down(self, grace: int) -> None:
        self.step(lambda: self.core.shut_down(grace, self.now))

    @rule(index=st.integers(0, 100))
    def reap(self, index: int) -> None:
        task_id = self.known(index)
        self.step(lambda: self.core.reap(task_id))

    @rule(session=st.sampled_from(SESSIONS[1:]))
    def delete_session(self, session: str) -> None:
        self.step(lambda: self.core.delete_session(session, self.now))

    @rule(pool=st.sampled_from(["a", "b", "nope"]), deadline=st.integers(0, 50))
    def drain(self, pool: str, deadline: int) -> None:
        self.step(lambda: self.core.drain(pool, deadline, self.now))

    @rule(pool=st.sampled_from(["a", "b"]), model=st.sampled_from([MODEL, OTHER]))
    def reload(self, pool: str, model: str) -> None:
        self.step(lambda: self.core.reload(pool, model, self.now))

    @rule(
        data=st.data(),
        ok=st.booleans(),
        outcome=st.sampled_from(PreloadOutcome),
        live=st.booleans(),
        version=st.sampled_from(["b1", "b2"]),
    )
    def answer_preload(
        self, data: st.DataObject, ok: bool, outcome: PreloadOutcome, live: bool, version: str
    ) -> None:
        """Answer a Preload the core asked for, possibly one it has since superseded."""
        if not self.preloads:
            return
        preload = self.preloads.pop(data.draw(st.integers(0, len(self.preloads) - 1)))
        key = (preload.pool_id, preload.replica_id, preload.generation)
        if ok:
            found = report(version=version, slots_total=2)
            self.step(lambda: self.core.replica_preloaded(*key, found, self.now))
        else:
            failure = PreloadFailure(outcome, "no luck", live)
            self.step(lambda: self.core.replica_preload_failed(*key, failure, self.now))

    @rule(
        data=st.data(),
        live=st.booleans(),
        ready=st.booleans(),
        exited=st.booleans(),
        kv=st.none() | st.floats(0.0, 1.0),
    )
    def answer_probe(
        self, data: st.DataObject, live: bool, ready: bool, exited: bool, kv: float | None
    ) -> None:
        if not self.probes:
            return
        probe = self.probes.pop(data.draw(st.integers(0, len(self.probes) - 1)))
        answer = ProbeReport(live, ready, exited, FailureClass.CRASH if exited else None, None, kv)
        self.step(
            lambda: self.core.replica_probed(
                probe.pool_id, probe.replica_id, probe.generation, answer, self.now
            )
        )

    @invariant()
    def a_successor_redoes_only_unanswered_actions(self) -> None:
        """What a scheduler taking over sends again (`in_flight`) is an engine action this
        core emitted and nobody answered, for the replica's current generation; the tasks
        it continues (`running`) are placed and not ended."""
        if not hasattr(self, "core"):
            return
        emitted = set(self.preloads) | set(self.probes)
        for action in self.core.in_flight():
            assert action in emitted, f"{action} was never sent or was answered"
        for task_id in self.core.running():
            view = self.core.task(task_id)
            assert view is not None and view.replica_id is not None and view.outcome is None

    @rule()
    def take_snapshot(self) -> None:
        """Remember the state here, to restore it and replay the rest from it."""
        state = json.loads(json.dumps(snapshot(self.core)))
        restored = restore(state)
        assert snapshot(restored) == state, "a snapshot does not round-trip"
        assert deep_state(restored) == deep_state(self.core), "a restore lost something"
        self.midway = (len(self.journal.events), state)

    def teardown(self) -> None:
        if not hasattr(self, "core"):
            return
        config = self.journal.config
        assert config is not None
        replayed, results = replay(config, list(self.journal.events))
        assert [normalised(r) for r in results] == [normalised(r) for r in self.results]
        final = snapshot(self.core)
        assert snapshot(replayed) == final
        if self.midway is not None:
            at, state = self.midway
            resumed = restore(state)
            rest = feed(resumed, self.journal.events[at:])
            assert [normalised(r) for r in rest] == [normalised(r) for r in self.results[at:]]
            assert snapshot(resumed) == final


TestReplayedCore = ReplayedCore.TestCase
TestReplayedCore.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
