"""Bounded per-pool queues, FIFO per priority and the anti-starvation rule.

ORCH-3004 (bounded FIFO per priority) and ORCH-3051 (priority inversion): the rule under
test is "interactive first, but at most `interactive_burst` interactive dispatches in a row
while batch work waits".
"""

from __future__ import annotations

from corekit import admit, dispatches, orchestrator, pool_spec, refuse, task, uid
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_core import ErrorKind, FinishReason, Priority, PriorityLimits
from orchestrator_core.queue import Limit, PoolQueue

INTER, BATCH = Priority.INTERACTIVE, Priority.BATCH


def drain_order(queue: PoolQueue) -> list[str]:
    order = []
    while queue:
        assert queue.peek_next() is not None
        peeked = queue.peek_next()
        popped = queue.pop_next()
        assert peeked == popped
        order.append(popped)
    assert queue.peek_next() is None
    return order


def test_orch_3004_dispatch_is_fifo_within_a_priority() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1)]))
    for n in range(5):
        admit(orch, task(n))
    order = []
    for now in range(1, 7):
        for d in dispatches(orch.poll(now)):
            order.append(d.task_id)
            orch.on_finish(d.task_id, FinishReason.STOP, 1, now)
    assert order == [uid(n) for n in range(5)]


def test_orch_3004_queue_is_bounded_by_its_capacity() -> None:
    orch = orchestrator(pool_spec(capacity=3))
    for n in range(3):
        admit(orch, task(n))
    refused = refuse(orch, task(3))
    assert refused.kind is ErrorKind.ADMISSION_REJECT
    assert orch.pool_view("p0", 0).queue_depth == 3


def test_orch_3004_per_priority_caps_bound_each_class() -> None:
    orch = orchestrator(pool_spec(capacity=10, batch=PriorityLimits(queue_capacity=2)))
    admit(orch, task(1, BATCH))
    admit(orch, task(2, BATCH))
    assert refuse(orch, task(3, BATCH)).kind is ErrorKind.ADMISSION_REJECT
    admit(orch, task(4, INTER))
    health = orch.pool_view("p0", 0)
    assert (health.queue_depth_interactive, health.queue_depth_batch) == (1, 2)


def test_orch_3051_interactive_flood_cannot_starve_batch() -> None:
    """A batch task waits for at most `interactive_burst` interactive dispatches."""
    orch = orchestrator(pool_spec(replicas=[("r0", 1)], capacity=100, interactive_burst=4))
    admit(orch, task(0, BATCH))
    n = 1
    for _ in range(20):
        admit(orch, task(n, INTER))
        n += 1
    order = []
    now = 0
    while len(order) < 15:
        now += 1
        for d in dispatches(orch.poll(now)):
            order.append(d.task_id)
            orch.on_finish(d.task_id, FinishReason.STOP, 1, now)
        admit(orch, task(n, INTER), now)  # the flood goes on
        n += 1
    assert order.index(uid(0)) == 4


@given(
    st.lists(st.tuples(st.sampled_from([INTER, BATCH]), st.integers(0, 3)), max_size=60),
    st.integers(1, 5),
)
def test_orch_3051_batch_waits_at_most_burst_interactive_dispatches(
    steps: list[tuple[Priority, int]], burst: int
) -> None:
    queue = PoolQueue(1000, None, None, burst)
    kinds: dict[str, Priority] = {}
    streak = 0
    for n, (priority, pops) in enumerate(steps):
        queue.push(str(n), priority, n)
        kinds[str(n)] = priority
        for _ in range(pops):
            if not queue:
                break
            batch_waiting = queue.depth(BATCH) > 0
            popped = queue.pop_next()
            if kinds[popped] is INTER and batch_waiting:
                streak += 1
                assert streak <= burst
            else:
                streak = 0


def warm_queue(burst: int, warm_pops: int, arrivals: list[Priority]) -> PoolQueue:
    """A queue that has served `warm_pops` of twelve mixed tasks (so its burst streak is
    anywhere), then took `arrivals` (ids "100", "101", ...)."""
    queue = PoolQueue(1000, None, None, burst)
    for n in range(12):
        queue.push(f"w{n}", INTER if n % 3 else BATCH, n)
    for _ in range(warm_pops):
        queue.pop_next()
    for n, priority in enumerate(arrivals, start=100):
        queue.push(str(n), priority, n)
    return queue


