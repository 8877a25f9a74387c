"""Start-time prediction, what pools learn, and its measured error (ORCH-3029, ORCH-2007).

The model (orchestrator_core.prediction): a pool learns first-token time, per-token time by
concurrency and how much of its token budget a task uses; the forecast replays the queue
onto the slots, each freeing when its running task is expected to end.
"""

from __future__ import annotations

import heapq
import random
import statistics

from corekit import admit, dispatches, orchestrator, pool_spec, refuse, task, uid
from hypothesis import given
from hypothesis import strategies as st
from simengine import SimEngine, Start

from orchestrator_core import FinishReason, Priority, TaskSpec
from orchestrator_core.prediction import ArrivalRun, Forecast, ServiceModel

INTER, BATCH = Priority.INTERACTIVE, Priority.BATCH

# -- what a pool learns ---------------------------------------------------------------


def test_the_first_finished_task_replaces_the_prior_then_the_average_follows_alpha() -> None:
    model = ServiceModel(1000, 0.5)
    assert model.service_ms(50, 1) == 1000  # nothing learned: the configured estimate
    model.observe(first_ms=40, tokens=11, rest_ms=100, budget=20, level=1)
    assert (model.first_ms, model.token_ms, model.ratio) == (40, {1: 10.0}, 21 / 30)
    model.observe(first_ms=20, tokens=21, rest_ms=400, budget=20, level=1)
    # The ratio is over decayed sums, the prior a task of budget 20 that used it all:
    # used (0.5 x 20 + 11) x 0.5 + 21 = 31.5, budgeted (0.5 x 20 + 20) x 0.5 + 20 = 35.
    assert (model.first_ms, model.token_ms[1], model.ratio) == (30, 15.0, 0.9)
    assert model.service_ms(11, 1) == 30 + 10 * 15


def test_per_token_time_is_learned_per_concurrency_and_extrapolated_as_fixed_throughput() -> None:
    model = ServiceModel(1000, 1.0)
    assert model.per_token_ms(2) == 0.0  # nothing known
    model.observe(first_ms=10, tokens=5, rest_ms=40, budget=5, level=1)
    assert model.per_token_ms(1) == 10.0
    assert model.per_token_ms(4) == 40.0  # unseen: four streams share one throughput
    model.observe(first_ms=10, tokens=5, rest_ms=60, budget=5, level=2)
    assert model.per_token_ms(2) == 15.0  # seen: the engine's own figure
    assert model.per_token_ms(4) == 30.0  # from the nearest level seen
    assert model.per_token_ms(3) == 22.5  # equally near 2 and 4: the lower one


def test_expected_tokens_scale_the_budget_within_one_and_max_tokens() -> None:
    model = ServiceModel(1000, 1.0)
    assert model.expected_tokens(100, 100) == 100  # nothing learned: the whole budget
    model.observe(first_ms=10, tokens=25, rest_ms=24, budget=100, level=1)
    assert model.expected_tokens(100, 100) == 25
    assert model.expected_tokens(2, 100) == 1
    assert model.expected_tokens(0, 100) == 0  # a workload that sends no tokens
    model.observe(first_ms=10, tokens=50, rest_ms=49, budget=10, level=1)  # a low guess
    assert model.expected_tokens(10, 30) == 30


def test_a_running_task_has_its_untaken_tokens_left() -> None:
    model = ServiceModel(1000, 1.0)
    assert model.remaining_ms(10, 10, 1, sent=0, elapsed_ms=300) == 700  # the prior
    # Nothing learned yet, but the task's own pace so far: 89 tokens more at 10 ms.
    assert model.remaining_ms(100, 100, 1, sent=11, elapsed_ms=5000, own_token_ms=10.0) == 890
    model.observe(first_ms=50, tokens=11, rest_ms=100, budget=10, level=1)
    assert model.remaining_ms(10, 10, 1, sent=0, elapsed_ms=20) == 30 + 9 * 10
    assert model.remaining_ms(10, 10, 1, sent=4, elapsed_ms=100) == 6 * 10
    assert model.remaining_ms(10, 20, 1, sent=12, elapsed_ms=200) == 10  # past it: one more
    assert model.remaining_ms(10, 12, 1, sent=12, elapsed_ms=200) == 0  # at max_tokens


def test_canceled_and_failed_tasks_teach_nothing() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1)], initial_service_ms=700))
    admit(orch, task(0))
    orch.poll(0)
    orch.on_token(uid(0), 5)
    orch.cancel(uid(0), 300)
    assert orch.pool_view("p0", 300).service_time_ms == 700


