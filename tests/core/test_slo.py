"""Per-priority SLO measurement rules, one by one (ORCH-3041).

Defaults, the 64-token figure, nearest-rank p95, window expiry, error rate, throughput
ratio, attainment, the met/None thresholds, independent scopes with their global
aggregate, the memory cap and argument checks.
"""

from __future__ import annotations

import pytest

from orchestrator_core import (
    GLOBAL_SCOPE,
    ConfigError,
    InvalidArgument,
    Priority,
    PriorityObjectives,
    SloObjectives,
    SloTracker,
)

INTER, BATCH = Priority.INTERACTIVE, Priority.BATCH


def record(
    tracker: SloTracker,
    now_ms: int,
    *,
    scope: str = "rs-a",
    priority: Priority = INTER,
    first_token_ms: int | None = 100,
    tokens_out: int = 64,
    decode_ms: int | None = 630,
    ok: bool = True,
) -> None:
    tracker.record_outcome(
        scope,
        priority,
        now_ms,
        first_token_ms=first_token_ms,
        tokens_out=tokens_out,
        decode_ms=decode_ms,
        ok=ok,
    )


def test_orch_3041_default_objectives() -> None:
    objectives = SloTracker().objectives
    assert objectives == SloObjectives()
    inter, batch = objectives.of(INTER), objectives.of(BATCH)
    assert (inter.first_token_p95_ms, inter.tokens_64_p95_ms) == (900, 2_500)
    assert (inter.max_error_rate, inter.min_throughput_ratio) == (0.005, None)
    assert (batch.first_token_p95_ms, batch.tokens_64_p95_ms) == (None, None)
    assert (batch.max_error_rate, batch.min_throughput_ratio) == (0.01, 0.8)
    tracker = SloTracker()
    assert (tracker.window_ms, tracker.max_samples, tracker.min_samples) == (300_000, 10_000, 20)


@pytest.mark.parametrize(
    "objectives",
    [
        PriorityObjectives(first_token_p95_ms=0),
        PriorityObjectives(tokens_64_p95_ms=-1),
        PriorityObjectives(max_error_rate=-0.1),
        PriorityObjectives(max_error_rate=1.5),
        PriorityObjectives(min_throughput_ratio=0.0),
        PriorityObjectives(min_throughput_ratio=float("inf")),
        PriorityObjectives(min_throughput_ratio=float("nan")),
    ],
)
def test_unusable_objectives_are_config_errors(objectives: PriorityObjectives) -> None:
    with pytest.raises(ConfigError, match=r"slo\.batch"):
        SloTracker(objectives=SloObjectives(batch=objectives))


@pytest.mark.parametrize(
    ("window_ms", "max_samples", "min_samples", "field"),
    [(0, 1, 1, "window_ms"), (1, 0, 1, "max_samples"), (1, 1, 0, "min_samples")],
)
def test_tracker_limits_must_be_positive(
    window_ms: int, max_samples: int, min_samples: int, field: str
) -> None:
    with pytest.raises(ConfigError, match=field):
        SloTracker(window_ms, max_samples=max_samples, min_samples=min_samples)


def test_orch_3041_p95_is_the_nearest_rank_of_the_window() -> None:
    tracker = SloTracker(min_samples=1)
    for ttft in range(100, 0, -1):  # 1..100 ms, recorded out of order
        record(tracker, 0, first_token_ms=ttft)
    assert tracker.snapshot("rs-a", 0).interactive.first_token_p95_ms == 95
    tracker = SloTracker(min_samples=1)
    for ttft in (5, 1, 4, 2, 3):  # rank ceil(0.95 * 5) = 5: the largest
        record(tracker, 0, first_token_ms=ttft)
    assert tracker.snapshot("rs-a", 0).interactive.first_token_p95_ms == 5
    tracker = SloTracker(min_samples=1)
    for ttft in range(1, 41):  # rank ceil(0.95 * 40) = 38
        record(tracker, 0, first_token_ms=ttft * 10)
    assert tracker.snapshot("rs-a", 0).interactive.first_token_p95_ms == 380


def test_orch_3041_time_for_64_tokens_scales_the_decode_gaps() -> None:
    cases = [
        (100, 64, 630, 730),  # 63 gaps timed: the measured time itself
        (100, 5, 400, 100 + 6_300),  # 4 gaps of 100 ms extrapolated to 63
        (0, 3, 1, 32),  # 31.5 ms rounds up
        (50, 128, 1_270, 680),  # 127 gaps of 10 ms, the 64th token at 50 + 630
    ]
    for ttft, tokens_out, decode_ms, expected in cases:
        tracker = SloTracker(min_samples=1)
        record(tracker, 0, first_token_ms=ttft, tokens_out=tokens_out, decode_ms=decode_ms)
        assert tracker.snapshot("rs-a", 0).interactive.tokens_64_p95_ms == expected


