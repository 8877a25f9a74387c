"""A pool's start-time forecast as of now, and what its finished tasks teach (ORCH-3029).

`prediction` holds the model and the arithmetic; this module feeds it from the core's
records: the tasks running on a pool's usable replicas, the token budgets of the tasks
queued, and each task that finished normally. It also keeps the window of recent
prediction errors that pool health reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from orchestrator_core._task import Task
from orchestrator_core.backlog import token_budget
from orchestrator_core.pools import Pool
from orchestrator_core.prediction import Forecast
from orchestrator_core.specs import TaskSpec
from orchestrator_core.vocabulary import Priority, Workload

#: The shortest wait that says something of a prediction of "at once" (ms).
NOTICEABLE_WAIT_MS = 50

#: How many queued tasks a forecast places one by one by their own expected service;
#: those after them are taken at the mean, which keeps a forecast's cost bounded
#: however deep the queue.
HEAD = 32


def service_ms(pool: Pool, spec: TaskSpec) -> int:
    """The expected ms from dispatch to end of a task of `spec` on a busy replica."""
    model = pool.service
    tokens = model.expected_tokens(token_budget(spec), spec.max_tokens)
    return math.ceil(model.service_ms(tokens, pool.widest_slots))


def head_for(position: int) -> int:
    """How much of the queue's head a prediction for `position` replays one by one: the
    tasks before it, while they are within `HEAD`; none past it, where the mean serves
    (so an admission behind a deep queue costs no replay at all)."""
    return position if position < HEAD else 0


def forecast(pool: Pool, tasks: Mapping[str, Task], now_ms: int, head: int = HEAD) -> Forecast:
    """When each usable slot of `pool` frees, the first `head` queued tasks placed onto
    them by their own expected service, and the mean service of a queued task."""
    model = pool.service
    queued = len(pool.queue)
    completion = pool.spec.workload is Workload.COMPLETION
    if not completion:
        mean_tokens = 0.0
    elif queued:
        mean_tokens = model.expected_tokens(pool.backlog.budget / queued, math.inf)
    else:
        mean_tokens = model.typical_tokens()
    free_at: list[float] = []
    service = 0.0
    slots = 0
    for replica in pool.usable_replicas:
        total = replica.slots_total
        level = total if total > 1 else 1
        free_at.extend([0.0] * replica.slots_free)
        for task_id in replica.running:
            task = tasks[task_id]
            first, sent = task.first_token_ms, task.tokens
            own = None if first is None or sent < 2 else (now_ms - first) / (sent - 1)
            max_tokens = task.spec.max_tokens
            free_at.append(
                model.remaining_ms(
                    model.expected_tokens(task.budget, max_tokens),
                    max_tokens,
                    level,
                    sent,
                    now_ms - task.dispatched_ms,
                    own,
                )
            )
        service += total * model.service_ms(mean_tokens, level)
        slots += total
    level = pool.widest_slots
    step = service / slots if slots else model.service_ms(mean_tokens, level)
    if not (queued and head and free_at):
        return Forecast(free_at, step)
    return Forecast(free_at, step, _head_services(pool, tasks, min(head, queued), level))


def _head_services(pool: Pool, tasks: Mapping[str, Task], count: int, level: int) -> list[float]:
    """The expected service of each of the first `count` queued tasks in serving order,
    on a busy replica of `level` slots. Tasks of one budget and max_tokens share one
    figure, so a queue of like tasks (`Backlog.alike`) is not walked at all."""
    model = pool.service
    if pool.spec.workload is not Workload.COMPLETION:
        return [model.service_ms(0.0, level)] * count
    alike = pool.backlog.alike()
    if alike is not None:
        budget, max_tokens = alike
        return [model.expected_service_ms(budget, max_tokens, level)] * count
    known: dict[tuple[int, int], float] = {}
    services: list[float] = []
    for task_id, _ in pool.queue.serving_order(count):
        task = tasks[task_id]
        kind = (task.budget, task.spec.max_tokens)
        expected = known.get(kind)
        if expected is None:
            expected = known[kind] = model.expected_service_ms(*kind, level)
        services.append(expected)
    return services


def dispatch_interval_ms(pool: Pool, forecast: Forecast) -> float:
    """The mean time between two dispatches of the busy pool: admissions closer together
    than this make the queue grow (an `ArrivalRun`)."""
    slots = pool.total_slots
    return forecast.step_ms / (slots if slots > 1 else 1)


def predicted_start_ms(
    pool: Pool, forecast: Forecast, priority: Priority, index: int, position: int, now_ms: int
) -> int:
    """The predicted wait of the task at `index` of its class, `position` in the queue
    (`PoolQueue.position`): that position, pushed back by the tasks of the other class
    the current run of admissions is expected to bring still, as far as the burst rule
    lets them (`PoolQueue.crowded_position`)."""
    room = pool.queue.crowded_position(priority, index) - position
    if room:
        other = Priority.BATCH if priority is Priority.INTERACTIVE else Priority.INTERACTIVE
        more = pool.arrivals.expected_more(other, now_ms, dispatch_interval_ms(pool, forecast))
        position += more if more < room else room
    return forecast.start_ms(position)


def learn(pool: Pool, task: Task, now_ms: int) -> None:
    """Teach `pool` what its task that just finished normally took."""
    replica = task.replica
    assert replica is not None
    first = task.first_token_ms
    sent = task.tokens
    level = round(task.busy_sum / sent) if sent else 1
    # The level is taken within 1 and the replica's slots (at least 1).
    slots = replica.slots_total
    slots = slots if slots > 1 else 1
    pool.service.observe(
        (now_ms if first is None else first) - task.dispatched_ms,
        sent,
        0 if first is None else now_ms - first,
        task.budget,
        (level if level > 1 else 1) if level < slots else slots,
    )


def informative_start(actual_ms: int, predicted_ms: int) -> bool:
    """Whether a start tells how good the prediction was: the task was predicted to wait,
    or it did wait noticeably (a task started at once, a poll later, tells nothing)."""
    return predicted_ms > 0 or actual_ms >= NOTICEABLE_WAIT_MS


def record_start(pool: Pool, task: Task, now_ms: int) -> None:
    """Keep how far the start of a task that waited was from its prediction."""
    actual = now_ms - task.admitted_ms
    if informative_start(actual, task.predicted_start_ms):
        pool.eta_errors.append((actual, task.predicted_start_ms))


def typical_service_ms(pool: Pool) -> int:
    """The expected ms from dispatch to end of the pool's typical task on a busy replica."""
    model = pool.service
    tokens = model.typical_tokens() if pool.spec.workload is Workload.COMPLETION else 0.0
    return math.ceil(model.service_ms(tokens, pool.widest_slots))


def error_medians(pool: Pool) -> tuple[int | None, float | None]:
    """Over the recent starts of tasks that waited: the median of actual - predicted wait
    in ms, and the median of |actual - predicted| / actual, the actual wait taken as at
    least `NOTICEABLE_WAIT_MS` (None before any)."""
    kept = pool.eta_errors
    if not kept:
        return None, None
    middle = (len(kept) - 1) // 2
    signed = sorted(actual - predicted for actual, predicted in kept)
    relative = sorted(
        abs(actual - predicted) / max(actual, NOTICEABLE_WAIT_MS) for actual, predicted in kept
    )
    return signed[middle], relative[middle]
