"""Task life cycle through the facade: tokens, finish, cancel, watchdog, failures, drain.

ORCH-3016 (watchdog), ORCH-3017 (cancel frees the slot, one terminal state), ORCH-3026
(no token after cancel), ORCH-3038 (worker failure), ORCH-3018 (pool lost), ORCH-2101
(drain).
"""

from __future__ import annotations

import pytest
from corekit import (
    RARE_PROBES_MS,
    admit,
    crash,
    dispatches,
    orchestrator,
    pool_spec,
    probe,
    task,
    uid,
)

from orchestrator_core import (
    Abort,
    AbortReason,
    CancelReason,
    CancelStatus,
    ErrorKind,
    FinishReason,
    IllegalTransition,
    InvalidArgument,
    Orchestrator,
    PoolChanged,
    PoolPhase,
    State,
    StopEngine,
    TaskCanceled,
    TaskEnded,
    TaskFailed,
    TaskFigures,
    TokenAccepted,
)
from orchestrator_core.replica import ProbeReport


def running(n_tasks: int = 1, slots: int = 1, **fields: object) -> Orchestrator:
    """A pool with `slots` slots and tasks uid(0..n_tasks-1); the first ones dispatched."""
    orch = orchestrator(pool_spec(replicas=[("r0", slots)], **fields))
    for n in range(n_tasks):
        admit(orch, task(n))
    orch.poll(0)
    return orch


def state(orch: Orchestrator, n: int) -> State:
    view = orch.task(uid(n))
    assert view is not None
    return view.state


def test_tokens_are_numbered_without_gaps_and_finish_ends_the_task() -> None:
    orch = running()
    assert state(orch, 0) is State.DISPATCHED
    assert orch.on_token(uid(0), 10) == TokenAccepted(uid(0), 0)
    assert state(orch, 0) is State.STREAMING
    assert [orch.on_token(uid(0), t) for t in (20, 30)] == [
        TokenAccepted(uid(0), 1),
        TokenAccepted(uid(0), 2),
    ]
    ended = orch.on_finish(uid(0), FinishReason.LENGTH, 7, 50)
    figures = TaskFigures(
        queue_time_ms=0, decode_ms=50, first_token_ms=10, tokens_in=7, tokens_out=3
    )
    assert ended == TaskEnded(uid(0), "p0", "r0", FinishReason.LENGTH, figures)
    assert state(orch, 0) is State.ENDED
    view = orch.task(uid(0))
    assert view is not None and view.tokens == 3 and view.outcome == ended


def test_a_task_may_end_before_its_first_token() -> None:
    orch = running()
    ended = orch.on_finish(uid(0), FinishReason.STOP, 5, 5)
    assert ended is not None and ended.figures.first_token_ms is None
    assert ended.figures.tokens_out == 0


def test_events_that_only_running_tasks_can_have_are_illegal_while_queued() -> None:
    orch = running(2)
    with pytest.raises(IllegalTransition):
        orch.on_token(uid(1), 0)
    with pytest.raises(IllegalTransition):
        orch.on_finish(uid(1), FinishReason.STOP, 1, 0)
    with pytest.raises(IllegalTransition):
        orch.on_failure(uid(1), ErrorKind.INTERNAL, "boom", 0)
    assert state(orch, 1) is State.QUEUED
    with pytest.raises(InvalidArgument):
        orch.on_finish(uid(0), FinishReason.CANCELED, 1, 0)


def test_orch_3017_cancel_of_a_queued_task() -> None:
    orch = running(2)
    outcome = orch.cancel(uid(1), 5)
    assert outcome.status is CancelStatus.CANCELED_QUEUED and outcome.abort is None
    figures = TaskFigures(
        queue_time_ms=5, decode_ms=None, first_token_ms=None, tokens_in=None, tokens_out=0
    )
    assert outcome.canceled == TaskCanceled(uid(1), "p0", None, CancelReason.CLIENT, figures)
    assert outcome.canceled.finish_reason is FinishReason.CANCELED
    assert state(orch, 1) is State.CANCELED
    assert orch.pool_view("p0", 0).queue_depth == 0


def test_orch_3017_cancel_of_a_running_task_frees_its_slot() -> None:
    orch = running(2)
    assert orch.pool_view("p0", 0).slots_free == 0
    outcome = orch.cancel(uid(0), 5)
    assert outcome.status is CancelStatus.CANCELED_RUNNING
    assert outcome.abort == Abort(uid(0), "p0", "r0", AbortReason.CANCELED)
    assert orch.pool_view("p0", 0).slots_free == 1
    assert [d.task_id for d in dispatches(orch.poll(6))] == [uid(1)]


