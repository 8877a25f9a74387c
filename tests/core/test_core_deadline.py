"""A task's own deadline (TaskRequest.deadline_ms), counted from admission (ORCH-3016).

When it runs out, queued or running, the task fails with DECODE_TIMEOUT; a running one
also gets an Abort so its upstream request is closed and the slot freed (ORCH-3017).
"""

from __future__ import annotations

from corekit import (
    RARE_PROBES_MS,
    admit,
    dispatches,
    orchestrator,
    pool_spec,
    refuse,
    task,
    uid,
)

from orchestrator_core import (
    Abort,
    AbortReason,
    ErrorKind,
    FinishReason,
    State,
    TaskFailed,
)
from orchestrator_core.deadlines import Deadlines


def test_orch_3016_a_running_task_fails_at_its_deadline_and_is_aborted() -> None:
    orch = orchestrator()
    admit(orch, task(1, deadline_ms=500), now=100)
    assert dispatches(orch.poll(100))
    assert orch.next_deadline_ms() == 600
    assert orch.poll(599) == []
    actions = orch.poll(600)
    failed = [a for a in actions if isinstance(a, TaskFailed)]
    assert [(f.task_id, f.kind) for f in failed] == [(uid(1), ErrorKind.DECODE_TIMEOUT)]
    assert "500 ms" in failed[0].message
    assert [a.reason for a in actions if isinstance(a, Abort)] == [AbortReason.TIMEOUT]
    assert orch.on_token(uid(1), 601) is None
    assert orch.pool_view("p0", 0).slots_free == 1


def test_orch_3016_a_queued_task_fails_at_its_deadline_without_dispatch() -> None:
    orch = orchestrator()
    admit(orch, task(1))
    admit(orch, task(2, deadline_ms=50))
    orch.poll(0)
    actions = orch.poll(50)
    assert [(a.task_id, a.kind) for a in actions if isinstance(a, TaskFailed)] == [
        (uid(2), ErrorKind.DECODE_TIMEOUT)
    ]
    assert not [a for a in actions if isinstance(a, Abort)]
    view = orch.task(uid(2))
    assert view is not None and view.state is State.FAILED
    orch.on_finish(uid(1), FinishReason.STOP, 1, 60)
    assert dispatches(orch.poll(60)) == []


def test_orch_3016_a_task_that_finishes_first_never_times_out() -> None:
    orch = orchestrator()
    admit(orch, task(1, deadline_ms=100))
    orch.poll(0)
    orch.on_finish(uid(1), FinishReason.STOP, 3, 10)
    assert orch.next_deadline_ms() == RARE_PROBES_MS  # the next probe only
    assert orch.poll(1_000) == []


def test_orch_3016_a_non_positive_deadline_is_invalid() -> None:
    refused = refuse(orchestrator(), task(1, deadline_ms=0))
    assert (refused.kind, refused.field) == (ErrorKind.INVALID_PARAMS, "deadline_ms")


def test_deadlines_expire_in_due_order_whatever_the_arming_order() -> None:
    deadlines = Deadlines()
    for task_id, due in (("c", 30), ("a", 10), ("b", 20), ("d", 40)):
        deadlines.arm(task_id, due)
    deadlines.disarm("b")
    assert deadlines.next_deadline_ms() == 10
    assert deadlines.expired(35) == ["a", "c"]
    assert deadlines.next_deadline_ms() == 40
    assert len(deadlines) == 1


def test_disarmed_deadlines_do_not_accumulate() -> None:
    """Stale entries are compacted: memory follows the tasks still waiting, not history."""
    deadlines = Deadlines()
    deadlines.arm("long", 10**12)
    for n in range(10_000):
        deadlines.arm(str(n), 10**12 + n)
        deadlines.disarm(str(n))
    assert len(deadlines) == 1
    assert deadlines.stored() <= 2 * len(deadlines) + 65
    assert deadlines.next_deadline_ms() == 10**12


def test_pool_spec_is_untouched_by_deadlines() -> None:
    """A deadline belongs to the task: other tasks of the pool keep no budget."""
    orch = orchestrator(pool_spec(replicas=[("r0", 2)]))
    admit(orch, task(1, deadline_ms=10))
    admit(orch, task(2))
    orch.poll(0)
    failed = [a for a in orch.poll(10) if isinstance(a, TaskFailed)]
    assert [f.task_id for f in failed] == [uid(1)]
    view = orch.task(uid(2))
    assert view is not None and view.state is State.DISPATCHED
