"""Builders shared by the core tests: pools, ready replicas, task specs and ids."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orchestrator_core import (
    Action,
    Admitted,
    Dispatch,
    Orchestrator,
    PoolSpec,
    Priority,
    Refused,
    ReplicaSpec,
    ReplicaStatus,
    SessionConfig,
    TaskSpec,
)

ENGINE = "llamacpp"
MODEL = "sha256:" + "ab" * 32
VERSION = "b4000"


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
    return PoolSpec(
        pool_id,
        ENGINE,
        fields.pop("model_ref", MODEL),
        fields.pop("ctx_limit"),
        devices,
        specs,
        **fields,
    )


def status(version: str = VERSION, **fields: Any) -> ReplicaStatus:
    """A live, Ready replica report."""
    fields.setdefault("live", True)
    fields.setdefault("ready", True)
    return ReplicaStatus(engine_version=version, model_digest="sha256:feed", **fields)


def orchestrator(
    *specs: PoolSpec, sessions: SessionConfig | None = None, now: int = 0, **options: Any
) -> Orchestrator:
    """An orchestrator whose replicas have all reported live and Ready."""
    orch = Orchestrator(specs or (pool_spec(),), sessions, **options)
    for spec in specs or (pool_spec(),):
        for replica in spec.replicas:
            orch.update_replica(spec.pool_id, replica.replica_id, status(), now)
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