def test_orch_3017_cancel_is_idempotent() -> None:
    orch = running()
    first = orch.cancel(uid(0), 1)
    again = orch.cancel(uid(0), 2)
    assert again.status is CancelStatus.ALREADY_TERMINAL and again.terminal == first.canceled
    orch.on_finish(uid(0), FinishReason.STOP, 1, 3)
    assert orch.reap(uid(0))
    assert orch.cancel(uid(0), 4).status is CancelStatus.ALREADY_TERMINAL
    assert orch.cancel(uid(99), 4).status is CancelStatus.UNKNOWN


def test_orch_3026_no_token_is_accepted_after_cancel() -> None:
    orch = running()
    assert orch.on_token(uid(0), 1) is not None
    orch.cancel(uid(0), 2)
    assert orch.on_token(uid(0), 3) is None
    assert orch.on_finish(uid(0), FinishReason.STOP, 1, 3) is None
    assert orch.on_failure(uid(0), ErrorKind.INTERNAL, "late", 3) is None
    assert state(orch, 0) is State.CANCELED
    assert orch.reap(uid(0))
    assert orch.on_token(uid(0), 4) is None


def test_adapter_failure_ends_the_task_with_its_kind() -> None:
    orch = running()
    failed = orch.on_failure(uid(0), ErrorKind.INTERNAL, "engine said 500", 4)
    figures = TaskFigures(
        queue_time_ms=0, decode_ms=4, first_token_ms=None, tokens_in=None, tokens_out=0
    )
    assert failed == TaskFailed(
        uid(0), "p0", "r0", "llamacpp", ErrorKind.INTERNAL, "engine said 500", figures
    )
    assert not failed.retriable
    assert orch.pool_view("p0", 0).slots_free == 1


def test_orch_3016_wall_timeout_fails_with_decode_timeout_and_aborts() -> None:
    orch = running(wall_timeout_ms=100, idle_timeout_ms=40)
    for t in range(0, 100, 30):
        orch.on_token(uid(0), t)
    assert orch.next_deadline_ms() == 100
    assert orch.poll(99) == []
    actions = orch.poll(100)
    failed, abort = actions
    assert isinstance(failed, TaskFailed) and failed.kind is ErrorKind.DECODE_TIMEOUT
    assert "wall" in failed.message and not failed.retriable
    assert abort == Abort(uid(0), "p0", "r0", AbortReason.TIMEOUT)
    assert orch.pool_view("p0", 0).slots_free == 1
    assert orch.next_deadline_ms() == RARE_PROBES_MS  # the next probe only


def test_orch_3016_idle_timeout_fires_when_tokens_stop() -> None:
    orch = running(wall_timeout_ms=10_000, idle_timeout_ms=50)
    orch.on_token(uid(0), 20)
    assert orch.next_deadline_ms() == 70
    assert orch.poll(69) == []
    failed = orch.poll(70)[0]
    assert isinstance(failed, TaskFailed) and "idle" in failed.message
    assert orch.on_token(uid(0), 71) is None


def test_orch_3016_watchdog_frees_slots_for_queued_work() -> None:
    orch = running(3, wall_timeout_ms=100)
    actions = orch.poll(100)
    assert [type(a) for a in actions] == [TaskFailed, Abort, type(dispatches(actions)[0])]
    assert dispatches(actions)[0].task_id == uid(1)


def test_orch_3038_worker_failure_resets_running_tasks() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1), ("r1", 1)]))
    for n in range(3):
        admit(orch, task(n))
    orch.poll(0)
    failed = orch.on_failure(uid(0), ErrorKind.WORKER_RESET, "segfault", 5)
    assert failed is not None and failed.retriable
    actions = orch.poll(5)
    assert StopEngine("p0", "r0") in actions  # the lost replica is restarted
    assert not [a for a in actions if isinstance(a, TaskFailed)]
    assert state(orch, 1) is State.DISPATCHED  # on r1, which goes on
    assert state(orch, 2) is State.QUEUED  # r1 is still live: the queue waits
    health = orch.pool_view("p0", 0)
    assert health.live and health.ready and health.slots_total == 1


def test_orch_3018_losing_the_last_live_replica_fails_the_queue() -> None:
    orch = running(3)
    actions = probe(orch, "p0", "r0", 5, live=False, ready=False)
    kinds = [(a.task_id, a.kind) for a in actions if isinstance(a, TaskFailed)]
    assert kinds == [
        (uid(0), ErrorKind.WORKER_RESET),
        (uid(1), ErrorKind.POOL_UNAVAILABLE),
        (uid(2), ErrorKind.POOL_UNAVAILABLE),
    ]
    assert not orch.pool_view("p0", 0).live