def test_finished_tasks_teach_first_token_and_per_token_time_at_their_concurrency() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 2)], initial_service_ms=1000, ewma_alpha=1.0))
    for n in (0, 1):
        admit(orch, task(n, max_tokens=10))
    assert len(dispatches(orch.poll(0))) == 2
    for step in range(10):  # both stream together, a token each every 20 ms after 30 ms
        for n in (0, 1):
            if n == 0 or step < 9:  # the second one has its last token still to send
                orch.on_token(uid(n), 30 + 20 * step)
    orch.on_finish(uid(0), FinishReason.LENGTH, 8, 210)
    # 30 ms to the first token, then 9 tokens in 180 ms at 2 busy slots.
    assert orch.pool_view("p0", 210).service_time_ms == 30 + 9 * 20
    # The other one is nearly done: a newcomer on the freed slot starts at once, and the
    # one after it when the running task sends its last token.
    assert admit(orch, task(2, max_tokens=10), 210).predicted_start_ms == 0
    orch.poll(210)
    assert admit(orch, task(3, max_tokens=10), 210).predicted_start_ms == 20


def test_a_run_of_admissions_expects_as_many_more_and_ends_after_a_long_gap() -> None:
    run = ArrivalRun()
    assert run.expected_more(BATCH, 0, 500) == 0  # nothing seen
    for now in (0, 10, 20):  # every 10 ms: the run goes on
        run.arrive(INTER, now, 500)
    run.arrive(BATCH, 30, 500)
    assert (run.expected_more(INTER, 30, 500), run.expected_more(BATCH, 30, 500)) == (3, 1)
    assert run.expected_more(INTER, 110, 500) == 3  # 80 ms: within 8 mean gaps
    assert run.expected_more(INTER, 111, 500) == 0  # over: a burst ends soon after it
    assert run.expected_more(INTER, 40, 5) == 0  # slower than the pool dispatches: no run
    run.arrive(BATCH, 200, 500)  # a new run
    assert (run.expected_more(INTER, 200, 500), run.expected_more(BATCH, 200, 500)) == (0, 1)


# -- the forecast ---------------------------------------------------------------------


def test_orch_3029_forecast_examples() -> None:
    idle = Forecast([0.0, 0.0], 100)
    assert [idle.start_ms(p) for p in range(5)] == [0, 0, 100, 100, 200]
    staggered = Forecast([30.0, 80.0], 100)
    assert [staggered.start_ms(p) for p in range(5)] == [30, 80, 130, 180, 230]
    # One slot is held by a long task: the other serves the queue meanwhile.
    long_task = Forecast([10.0, 1000.0], 100)
    assert [long_task.start_ms(p) for p in range(5)] == [10, 110, 210, 310, 410]
    assert long_task.start_ms(9) == 910
    assert long_task.start_ms(10) == 1000
    assert Forecast([], 100).start_ms(2) == 300  # no usable slot: one at a time
    assert long_task.backoff_ms(1) == 10
    assert idle.backoff_ms(1) == 1  # never an instant retry


def replayed_start(free_at: list[float], step: float, position: int) -> float:
    """The start of the task at `position`, by placing every task ahead on the first slot
    to free (the reference the forecast's arithmetic must equal)."""
    heap = list(free_at)
    heapq.heapify(heap)
    for _ in range(position):
        heapq.heappush(heap, heapq.heappop(heap) + step)
    return heap[0]


@given(
    st.lists(st.integers(0, 5_000), min_size=1, max_size=8),
    st.integers(1, 2_000),
    st.integers(0, 200),
)
def test_the_forecast_is_the_replay_of_the_queue_onto_the_slots(
    free_at: list[int], step: int, position: int
) -> None:
    forecast = Forecast([float(at) for at in free_at], step)
    expected = replayed_start([float(at) for at in free_at], step, position)
    assert abs(forecast.start_ms(position) - expected) <= 1


@given(
    st.lists(st.floats(0, 10_000), max_size=8),
    st.floats(0.5, 5_000),
    st.integers(0, 300),
)
def test_orch_3029_predictions_never_fall_with_the_position_and_backoff_agrees(
    free_at: list[float], step: float, position: int
) -> None:
    forecast = Forecast(list(free_at), step)
    assert 0 <= forecast.start_ms(position) <= forecast.start_ms(position + 1)
    assert forecast.backoff_ms(position + 1) == max(1, forecast.start_ms(position))


def test_orch_2007_the_429_backoff_is_the_forecast_start_of_the_dispatch_that_makes_room() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 2)], capacity=3, initial_service_ms=400))
    for n in range(2):
        admit(orch, task(n))
    orch.poll(0)
    starts = [admit(orch, task(n), 100).predicted_start_ms for n in (2, 3, 4)]
    assert starts == [300, 300, 700]
    # One dispatch makes room: the one the head of the queue waits for.
    assert refuse(orch, task(5), 100).backoff_ms == starts[0]


# -- against a simulated engine -------------------------------------------------------


