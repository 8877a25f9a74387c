"""Workloads: a task goes only to pools that serve its kind of work (issue 16).

An embedding pool and a completion pool may serve the same model (llama.cpp runs the same
GGUF in embedding mode); the workload keeps their tasks apart, through reloads too.
"""

from __future__ import annotations

from corekit import admit, dispatches, orchestrator, pool_spec, refuse, task
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator_core import Admitted, ErrorKind, Refused, TaskFailed, Workload

WORKLOADS = (Workload.COMPLETION, Workload.EMBEDDING)


def test_a_task_goes_to_the_pool_of_its_workload_among_pools_of_one_model() -> None:
    orch = orchestrator(
        pool_spec("text", replicas=[("r0", 4)]),
        pool_spec("vectors", replicas=[("r0", 4)], workload=Workload.EMBEDDING),
    )
    admit(orch, task(1))
    admit(orch, task(2, workload=Workload.EMBEDDING))
    placed = {d.task_id: d.pool_id for d in dispatches(orch.poll(0))}
    assert placed == {task(1).task_id: "text", task(2).task_id: "vectors"}
    routes = {route.pool_id: route.workload for route in orch.routes(task(1).model_ref)}
    assert routes == {"text": Workload.COMPLETION, "vectors": Workload.EMBEDDING}


def test_a_workload_no_pool_of_the_model_serves_is_refused_naming_it() -> None:
    orch = orchestrator(pool_spec("text"))
    refused = refuse(orch, task(1, workload=Workload.EMBEDDING))
    assert refused.kind is ErrorKind.INVALID_PARAMS
    assert refused.field == "model_ref"
    assert "for embedding" in refused.message


def test_a_reloaded_pool_keeps_its_workload() -> None:
    other = "sha256:" + "cd" * 32
    orch = orchestrator(pool_spec("vectors", workload=Workload.EMBEDDING))
    orch.reload("vectors", other, 0)
    assert all(route.workload is Workload.EMBEDDING for route in orch.routes(other))


@settings(max_examples=60, deadline=None)
@given(
    pools=st.lists(st.sampled_from(WORKLOADS), min_size=1, max_size=4),
    tasks=st.lists(st.sampled_from(WORKLOADS), min_size=1, max_size=12),
)
def test_every_dispatch_matches_the_workload_of_its_task(
    pools: list[Workload], tasks: list[Workload]
) -> None:
    """Whatever the mix of pools and tasks: a task is dispatched only to a pool of its
    workload, and refused (never misplaced) when no pool of its workload exists."""
    specs = [pool_spec(f"p{i}", replicas=[("r0", 2)], workload=w) for i, w in enumerate(pools)]
    orch = orchestrator(*specs)
    wanted = {}
    for n, workload in enumerate(tasks):
        spec = task(n, workload=workload)
        outcome = orch.submit(spec, 0)
        if workload in pools:
            assert isinstance(outcome, Admitted), outcome
            assert pools[int(outcome.pool_id[1:])] is workload
            wanted[spec.task_id] = workload
        else:
            assert isinstance(outcome, Refused), outcome
            assert outcome.kind is ErrorKind.INVALID_PARAMS
    for dispatch in dispatches(orch.poll(0)):
        assert pools[int(dispatch.pool_id[1:])] is wanted[dispatch.task_id]


def test_orch_3016_an_embedding_runs_to_the_wall_limit_not_the_idle_one() -> None:
    """An embedding sends nothing until it ends, so only the wall limit bounds it: a long
    batch outlives the idle limit and fails at the wall limit, named `wall`."""
    orch = orchestrator(
        pool_spec(
            "vectors",
            replicas=[("r0", 1)],
            workload=Workload.EMBEDDING,
            wall_timeout_ms=1_000,
            idle_timeout_ms=50,
        )
    )
    admit(orch, task(1, workload=Workload.EMBEDDING))
    assert dispatches(orch.poll(0))
    assert orch.next_deadline_ms() == 1_000
    assert not [a for a in orch.poll(999) if isinstance(a, TaskFailed)]
    failed = [a for a in orch.poll(1_000) if isinstance(a, TaskFailed)]
    assert len(failed) == 1 and failed[0].kind is ErrorKind.DECODE_TIMEOUT
    assert "wall" in failed[0].message
