"""Shutting down, and a client leaving its stream (ORCH-3017, ORCH-3025).

A shutdown is not a cancel: every task it ends fails with SHUTTING_DOWN, a retriable error
with a retry hint, and nothing is admitted once it began. A client whose last stream closed
has `stream_grace_ms` to open one again before its task is canceled (disconnect).
"""

from __future__ import annotations

from orchestrator_core import (
    Abort,
    AbortReason,
    CancelReason,
    ErrorKind,
    FinishReason,
    TaskCanceled,
    TaskEnded,
    TaskFailed,
)
from orchestrator_core.admission import SHUTDOWN_BACKOFF_MS
from tests.core.corekit import admit, orchestrator, pool_spec, refuse, task, uid


def test_orch_3025_shutdown_fails_queued_tasks_at_once_with_a_retriable_hint() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1)]))
    admit(orch, task(1))
    admit(orch, task(2))
    orch.poll(0)  # task 1 runs, task 2 waits
    actions = orch.shut_down(1_000, 5)
    (failed,) = [a for a in actions if isinstance(a, TaskFailed)]
    assert (failed.task_id, failed.kind, failed.retriable) == (
        uid(2),
        ErrorKind.SHUTTING_DOWN,
        True,
    )
    assert failed.backoff_ms == SHUTDOWN_BACKOFF_MS
    assert not any(isinstance(a, TaskCanceled) for a in actions)


def test_orch_3025_a_running_task_may_finish_within_the_grace() -> None:
    orch = orchestrator()
    admit(orch, task(1))
    orch.poll(0)
    orch.shut_down(1_000, 0)
    ended = orch.on_finish(uid(1), FinishReason.STOP, 3, 999)
    assert isinstance(ended, TaskEnded)
    assert orch.readiness().pools == (("p0", False),)


def test_orch_3025_a_task_still_running_at_the_end_of_the_grace_fails_and_is_aborted() -> None:
    orch = orchestrator()
    admit(orch, task(1))
    orch.poll(0)
    orch.on_token(uid(1), 1)
    orch.shut_down(1_000, 10)
    assert orch.next_deadline_ms() == 1_010
    assert [a for a in orch.poll(1_009) if isinstance(a, TaskFailed)] == []
    actions = orch.poll(1_010)
    (failed,) = [a for a in actions if isinstance(a, TaskFailed)]
    (abort,) = [a for a in actions if isinstance(a, Abort)]
    assert (failed.kind, failed.figures.tokens_out) == (ErrorKind.SHUTTING_DOWN, 1)
    assert abort.reason is AbortReason.SHUTDOWN
    assert orch.on_token(uid(1), 1_011) is None  # nothing after the end


def test_orch_3025_nothing_is_admitted_once_a_shutdown_began() -> None:
    orch = orchestrator()
    orch.shut_down(5_000, 0)
    refused = refuse(orch, task(1), 1)
    assert (refused.kind, refused.status, refused.retriable) == (
        ErrorKind.SHUTTING_DOWN,
        503,
        True,
    )
    assert refused.backoff_ms == SHUTDOWN_BACKOFF_MS


def test_orch_3025_a_second_shutdown_keeps_the_earlier_deadline() -> None:
    orch = orchestrator()
    admit(orch, task(1))
    orch.poll(0)
    orch.shut_down(100, 0)
    orch.shut_down(10_000, 50)
    assert orch.next_deadline_ms() == 100


def test_orch_3025_an_operator_drain_cancels_while_a_shutdown_fails() -> None:
    """A drain by an operator is a cancel (reason drain), unlike a shutdown."""
    orch = orchestrator(pool_spec(replicas=[("r0", 1)]))
    admit(orch, task(1))
    admit(orch, task(2))
    orch.poll(0)
    (canceled,) = [a for a in orch.drain("p0", 1_000, 1) if isinstance(a, TaskCanceled)]
    assert (canceled.task_id, canceled.reason) == (uid(2), CancelReason.DRAIN)
    (failed,) = [a for a in orch.shut_down(0, 2) + orch.poll(2) if isinstance(a, TaskFailed)]
    assert (failed.task_id, failed.kind) == (uid(1), ErrorKind.SHUTTING_DOWN)


# -- a client leaving its stream ---------------------------------------------------------


def test_orch_3017_a_client_that_reconnects_within_the_grace_keeps_its_task() -> None:
    orch = orchestrator(stream_grace_ms=500)
    admit(orch, task(1))
    orch.poll(0)
    assert orch.unwatched(uid(1), 10) == []
    assert orch.next_deadline_ms() == 510
    orch.watched(uid(1), 400)
    assert orch.poll(600) == []
    view = orch.task(uid(1))
    assert view is not None and view.outcome is None


def test_orch_3017_a_task_nobody_comes_back_to_is_canceled_after_the_grace() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1)]), stream_grace_ms=500)
    admit(orch, task(1))
    admit(orch, task(2))
    orch.poll(0)  # task 1 runs, task 2 waits
    orch.unwatched(uid(1), 10)
    orch.unwatched(uid(2), 10)
    assert orch.poll(509) == []
    actions = orch.poll(510)
    canceled = {a.task_id: a.reason for a in actions if isinstance(a, TaskCanceled)}
    assert canceled == {uid(1): CancelReason.DISCONNECT, uid(2): CancelReason.DISCONNECT}
    assert [(a.task_id, a.reason) for a in actions if isinstance(a, Abort)] == [
        (uid(1), AbortReason.CANCELED)
    ]


def test_orch_3017_without_a_grace_a_disconnect_cancels_at_once() -> None:
    orch = orchestrator(stream_grace_ms=0)
    admit(orch, task(1))
    orch.poll(0)
    actions = orch.unwatched(uid(1), 5)
    assert [type(a) for a in actions] == [TaskCanceled, Abort]


def test_orch_3017_a_task_that_ends_during_the_grace_is_not_canceled_later() -> None:
    orch = orchestrator(stream_grace_ms=500)
    admit(orch, task(1))
    orch.poll(0)
    orch.unwatched(uid(1), 10)
    assert isinstance(orch.on_finish(uid(1), FinishReason.STOP, 2, 100), TaskEnded)
    assert orch.poll(1_000) == []