def burst_workload(seed: int) -> tuple[list[list[TaskSpec]], dict[str, int]]:
    """Four warm-up tasks, then bursts of 24 and 96: one in three batch, max_tokens from
    16 to 128, most tasks running to their limit and some stopping early."""
    rng = random.Random(seed)
    waves: list[list[TaskSpec]] = []
    lengths: dict[str, int] = {}
    n = 0
    for size in (4, 24, 96):
        wave = []
        for _ in range(size):
            limit = rng.choice((16, 32, 48, 96, 128))
            priority = BATCH if rng.random() < 1 / 3 else INTER
            wave.append(task(n, priority, max_tokens=limit))
            lengths[uid(n)] = limit if rng.random() < 0.8 else rng.randint(1, limit)
            n += 1
        waves.append(wave)
    return waves, lengths


def relative_errors(starts: list[Start]) -> list[float]:
    """|predicted - actual| / actual over the tasks that waited at least 250 ms."""
    return [abs(s.predicted_ms - s.actual_ms) / s.actual_ms for s in starts if s.actual_ms >= 250]


def old_wave_predictions(starts: list[Start], service_ms: float, slots: int) -> list[Start]:
    """What the model before this one said: waves of `slots` tasks, each one average
    service time long, whatever their tokens and however they shared the engine."""
    return [
        Start(
            s.task_id,
            s.priority,
            s.position,
            round((s.position // slots + 1) * service_ms),
            s.actual_ms,
        )
        for s in starts
    ]


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


SEEDS = range(1, 7)


def burst_errors(seed: int, replicas: list[tuple[str, int]], share: float) -> list[Start]:
    """The starts after warm-up of one seeded burst workload on a simulated engine."""
    waves, lengths = burst_workload(seed)
    orch = orchestrator(pool_spec(replicas=replicas, capacity=256, initial_service_ms=1000))
    return SimEngine(orch, token_ms=5.0, share=share, prefill_ms=20).run(waves, lengths)[4:]


def test_orch_3029_bursts_on_a_shared_engine_start_within_20_percent_on_median() -> None:
    """The issue's measurement on a simulated engine where two streams share a replica
    at 1.6 x the per-token time of one: after four warm-up tasks, bursts of 24 and 96
    with mixed priorities and max_tokens, six seeded workloads. Goal: median |error| <=
    20 % of the actual wait on every workload, p90 <= 40 % on a typical one (a batch task
    early in a burst is overtaken by interactive tasks that arrive after it, which no
    prediction at admission can know). The wave model this one replaces (one learned
    service time per task, whatever its tokens and concurrency) misses by far more."""
    medians, p90s, before = [], [], []
    for seed in SEEDS:
        starts = burst_errors(seed, [("r0", 2)], 0.6)
        errors = relative_errors(starts)
        assert len(errors) > 100
        medians.append(statistics.median(errors))
        p90s.append(p90(errors))
        warm = [s for s in starts[:24] if s.actual_ms == 0]
        assert warm, "the burst's first tasks start at once"
        served = [t for t in starts if t.actual_ms > 0]
        # The old model, given its best case: the true mean service time of the bursts.
        service = statistics.mean(t.actual_ms / (t.position // 2 + 1) for t in served)
        before.append(statistics.median(relative_errors(old_wave_predictions(starts, service, 2))))
    assert max(medians) <= 0.2, medians
    assert statistics.median(p90s) <= 0.4, p90s
    assert statistics.median(before) > 1.5 * statistics.median(medians), (before, medians)


def test_orch_3029_predictions_hold_on_two_replicas_of_a_batching_engine() -> None:
    medians, p90s = [], []
    for seed in SEEDS:
        errors = relative_errors(burst_errors(seed, [("r0", 2), ("r1", 2)], 0.1))
        medians.append(statistics.median(errors))
        p90s.append(p90(errors))
    assert max(medians) <= 0.2, medians
    assert statistics.median(p90s) <= 0.4, p90s


def test_orch_3029_pool_health_reports_the_median_prediction_error() -> None:
    waves, lengths = burst_workload(3)
    orch = orchestrator(pool_spec(replicas=[("r0", 2)], capacity=256))
    assert orch.pool_view("p0", 0).eta_error_median_ms is None  # nothing waited yet
    starts = SimEngine(orch).run(waves[:2], lengths)
    waited = [s for s in starts if s.actual_ms > 0 or s.predicted_ms > 0]
    view = orch.pool_view("p0", 0)
    signed = sorted(s.actual_ms - s.predicted_ms for s in waited)
    relative = sorted(abs(s.actual_ms - s.predicted_ms) / max(s.actual_ms, 1) for s in waited)
    middle = (len(waited) - 1) // 2
    assert (view.eta_error_median_ms, view.eta_error_median_ratio) == (
        signed[middle],
        relative[middle],
    )