def test_a_replica_that_stops_being_ready_keeps_its_running_tasks() -> None:
    orch = running(2)
    actions = probe(orch, "p0", "r0", 5, ready=False)
    assert not [a for a in actions if isinstance(a, TaskFailed)]
    assert state(orch, 0) is State.DISPATCHED
    assert orch.poll(6) == []
    orch.on_finish(uid(0), FinishReason.STOP, 1, 7)
    assert orch.poll(8) == []  # not Ready: nothing is dispatched (ORCH-3010)
    probe(orch, "p0", "r0", 9)
    probe(orch, "p0", "r0", 9)  # two good probes in a row bring it back
    assert [d.task_id for d in dispatches(orch.poll(9))] == [uid(1)]


def test_orch_2101_drain_cancels_the_queue_and_lets_running_work_finish() -> None:
    orch = running(3)
    actions = orch.drain("p0", 1000, 10)
    assert [(a.task_id, a.reason) for a in actions if isinstance(a, TaskCanceled)] == [
        (uid(1), CancelReason.DRAIN),
        (uid(2), CancelReason.DRAIN),
    ]
    health = orch.pool_view("p0", 0)
    assert health.draining and not health.ready and health.running == 1
    assert orch.next_deadline_ms() == 1010
    assert orch.on_finish(uid(0), FinishReason.STOP, 1, 500) is not None
    assert orch.poll(501) == [
        PoolChanged("p0", PoolPhase.DRAINED, PoolPhase.DRAINING, pool_spec().model_ref, "drained")
    ]


def test_orch_2101_drain_deadline_cancels_what_still_runs() -> None:
    orch = running(2, slots=2)
    orch.drain("p0", 100, 0)
    assert orch.poll(99) == []
    actions = orch.poll(100)
    canceled = [a for a in actions if isinstance(a, TaskCanceled)]
    aborts = [a for a in actions if isinstance(a, Abort)]
    assert [c.task_id for c in canceled] == [uid(0), uid(1)]
    assert {a.reason for a in aborts} == {AbortReason.DRAINED}
    assert isinstance(actions[-1], PoolChanged) and actions[-1].phase is PoolPhase.DRAINED
    assert orch.cancel(uid(0), 101).status is CancelStatus.ALREADY_TERMINAL


def test_orch_2101_a_second_drain_keeps_the_earlier_deadline() -> None:
    """ORCH-2101: draining a draining pool never extends its window, only shortens it."""
    orch = running(1)
    orch.drain("p0", 1000, 0)
    assert orch.pool_view("p0", 100).drain_remaining_ms == 900
    orch.drain("p0", 5000, 100)
    assert orch.pool_view("p0", 100).drain_remaining_ms == 900
    orch.drain("p0", 200, 300)
    assert orch.pool_view("p0", 300).drain_remaining_ms == 200
    assert orch.next_deadline_ms() == 500


def test_draining_an_idle_pool_reports_drained_at_once() -> None:
    orch = orchestrator()
    phases = [a.phase for a in orch.drain("p0", 100, 0) if isinstance(a, PoolChanged)]
    assert phases == [PoolPhase.DRAINING, PoolPhase.DRAINED]


def test_reap_only_forgets_terminal_tasks() -> None:
    orch = running(2)
    assert not orch.reap(uid(0)) and not orch.reap(uid(1)) and not orch.reap(uid(9))
    orch.cancel(uid(1), 1)
    assert orch.reap(uid(1)) and orch.task(uid(1)) is None
    assert not orch.reap(uid(1))


def test_a_task_view_tracks_its_placement() -> None:
    orch = running(2)
    first, second = orch.task(uid(0)), orch.task(uid(1))
    assert first is not None and (first.replica_id, first.queue_position) == ("r0", 0)
    assert second is not None and second.replica_id is None and second.queue_position == 1
    assert second.predicted_start_ms == 1000 and second.outcome is None


def test_with_no_dedup_window_reaped_ids_are_forgotten() -> None:
    orch = orchestrator(dedup_window=0)
    admit(orch, task(1))
    orch.cancel(uid(1), 0)
    assert orch.reap(uid(1))
    assert orch.cancel(uid(1), 0).status is CancelStatus.UNKNOWN
    admit(orch, task(1))


def test_a_second_report_of_a_lost_replica_changes_nothing() -> None:
    orch = running(2)
    generation = orch.pool_view("p0", 0).replicas[0].generation
    first = crash(orch, "p0", "r0", 1)
    assert [a.kind for a in first if isinstance(a, TaskFailed)] == [
        ErrorKind.WORKER_RESET,
        ErrorKind.POOL_UNAVAILABLE,
    ]
    late = ProbeReport(live=False, ready=False, exited=True)
    assert orch.replica_probed("p0", "r0", generation, late, 2) == []
