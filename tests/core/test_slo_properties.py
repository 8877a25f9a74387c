"""Properties of SLO measurement against a naive reference (ORCH-3041).

The reference keeps every outcome ever recorded, in plain lists, and computes each figure
from scratch by filtering the window and sorting: p95 by nearest rank with exact fractions,
the 64-token figure with exact fractions, the error rate, the time-weighted throughput
ratio, attainment and the met verdict. Hypothesis checks that the tracker agrees with it on
random workloads, that nothing older than the window counts, that a window never holds
more than its cap, and (as a RuleBasedStateMachine) over random sequences of records, clock
advances, stale clocks, rate changes, forgotten scopes and snapshots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from orchestrator_core import (
    GLOBAL_SCOPE,
    Priority,
    PriorityObjectives,
    PrioritySlo,
    SloObjectives,
    SloTracker,
)

INTER, BATCH = Priority.INTERACTIVE, Priority.BATCH
SCOPES = ["rs-a", "rs-b"]
OBJECTIVES = SloObjectives(
    interactive=PriorityObjectives(
        first_token_p95_ms=60, tokens_64_p95_ms=900, max_error_rate=0.25
    ),
    batch=PriorityObjectives(max_error_rate=0.5, min_throughput_ratio=0.8),
)


@dataclass(frozen=True)
class Record:
    at_ms: int
    scope: str
    priority: Priority
    first_token_ms: int | None
    tokens_out: int
    decode_ms: int | None
    ok: bool

    def tokens_64_ms(self) -> int | None:
        if self.first_token_ms is None or self.decode_ms is None or self.tokens_out < 2:
            return None
        return self.first_token_ms + math.ceil(Fraction(self.decode_ms * 63, self.tokens_out - 1))

    def timed(self) -> bool:
        return self.decode_ms is not None and self.tokens_out >= 2


def nearest_rank_p95(values: list[int]) -> int | None:
    if not values:
        return None
    return sorted(values)[math.ceil(Fraction(95, 100) * len(values)) - 1]


def reference(
    records: list[Record],
    priority: Priority,
    now_ms: int,
    window_ms: int,
    cap: int,
    min_samples: int,
    rate: float | None,
) -> PrioritySlo:
    """The figures of one priority computed from scratch (`records` of one scope)."""
    window = [r for r in records if r.priority is priority and r.at_ms > now_ms - window_ms]
    window = window[-cap:]
    objectives = OBJECTIVES.of(priority)
    n = len(window)
    first = [r.first_token_ms for r in window if r.first_token_ms is not None]
    t64 = [v for v in (r.tokens_64_ms() for r in window) if v is not None]
    timed = [r for r in window if r.timed()]
    decode_total = sum(r.decode_ms or 0 for r in timed)
    gap_total = sum(r.tokens_out - 1 for r in timed)
    throughput = None
    if rate is not None and decode_total > 0:
        throughput = gap_total * 1000 / decode_total / rate
    errors = sum(1 for r in window if not r.ok)
    error_rate = errors / n if n else None

    def attained(r: Record) -> bool:
        if not r.ok:
            return False
        ttft_limit, t64_limit = objectives.first_token_p95_ms, objectives.tokens_64_p95_ms
        ttft, t64_ms = r.first_token_ms, r.tokens_64_ms()
        if ttft_limit is not None and ttft is not None and ttft > ttft_limit:
            return False
        if t64_limit is not None and t64_ms is not None and t64_ms > t64_limit:
            return False
        floor = objectives.min_throughput_ratio
        if floor is not None and rate is not None and r.timed() and r.decode_ms:
            return (r.tokens_out - 1) * 1000 / r.decode_ms / rate >= floor
        return True

    first_p95, t64_p95 = nearest_rank_p95(first), nearest_rank_p95(t64)
    verdicts: list[bool | None] = []
    if objectives.first_token_p95_ms is not None:
        enough = len(first) >= min_samples
        verdicts.append(
            first_p95 <= objectives.first_token_p95_ms if enough and first_p95 is not None else None
        )
    if objectives.tokens_64_p95_ms is not None:
        enough = len(t64) >= min_samples
        verdicts.append(
            t64_p95 <= objectives.tokens_64_p95_ms if enough and t64_p95 is not None else None
        )
    if objectives.max_error_rate is not None:
        enough = n >= min_samples
        verdicts.append(errors / n <= objectives.max_error_rate if enough else None)
    if objectives.min_throughput_ratio is not None:
        enough = len(timed) >= min_samples and throughput is not None
        verdicts.append(
            throughput >= objectives.min_throughput_ratio
            if enough and throughput is not None
            else None
        )
    met: bool | None = None
    if n >= min_samples:
        if any(v is False for v in verdicts):
            met = False
        elif all(v is True for v in verdicts):
            met = True
    return PrioritySlo(
        priority,
        n,
        first_p95,
        t64_p95,
        error_rate,
        throughput,
        sum(attained(r) for r in window) / n if n else None,
        met,
        share_within(first, objectives.first_token_p95_ms),
        share_within(t64, objectives.tokens_64_p95_ms),
    )


def share_within(values: list[int], limit: int | None) -> float | None:
    if limit is None or not values:
        return None
    return len([v for v in values if v <= limit]) / len(values)


records_strategy = st.lists(
    st.builds(
        Record,
        at_ms=st.integers(0, 2_000),
        scope=st.sampled_from(SCOPES),
        priority=st.sampled_from([INTER, BATCH]),
        first_token_ms=st.none() | st.integers(0, 120),
        tokens_out=st.integers(0, 80),
        decode_ms=st.none() | st.integers(0, 2_000),
        ok=st.booleans(),
    ),
    max_size=60,
).map(lambda rs: sorted(rs, key=lambda r: r.at_ms))


def feed(tracker: SloTracker, records: list[Record]) -> None:
    for r in records:
        tracker.record_outcome(
            r.scope,
            r.priority,
            r.at_ms,
            first_token_ms=r.first_token_ms,
            tokens_out=r.tokens_out,
            decode_ms=r.decode_ms,
            ok=r.ok,
        )


@given(
    records_strategy,
    st.integers(1, 1_500),
    st.integers(1, 80),
    st.integers(1, 8),
    st.integers(0, 1_000),
    st.none() | st.floats(1.0, 500.0),
)
def test_orch_3041_every_figure_matches_the_reference(
    records: list[Record],
    window_ms: int,
    cap: int,
    min_samples: int,
    later_ms: int,
    rate: float | None,
) -> None:
    """p95s, error rate, throughput, attainment and met equal a from-scratch computation."""
    tracker = SloTracker(window_ms, OBJECTIVES, max_samples=cap, min_samples=min_samples)
    for scope in SCOPES:
        tracker.set_theoretical_tokens_per_s(scope, rate)
    feed(tracker, records)
    now = (records[-1].at_ms if records else 0) + later_ms
    for scope in [*SCOPES, GLOBAL_SCOPE]:
        mine = [r for r in records if scope in (r.scope, GLOBAL_SCOPE)]
        snapshot = tracker.snapshot(scope, now)
        scope_rate = None if scope == GLOBAL_SCOPE else rate
        for priority in Priority:
            expected = reference(mine, priority, now, window_ms, cap, min_samples, scope_rate)
            assert snapshot.of(priority) == expected


@given(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=200),
    st.integers(1, 5_000),
    st.integers(0, 10_000),
)
def test_orch_3041_p95_is_the_nearest_rank_of_the_in_window_values(
    ttfts: list[int], window_ms: int, later_ms: int
) -> None:
    """One outcome per ms: the p95 is the sorted in-window values at rank ceil(0.95 n)."""
    tracker = SloTracker(window_ms, min_samples=1)
    for at, ttft in enumerate(ttfts):
        tracker.record_outcome(
            "rs-a", INTER, at, first_token_ms=ttft, tokens_out=1, decode_ms=0, ok=True
        )
    now = len(ttfts) - 1 + later_ms
    inside = [ttft for at, ttft in enumerate(ttfts) if at > now - window_ms]
    slo = tracker.snapshot("rs-a", now).interactive
    assert slo.samples == len(inside)
    assert slo.first_token_p95_ms == nearest_rank_p95(inside)


@given(st.lists(st.integers(0, 5_000), min_size=1, max_size=100), st.integers(1, 2_000))
def test_orch_3041_nothing_older_than_the_window_counts(times: list[int], window_ms: int) -> None:
    """An outcome recorded at t counts at now iff now - window_ms < t (every one fails)."""
    times.sort()
    tracker = SloTracker(window_ms, min_samples=1)
    for at in times:
        tracker.record_outcome(
            "rs-a", BATCH, at, first_token_ms=None, tokens_out=0, decode_ms=None, ok=False
        )
    for now in range(times[-1], times[-1] + window_ms + 1, max(1, window_ms // 7)):
        slo = tracker.snapshot("rs-a", now).batch
        assert slo.samples == sum(1 for at in times if at > now - window_ms)
        assert slo.error_rate == (1.0 if slo.samples else None)
    assert tracker.snapshot("rs-a", times[-1] + window_ms).batch.samples == 0


@given(
    st.lists(st.tuples(st.sampled_from(SCOPES), st.sampled_from([INTER, BATCH])), max_size=300),
    st.integers(1, 40),
)
def test_orch_3041_memory_stays_within_the_cap(keys: list[tuple[str, Priority]], cap: int) -> None:
    """Each window (scope x priority, the global one included) holds at most `cap` outcomes."""
    tracker = SloTracker(max_samples=cap, min_samples=1)
    for scope, priority in keys:
        tracker.record_outcome(
            scope, priority, 0, first_token_ms=1, tokens_out=1, decode_ms=0, ok=True
        )
        assert tracker.stored() <= cap * 2 * (len(SCOPES) + 1)
    for scope in [*SCOPES, GLOBAL_SCOPE]:
        snapshot = tracker.snapshot(scope, 0)
        for priority in Priority:
            held = sum(1 for s, p in keys if p is priority and scope in (s, GLOBAL_SCOPE))
            assert snapshot.of(priority).samples == min(held, cap)


class SloModel(RuleBasedStateMachine):
    """The tracker against the reference over random steps; the reference never forgets."""

    WINDOW_MS = 100
    CAP = 6
    MIN_SAMPLES = 3

    def __init__(self) -> None:
        super().__init__()
        self.tracker = SloTracker(
            self.WINDOW_MS, OBJECTIVES, max_samples=self.CAP, min_samples=self.MIN_SAMPLES
        )
        self.now = 0
        self.clock: int | None = None  # the latest time the tracker was given
        self.scoped: dict[str, list[Record]] = {scope: [] for scope in SCOPES}
        self.everything: list[Record] = []
        self.rates: dict[str, float] = {}

    @rule(
        scope=st.sampled_from(SCOPES),
        priority=st.sampled_from([INTER, BATCH]),
        first_token_ms=st.none() | st.integers(0, 100),
        tokens_out=st.integers(0, 6),
        decode_ms=st.none() | st.integers(0, 400),
        ok=st.booleans(),
        stale_by=st.integers(0, 1) | st.integers(0, 300),
    )
    def record(
        self,
        scope: str,
        priority: Priority,
        first_token_ms: int | None,
        tokens_out: int,
        decode_ms: int | None,
        ok: bool,
        stale_by: int,
    ) -> None:
        """Record, sometimes with a clock reading older than the latest (read as the latest)."""
        given_ms = self.now - stale_by
        self.clock = given_ms if self.clock is None else max(self.clock, given_ms)
        self.tracker.record_outcome(
            scope,
            priority,
            given_ms,
            first_token_ms=first_token_ms,
            tokens_out=tokens_out,
            decode_ms=decode_ms,
            ok=ok,
        )
        entry = Record(self.clock, scope, priority, first_token_ms, tokens_out, decode_ms, ok)
        self.scoped[scope].append(entry)
        self.everything.append(entry)

    @rule(ms=st.integers(0, 60))
    def advance(self, ms: int) -> None:
        self.now += ms

    @rule(scope=st.sampled_from([*SCOPES, GLOBAL_SCOPE]), rate=st.none() | st.floats(1.0, 50.0))
    def set_rate(self, scope: str, rate: float | None) -> None:
        self.tracker.set_theoretical_tokens_per_s(scope, rate)
        if rate is None:
            self.rates.pop(scope, None)
        else:
            self.rates[scope] = rate

    @rule(scope=st.sampled_from(SCOPES))
    def forget(self, scope: str) -> None:
        self.tracker.forget(scope)
        self.scoped[scope] = []
        self.rates.pop(scope, None)

    @rule(scope=st.sampled_from([*SCOPES, GLOBAL_SCOPE]))
    def snapshot(self, scope: str) -> None:
        snapshot = self.tracker.snapshot(scope, self.now)
        # A reading never moves the tracker's clock; it reads at the later of the two.
        at = self.now if self.clock is None else max(self.clock, self.now)
        records = self.everything if scope == GLOBAL_SCOPE else self.scoped[scope]
        assert (snapshot.scope, snapshot.at_ms) == (scope, at)
        for priority in Priority:
            expected = reference(
                records,
                priority,
                at,
                self.WINDOW_MS,
                self.CAP,
                self.MIN_SAMPLES,
                self.rates.get(scope),
            )
            assert snapshot.of(priority) == expected

    @invariant()
    def memory_is_bounded(self) -> None:
        assert self.tracker.stored() <= self.CAP * 2 * (len(SCOPES) + 1)


TestSloModel = SloModel.TestCase
TestSloModel.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