@pytest.mark.parametrize(
    ("ttft", "tokens_out", "decode_ms"),
    [(100, 1, 0), (100, 0, None), (100, 10, None), (None, 10, 90)],
)
def test_no_64_token_figure_without_a_decode_rate_or_a_first_token(
    ttft: int | None, tokens_out: int, decode_ms: int | None
) -> None:
    tracker = SloTracker(min_samples=1)
    record(tracker, 0, first_token_ms=ttft, tokens_out=tokens_out, decode_ms=decode_ms)
    slo = tracker.snapshot("rs-a", 0).interactive
    assert slo.samples == 1
    assert slo.tokens_64_p95_ms is None
    assert slo.first_token_p95_ms == ttft


def test_orch_3041_outcomes_leave_the_window_after_window_ms() -> None:
    tracker = SloTracker(window_ms=1_000, min_samples=1)
    record(tracker, 0, first_token_ms=500)
    record(tracker, 600, first_token_ms=100)
    assert tracker.snapshot("rs-a", 999).interactive.samples == 2
    later = tracker.snapshot("rs-a", 1_000).interactive  # the first is exactly 1 s old
    assert (later.samples, later.first_token_p95_ms) == (1, 100)
    gone = tracker.snapshot("rs-a", 1_600).interactive
    assert (gone.samples, gone.first_token_p95_ms, gone.error_rate) == (0, None, None)
    assert (gone.attainment_ratio, gone.met) == (None, None)
    assert tracker.stored() == 4  # reading changes nothing: rs-a and the global aggregate
    record(tracker, 1_600, first_token_ms=100)  # recording drops what left the window
    assert tracker.stored() == 2
    assert tracker.scopes() == [GLOBAL_SCOPE, "rs-a"]


def test_recording_drops_expired_outcomes_of_that_window() -> None:
    tracker = SloTracker(window_ms=100)
    record(tracker, 0)
    record(tracker, 0, scope="rs-b")
    assert tracker.stored() == 4
    record(tracker, 100)  # rs-a and the global window drop their t=0 entries
    assert tracker.stored() == 3


def test_orch_3041_error_rate_against_the_objective() -> None:
    tracker = SloTracker()
    for n in range(200):
        record(tracker, n, ok=n != 7)
    slo = tracker.snapshot("rs-a", 200).interactive
    assert slo.error_rate == 0.005
    assert slo.met is True
    record(tracker, 201, ok=False)
    slo = tracker.snapshot("rs-a", 201).interactive
    assert slo.error_rate == pytest.approx(2 / 201)
    assert slo.met is False


def test_orch_3041_latency_objectives_are_judged_on_the_p95() -> None:
    tracker = SloTracker()
    for n in range(20):  # rank 19 of 20: one slow task is tolerated, two are not
        record(tracker, n, first_token_ms=2_000 if n == 0 else 900)
    slo = tracker.snapshot("rs-a", 20).interactive
    assert (slo.first_token_p95_ms, slo.met) == (900, True)
    assert slo.attainment_ratio == 19 / 20
    record(tracker, 21, first_token_ms=901)
    record(tracker, 22, first_token_ms=901)
    assert tracker.snapshot("rs-a", 22).interactive.met is False

    slow = SloTracker()
    for n in range(20):  # first tokens fine, 64 tokens take 100 + 63 x 40 ms = 2.62 s
        record(slow, n, tokens_out=2, decode_ms=40)
    slo = slow.snapshot("rs-a", 20).interactive
    assert (slo.tokens_64_p95_ms, slo.met, slo.attainment_ratio) == (2_620, False, 0.0)


def test_orch_3041_batch_throughput_ratio_needs_a_theoretical_rate() -> None:
    tracker = SloTracker()
    for n in range(20):  # each task: 9 gaps in 300 ms = 30 tokens/s
        record(tracker, n, priority=BATCH, tokens_out=10, decode_ms=300)
    slo = tracker.snapshot("rs-a", 20).batch
    assert (slo.throughput_ratio, slo.met) == (None, None)  # unknown, never invented
    assert slo.attainment_ratio == 1.0
    tracker.set_theoretical_tokens_per_s("rs-a", 40.0)
    slo = tracker.snapshot("rs-a", 20).batch
    assert (slo.throughput_ratio, slo.met) == (0.75, False)
    assert slo.attainment_ratio == 0.0
    tracker.set_theoretical_tokens_per_s("rs-a", 37.5)
    slo = tracker.snapshot("rs-a", 20).batch
    assert (slo.throughput_ratio, slo.met, slo.attainment_ratio) == (0.8, True, 1.0)
    tracker.set_theoretical_tokens_per_s("rs-a", None)
    assert tracker.snapshot("rs-a", 20).batch.throughput_ratio is None
    assert tracker.snapshot(GLOBAL_SCOPE, 20).batch.throughput_ratio is None


