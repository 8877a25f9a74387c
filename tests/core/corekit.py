"""Builders shared by the core tests: pools, Ready replicas, task specs, ids, and the
server's side of the replica actions (preload outcomes, probe answers)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orchestrator_core import (
    Action,
    Admitted,
    Dispatch,
    Engine,
    Orchestrator,
    PoolSpec,
    Preload,
    Priority,
    ProbeReport,
    Refused,
    ReplicaReport,
    ReplicaSpec,
    ReplicaState,
    ReplicaView,
    RestartPolicy,
    SessionConfig,
    TaskSpec,
)

ENGINE = Engine.LLAMACPP
MODEL = "sha256:" + "ab" * 32
VERSION = "b4000"
#: Restarts after 1 ms, so a test can bring a lost replica back without waiting.
QUICK_RESTARTS = RestartPolicy(base_ms=1, max_ms=1, open_ms=1, trip_failures=None)
#: Probes so rare that they stay out of the way of tests about something else.
RARE_PROBES_MS = 1_000_000_000


def uid(n: int) -> str:
    """A canonical uuid text that is easy to read back in a failure message."""
    return f"00000000-0000-4000-8000-{n:012d}"


def pool_spec(
    pool_id: str = "p0",
    replicas: Iterable[tuple[str, int]] = (("r0", 1),),
    devices: tuple[int, ...] = (0,),
    **fields: Any,
) -> PoolSpec:
    """A llama.cpp pool of MODEL with the given (replica id, slots) pairs."""
    specs = tuple(ReplicaSpec(rid, slots_total=slots) for rid, slots in replicas)
    fields.setdefault("ctx_limit", 8192)
    fields.setdefault("restart", QUICK_RESTARTS)
    fields.setdefault("probe_interval_ms", RARE_PROBES_MS)
    return PoolSpec(
        pool_id,
        ENGINE,
        fields.pop("model_ref", MODEL),
        fields.pop("ctx_limit"),
        devices,
        specs,
        **fields,
    )


def report(version: str = VERSION, **fields: Any) -> ReplicaReport:
    """What a successful preload reports."""
    fields.setdefault("model_digest", "sha256:feed")
    return ReplicaReport(engine_version=version, **fields)


def replica(orch: Orchestrator, pool_id: str, replica_id: str, now: int = 0) -> ReplicaView:
    """The core's view of one replica."""
    view = orch.pool_view(pool_id, now)
    return next(r for r in view.replicas if r.replica_id == replica_id)


def preloaded(
    orch: Orchestrator, pool_id: str, replica_id: str, now: int = 0, **fields: Any
) -> list[Action]:
    """Answer the replica's outstanding Preload with success."""
    view = replica(orch, pool_id, replica_id, now)
    assert view.state is ReplicaState.PRELOADING, view
    return orch.replica_preloaded(pool_id, replica_id, view.generation, report(**fields), now)


def probe(
    orch: Orchestrator, pool_id: str, replica_id: str, now: int, **fields: Any
) -> list[Action]:
    """Answer a probe of the replica (live and ready unless told otherwise)."""
    fields.setdefault("live", True)
    fields.setdefault("ready", True)
    generation = replica(orch, pool_id, replica_id, now).generation
    return orch.replica_probed(pool_id, replica_id, generation, ProbeReport(**fields), now)


def crash(orch: Orchestrator, pool_id: str, replica_id: str, now: int) -> list[Action]:
    """The replica's engine exited: a probe finds it gone."""
    return probe(orch, pool_id, replica_id, now, live=False, ready=False, exited=True)


def restart(
    orch: Orchestrator, pool_id: str, replica_id: str, now: int, **fields: Any
) -> list[Action]:
    """Lose the replica, let its (quick) backoff pass, preload it again with this report."""
    actions = crash(orch, pool_id, replica_id, now)
    while replica(orch, pool_id, replica_id, now).state is not ReplicaState.PRELOADING:
        now += 1
        actions += orch.poll(now)
    return actions + preloaded(orch, pool_id, replica_id, now, **fields)


def ready_all(orch: Orchestrator, now: int = 0) -> list[Action]:
    """Answer every Preload the core asks for now with success."""
    actions = orch.poll(now)
    for action in list(actions):
        if isinstance(action, Preload):
            actions += preloaded(orch, action.pool_id, action.replica_id, now)
    return actions


def orchestrator(
    *specs: PoolSpec, sessions: SessionConfig | None = None, now: int = 0, **options: Any
) -> Orchestrator:
    """An orchestrator whose replicas have all preloaded and are Ready."""
    orch = Orchestrator(specs or (pool_spec(),), sessions, **options)
    ready_all(orch, now)
    return orch


def task(n: int, priority: Priority = Priority.INTERACTIVE, **fields: Any) -> TaskSpec:
    """A small valid task with id uid(n)."""
    fields.setdefault("ctx", 4096)
    fields.setdefault("max_tokens", 64)
    fields.setdefault("prompt_tokens", 32)
    return TaskSpec(
        uid(n),
        fields.pop("engine", ENGINE),
        fields.pop("model_ref", MODEL),
        priority=priority,
        **fields,
    )


def admit(orch: Orchestrator, spec: TaskSpec, now: int = 0) -> Admitted:
    """Submit and insist on admission."""
    result = orch.submit(spec, now)
    assert isinstance(result, Admitted), result
    return result


def refuse(orch: Orchestrator, spec: TaskSpec, now: int = 0) -> Refused:
    """Submit and insist on a refusal."""
    result = orch.submit(spec, now)
    assert isinstance(result, Refused), result
    return result


def dispatches(actions: Iterable[Action]) -> list[Dispatch]:
    """The Dispatch actions among `actions`, in order."""
    return [a for a in actions if isinstance(a, Dispatch)]
