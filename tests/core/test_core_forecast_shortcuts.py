"""The shortcuts that keep a forecast cheap give the answers of the long way round.

ORCH-3029: a forecast places the head of the queue by each task's expected service. The
core takes shortcuts to keep admission fast: `Backlog.alike` tells from running sums
whether every queued task shares its budget and max_tokens (then one figure serves the
whole head); `Forecast` replays the head onto a single slot by running sums instead of a
heap; `PoolQueue.crowded_position` is returned without taking the maximum with the
position. Each is checked here against the plain computation it replaces.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter

from corekit import admit, orchestrator, pool_spec, task, uid
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_core import FinishReason, Priority
from orchestrator_core.backlog import Backlog, token_budget
from orchestrator_core.eta import HEAD, forecast
from orchestrator_core.prediction import MIN_SERVICE_MS, Forecast
from orchestrator_core.queue import PoolQueue

INTER, BATCH = Priority.INTERACTIVE, Priority.BATCH
KINDS = st.tuples(st.integers(0, 300), st.integers(1, 300))
LIMITS = [16, 64, 256]


@given(st.lists(st.tuples(st.booleans(), KINDS), max_size=80))
def test_the_backlog_knows_when_every_queued_task_is_alike(
    moves: list[tuple[bool, tuple[int, int]]],
) -> None:
    backlog, queued = Backlog(), Counter[tuple[int, int]]()
    for leaves, kind in moves:
        if leaves and queued[kind]:
            backlog.remove(*kind)
            queued[kind] -= 1
        else:
            backlog.add(*kind)
            queued[kind] += 1
        kinds = [k for k, n in queued.items() if n]
        assert backlog.alike() == (kinds[0] if len(kinds) == 1 else None)
        assert backlog.budget == sum(k[0] * n for k, n in queued.items())


def replayed(free_at: list[float], step: float, head: list[float]) -> list[int]:
    """The starts the heap replay of the head gives, then the next slots to free and the
    tidy continuation (the reference the single-slot shortcut must equal)."""
    heap = list(free_at)
    heapq.heapify(heap)
    starts = []
    for service in head:
        start = heap[0]
        starts.append(math.ceil(start))
        heapq.heapreplace(heap, start + max(MIN_SERVICE_MS, service))
    step = max(MIN_SERVICE_MS, step)
    return starts + [math.ceil(heap[0] + k * step) for k in range(5)]


@given(
    st.floats(0, 1e6),
    st.floats(0, 1e4),
    st.lists(st.floats(-10, 1e5), max_size=HEAD),
)
def test_one_slot_places_the_head_as_the_heap_replay_does(
    free_at: float, step: float, head: list[float]
) -> None:
    fast = Forecast([free_at], step, head)
    positions = range(len(head) + 5)
    assert [fast.start_ms(p) for p in positions] == replayed([free_at], step, head)


@given(
    st.lists(
        st.tuples(st.sampled_from([INTER, BATCH]), st.sampled_from([16, 64, 256])), max_size=40
    ),
    st.sampled_from([None, 8, 500]),
    st.integers(0, 6),
    st.integers(1, 3),
)
def test_the_head_of_a_forecast_is_each_queued_tasks_own_expected_service(
    arrivals: list[tuple[Priority, int]], expected: int | None, finished: int, slots: int
) -> None:
    """Whether or not the queue is alike, each task of the head is placed by its own
    expected service: the predicted starts are those of placing them one by one."""
    orch = orchestrator(pool_spec(replicas=[("r0", slots)], capacity=64))
    now = 0
    for n in range(finished):  # teach the pool a first-token and a per-token time
        admit(orch, task(1000 + n, max_tokens=64), now)
        orch.poll(now)
        for k in range(2 + n % 5):
            orch.on_token(uid(1000 + n), now + 10 + 7 * k)
        orch.on_finish(uid(1000 + n), FinishReason.STOP, 1, now + 60)
        now += 100
    for n, (priority, max_tokens) in enumerate(arrivals):
        admit(orch, task(n, priority, max_tokens=max_tokens, expected_tokens=expected), now)
    pool = orch._pools["p0"]
    tasks = orch._tasks
    model = pool.service
    order = pool.queue.serving_order(HEAD)
    services = [
        model.service_ms(
            model.expected_tokens(token_budget(tasks[t].spec), tasks[t].spec.max_tokens),
            pool.widest_slots,
        )
        for t, _ in order
    ]
    shortcut = forecast(pool, tasks, now)
    free_at = [0.0] * pool.free_slots
    reference = Forecast(free_at, shortcut.step_ms, services)
    for position in range(len(order) + 3):
        assert shortcut.start_ms(position) == reference.start_ms(position)


@given(
    st.lists(st.sampled_from([INTER, BATCH]), max_size=12),
    st.integers(0, 12),
    st.integers(1, 5),
    st.lists(st.sampled_from([INTER, BATCH]), max_size=40),
)
def test_the_crowded_position_is_never_before_the_position(
    first: list[Priority], pops: int, burst: int, later: list[Priority]
) -> None:
    queue = PoolQueue(1000, None, None, burst)
    for n, priority in enumerate(first):
        queue.push(f"w{n}", priority, n)
    for _ in range(min(pops, len(queue))):
        queue.pop_next()
    for n, priority in enumerate(later, start=100):
        queue.push(str(n), priority, n)
    for priority in (INTER, BATCH):
        for index in range(queue.depth(priority) + 2):
            assert queue.crowded_position(priority, index) >= queue.position(priority, index)