def test_throughput_is_time_weighted_over_the_window() -> None:
    tracker = SloTracker(min_samples=1)
    tracker.set_theoretical_tokens_per_s("rs-a", 60.0)
    record(tracker, 0, priority=BATCH, tokens_out=101, decode_ms=1_000)  # 100 tokens/s
    record(tracker, 0, priority=BATCH, tokens_out=11, decode_ms=1_000)  # 10 tokens/s
    record(tracker, 0, priority=BATCH, tokens_out=1, decode_ms=0)  # no gap: not timed
    slo = tracker.snapshot("rs-a", 0).batch
    assert slo.throughput_ratio == pytest.approx(55 / 60)  # 110 gaps in 2 s: 55 tokens/s
    assert slo.attainment_ratio == 2 / 3  # the 10 tokens/s task misses the floor
    assert slo.met is True  # the window as a whole reaches 80 %


def test_decode_below_the_clock_resolution_leaves_throughput_unknown() -> None:
    tracker = SloTracker(min_samples=1)
    tracker.set_theoretical_tokens_per_s("rs-a", 50.0)
    record(tracker, 0, priority=BATCH, tokens_out=3, decode_ms=0)
    slo = tracker.snapshot("rs-a", 0).batch
    assert (slo.throughput_ratio, slo.met, slo.attainment_ratio) == (None, None, 1.0)


def test_orch_3041_met_is_none_below_the_minimum_of_samples() -> None:
    tracker = SloTracker(min_samples=3)
    record(tracker, 0, ok=False)
    record(tracker, 1, ok=False)
    slo = tracker.snapshot("rs-a", 1).interactive
    assert (slo.samples, slo.error_rate, slo.met) == (2, 1.0, None)
    record(tracker, 2, ok=False)
    assert tracker.snapshot("rs-a", 2).interactive.met is False


def test_an_objective_with_too_few_values_cannot_be_judged() -> None:
    tracker = SloTracker(min_samples=2)
    record(tracker, 0, tokens_out=1, decode_ms=0)  # first token only: no 64-token figure
    record(tracker, 0, tokens_out=1, decode_ms=0)
    assert tracker.snapshot("rs-a", 0).interactive.met is None
    record(tracker, 0, first_token_ms=None, tokens_out=0, decode_ms=None, ok=False)
    record(tracker, 0, first_token_ms=None, tokens_out=0, decode_ms=None, ok=False)
    slo = tracker.snapshot("rs-a", 0).interactive
    assert (slo.error_rate, slo.met) == (0.5, False)  # a violation outweighs the unknown


def test_a_priority_without_objectives_is_met_once_it_has_samples() -> None:
    tracker = SloTracker(objectives=SloObjectives(batch=PriorityObjectives()), min_samples=1)
    record(tracker, 0, priority=BATCH, first_token_ms=None, tokens_out=0, decode_ms=None)
    slo = tracker.snapshot("rs-a", 0).batch
    assert (slo.met, slo.attainment_ratio) == (True, 1.0)


def test_a_failed_task_never_attains() -> None:
    tracker = SloTracker(min_samples=1)
    record(tracker, 0, first_token_ms=10, ok=False)
    record(tracker, 0, first_token_ms=None, tokens_out=0, decode_ms=None)  # empty, in time
    assert tracker.snapshot("rs-a", 0).interactive.attainment_ratio == 0.5