@given(st.lists(st.sampled_from([INTER, BATCH]), max_size=40), st.integers(0, 8), st.integers(1, 5))
def test_orch_3029_position_matches_the_real_dispatch_order(
    arrivals: list[Priority], warm_pops: int, burst: int
) -> None:
    queue = warm_queue(burst, warm_pops, arrivals)
    predicted = {
        tid: queue.position(p, i) for p in (INTER, BATCH) for i, tid in enumerate(queue.ids(p))
    }
    actual = {tid: i for i, tid in enumerate(drain_order(queue))}
    assert predicted == actual


@given(
    st.lists(st.sampled_from([INTER, BATCH]), max_size=40),
    st.integers(0, 8),
    st.integers(1, 5),
    st.integers(0, 50),
)
def test_orch_3029_the_forecasts_head_is_the_real_dispatch_order(
    arrivals: list[Priority], warm_pops: int, burst: int, limit: int
) -> None:
    """The head a forecast places one by one (`serving_order`) is what `pop_next` takes."""
    queue = warm_queue(burst, warm_pops, arrivals)
    head = queue.serving_order(limit)
    assert [tid for tid, _ in head] == drain_order(queue)[:limit]


@given(
    st.lists(st.sampled_from([INTER, BATCH]), max_size=30),
    st.integers(0, 8),
    st.integers(1, 5),
    st.lists(st.sampled_from([INTER, BATCH]), max_size=60),
)
def test_orch_3029_no_later_arrival_pushes_a_task_past_its_crowded_position(
    queued: list[Priority], warm_pops: int, burst: int, later: list[Priority]
) -> None:
    """`crowded_position` bounds how far tasks arriving later can push a queued one back
    under the burst rule (what the prediction of overtaking is capped by)."""
    queue = warm_queue(burst, warm_pops, queued)
    bound = {
        tid: queue.crowded_position(p, i)
        for p in (INTER, BATCH)
        for i, tid in enumerate(queue.ids(p))
    }
    for n, priority in enumerate(later, start=1000):
        queue.push(str(n), priority, n)
    order = drain_order(queue)
    for tid, crowded in bound.items():
        assert order.index(tid) <= crowded


@given(st.integers(0, 12), st.integers(0, 12), st.integers(1, 4), st.integers(1, 4))
def test_dispatches_to_fit_a_class_cap_matches_simulation(
    n_i: int, n_b: int, cap: int, burst: int
) -> None:
    queue = PoolQueue(1000, None, None, burst)
    for k in range(n_i):
        queue.push(f"i{k}", INTER, k)
    for k in range(n_b):
        queue.push(f"b{k}", BATCH, 100 + k)
    queue.interactive_cap = queue.batch_cap = cap
    for priority, depth in ((INTER, n_i), (BATCH, n_b)):
        if depth < cap:
            assert queue.blocking_limit(priority) is None
            continue
        assert queue.blocking_limit(priority) is Limit.CLASS
        needed = queue.dispatches_to_fit(priority, Limit.CLASS)
        sim = PoolQueue(1000, None, None, burst)
        for p in (INTER, BATCH):
            for k, tid in enumerate(queue.ids(p)):
                sim.push(tid, p, k if p is INTER else 100 + k)
        for _ in range(needed):
            sim.pop_next()
        assert sim.depth(priority) == cap - 1


def test_pool_limit_needs_enough_dispatches_to_fall_below_capacity() -> None:
    queue = PoolQueue(3, None, None, 4)
    for n in range(3):
        queue.push(str(n), INTER, n)
    assert queue.blocking_limit(BATCH) is Limit.POOL
    assert queue.dispatches_to_fit(BATCH, Limit.POOL) == 1


def test_orch_3005_drop_lru_victim_is_the_oldest_whatever_the_mix() -> None:
    from orchestrator_core import QueuePolicy

    only_interactive = PoolQueue(2, None, None, 4)
    only_interactive.push("i0", INTER, 0)
    only_interactive.push("i1", INTER, 1)
    assert only_interactive.victim(QueuePolicy.DROP_LRU, BATCH, Limit.POOL) == ("i0", INTER)
    only_batch = PoolQueue(2, None, None, 4)
    only_batch.push("b0", BATCH, 0)
    only_batch.push("b1", BATCH, 1)
    assert only_batch.victim(QueuePolicy.DROP_LRU, INTER, Limit.POOL) == ("b0", BATCH)
    mixed = PoolQueue(2, None, None, 4)
    mixed.push("i0", INTER, 0)
    mixed.push("b1", BATCH, 1)
    assert mixed.victim(QueuePolicy.DROP_LRU, BATCH, Limit.POOL) == ("i0", INTER)
    assert mixed.victim(QueuePolicy.REJECT, INTER, Limit.POOL) is None