def test_orch_3041_scopes_are_independent_and_add_up_globally() -> None:
    tracker = SloTracker(min_samples=1)
    tracker.set_theoretical_tokens_per_s("rs-b", 10.0)
    record(tracker, 0, scope="rs-a", first_token_ms=100)
    record(tracker, 0, scope="rs-b", first_token_ms=300, priority=BATCH, tokens_out=2)
    a, b = tracker.snapshot("rs-a", 0), tracker.snapshot("rs-b", 0)
    assert (a.interactive.samples, a.batch.samples) == (1, 0)
    assert (b.interactive.samples, b.batch.samples) == (0, 1)
    assert b.batch.first_token_p95_ms == 300
    assert a.batch.throughput_ratio is None
    assert b.of(BATCH) is b.batch and b.of(INTER) is b.interactive
    assert (b.scope, b.at_ms, b.window_ms) == ("rs-b", 0, 300_000)
    both = tracker.snapshot(GLOBAL_SCOPE, 0)
    assert (both.interactive.samples, both.batch.samples) == (1, 1)
    assert both.batch.throughput_ratio is None  # the global scope has no rate of its own
    assert tracker.scopes() == [GLOBAL_SCOPE, "rs-a", "rs-b"]
    assert tracker.snapshot("rs-unknown", 0).interactive.samples == 0


def test_forgetting_a_scope_keeps_its_outcomes_in_the_global_aggregate() -> None:
    tracker = SloTracker(min_samples=1)
    tracker.set_theoretical_tokens_per_s("rs-a", 10.0)
    record(tracker, 0, scope="rs-a")
    record(tracker, 0, scope="rs-a", priority=BATCH)
    tracker.forget("rs-a")
    assert tracker.scopes() == [GLOBAL_SCOPE]
    assert tracker.snapshot("rs-a", 0).interactive.samples == 0
    assert tracker.snapshot(GLOBAL_SCOPE, 0).batch.samples == 1
    record(tracker, 0, scope="rs-a", priority=BATCH)
    assert tracker.snapshot("rs-a", 0).batch.throughput_ratio is None  # its rate went too


def test_the_global_scope_cannot_be_recorded_into() -> None:
    with pytest.raises(InvalidArgument, match="aggregates"):
        record(SloTracker(), 0, scope=GLOBAL_SCOPE)


def test_a_window_keeps_only_the_newest_max_samples() -> None:
    tracker = SloTracker(max_samples=3, min_samples=1)
    for ttft in (900, 800, 1, 2, 3):
        record(tracker, ttft, first_token_ms=ttft)
    slo = tracker.snapshot("rs-a", 1_000).interactive
    assert (slo.samples, slo.first_token_p95_ms) == (3, 3)
    assert tracker.stored() == 6  # rs-a and the global aggregate


def test_the_clock_never_goes_back() -> None:
    tracker = SloTracker(window_ms=100, min_samples=1)
    record(tracker, 500)
    record(tracker, 10)  # read as t=500
    assert tracker.snapshot("rs-a", 599).interactive.samples == 2
    snapshot = tracker.snapshot("rs-a", 0)  # read at the tracker's clock, which reading leaves
    assert (snapshot.at_ms, snapshot.interactive.samples) == (500, 2)
    assert tracker.snapshot("rs-a", 600).interactive.samples == 0


@pytest.mark.parametrize(("ttft", "tokens_out", "decode_ms"), [(-1, 1, 0), (1, -1, 0), (1, 2, -5)])
def test_negative_figures_are_invalid(ttft: int, tokens_out: int, decode_ms: int) -> None:
    tracker = SloTracker()
    with pytest.raises(InvalidArgument, match="negative"):
        record(tracker, 0, first_token_ms=ttft, tokens_out=tokens_out, decode_ms=decode_ms)
    assert tracker.stored() == 0


@pytest.mark.parametrize("rate", [0.0, -1.0, float("inf"), float("nan")])
def test_a_theoretical_rate_must_be_positive_and_finite(rate: float) -> None:
    with pytest.raises(InvalidArgument, match="positive and finite"):
        SloTracker().set_theoretical_tokens_per_s("rs-a", rate)


def test_orch_3041_shares_within_each_latency_objective() -> None:
    """ORCH-3041: the per-objective shares behind the slo_attainment_ratio metric."""
    tracker = SloTracker(min_samples=1)
    for ttft in (100, 800, 900, 901):  # first token within 900 ms: three of these four
        record(tracker, 0, first_token_ms=ttft)  # 64 tokens at ttft + 630: all within 2.5 s
    record(tracker, 0, first_token_ms=100, decode_ms=6_300)  # 64 tokens after 6.4 s
    record(tracker, 0, first_token_ms=None, tokens_out=0, decode_ms=None)  # no figures
    figures = tracker.snapshot("rs-a", 0).interactive
    assert figures.first_token_within == 4 / 5
    assert figures.tokens_64_within == 4 / 5
    empty = tracker.snapshot("rs-b", 0).interactive
    assert empty.first_token_within is None and empty.tokens_64_within is None
    assert tracker.snapshot("rs-a", 0).batch.first_token_within is None
