"""Restart backoff and the circuit breaker (ORCH-3038, ORCH-3053)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_core import (
    BreakerState,
    InvalidArgument,
    RestartPolicy,
    RestartTracker,
)

POLICY = RestartPolicy(
    base_ms=100, max_ms=1_000, stable_ms=5_000, trip_failures=4, window_ms=10_000, open_ms=60_000
)


def test_orch_3038_defaults_follow_the_spec() -> None:
    """ORCH-3038, ORCH-3053: 1 s doubling to 60 s, reset after 5 min Ready; 5 failures in
    10 min open the breaker for 10 min."""
    policy = RestartPolicy()
    assert (policy.base_ms, policy.max_ms, policy.stable_ms) == (1_000, 60_000, 300_000)
    assert (policy.trip_failures, policy.window_ms, policy.open_ms) == (5, 600_000, 600_000)


def test_orch_3038_delays_double_up_to_the_cap() -> None:
    """ORCH-3038: each consecutive failure doubles the wait, never beyond max_ms."""
    tracker = RestartTracker(RestartPolicy(base_ms=100, max_ms=1_000, trip_failures=None))
    delays = [tracker.failed(now_ms=i * 100_000).delay_ms for i in range(7)]
    assert delays == [100, 200, 400, 800, 1_000, 1_000, 1_000]


def test_orch_3038_the_backoff_starts_over_after_a_stable_run() -> None:
    """ORCH-3038: a worker that stayed Ready for stable_ms restarts from the base delay."""
    tracker = RestartTracker(POLICY)
    tracker.failed(0)
    tracker.failed(100)
    tracker.succeeded(1_000)
    decision = tracker.failed(1_000 + POLICY.stable_ms)
    assert (decision.delay_ms, decision.consecutive_failures) == (100, 1)


def test_orch_3053_a_flapping_worker_keeps_backing_off_and_trips_the_breaker() -> None:
    """ORCH-3053: coming up for less than stable_ms does not reset the backoff, and every
    failure counts toward the breaker."""
    tracker = RestartTracker(POLICY)
    decisions = []
    for t in range(0, 4_000, 1_000):
        tracker.attempting()
        tracker.succeeded(t)
        decisions.append(tracker.failed(t + 500))
    assert [d.delay_ms for d in decisions[:3]] == [100, 200, 400]
    assert decisions[-1].state is BreakerState.OPEN
    assert decisions[-1].delay_ms == POLICY.open_ms


def test_orch_3053_a_storm_of_failures_opens_the_breaker() -> None:
    """ORCH-3053: trip_failures failures within the window suspend attempts for open_ms."""
    tracker = RestartTracker(POLICY)
    states = [tracker.failed(now_ms=t).state for t in (0, 1_000, 2_000, 3_000)]
    assert states == [BreakerState.CLOSED] * 3 + [BreakerState.OPEN]
    assert tracker.state is BreakerState.OPEN


def test_failures_spread_wider_than_the_window_do_not_trip() -> None:
    """ORCH-3053: only failures inside the sliding window count toward the breaker."""
    tracker = RestartTracker(POLICY)
    decisions = [tracker.failed(now_ms=t) for t in range(0, 50_000, 10_000)]
    assert all(d.state is BreakerState.CLOSED for d in decisions)
    assert decisions[-1].delay_ms == 1_000


def test_without_a_breaker_failures_only_back_off() -> None:
    """ORCH-3038: a worker the daemon does not run is re-probed on the backoff forever."""
    tracker = RestartTracker(RestartPolicy(trip_failures=None))
    decisions = [tracker.failed(now_ms=t) for t in range(100)]
    assert {d.state for d in decisions} == {BreakerState.CLOSED}
    assert decisions[-1].delay_ms == 60_000


def test_half_open_trial_success_closes() -> None:
    """ORCH-3053: the one attempt after an open period closes the breaker on success."""
    tracker = RestartTracker(POLICY)
    for t in range(4):
        decision = tracker.failed(t)
    assert decision.delay_ms == 60_000
    assert tracker.attempting() is BreakerState.HALF_OPEN
    tracker.succeeded(61_000)
    assert tracker.state is BreakerState.CLOSED
    assert tracker.failed(62_000).delay_ms == 100


def test_half_open_trial_failure_reopens_at_once() -> None:
    """ORCH-3053: a failed trial opens the breaker again without a new storm."""
    tracker = RestartTracker(POLICY)
    for t in range(4):
        tracker.failed(t)
    tracker.attempting()
    decision = tracker.failed(61_000)
    assert decision.state is BreakerState.OPEN
    assert decision.delay_ms == 60_000


def test_orch_3053_reset_closes_the_breaker_early() -> None:
    """ORCH-3053: a reload closes an open breaker and starts the backoff over."""
    tracker = RestartTracker(POLICY)
    for t in range(4):
        tracker.failed(t)
    tracker.reset()
    assert tracker.state is BreakerState.CLOSED
    decision = tracker.failed(10)
    assert (decision.state, decision.delay_ms) == (BreakerState.CLOSED, 100)


def test_attempting_while_closed_changes_nothing() -> None:
    tracker = RestartTracker(POLICY)
    tracker.failed(0)
    assert tracker.attempting() is BreakerState.CLOSED
    assert tracker.consecutive_failures == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base_ms": 0},
        {"base_ms": 10, "max_ms": 5},
        {"max_ms": 2_000_000},
        {"trip_failures": 0},
        {"window_ms": 0},
        {"stable_ms": -1},
    ],
)
def test_inconsistent_policies_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidArgument):
        RestartPolicy(**kwargs)


@given(
    gaps=st.lists(st.integers(min_value=0, max_value=30_000), min_size=1, max_size=60),
    successes=st.sets(st.integers(min_value=0, max_value=59)),
)
def test_attempts_are_bounded_by_the_breaker(gaps: list[int], successes: set[int]) -> None:
    """ORCH-3053: however failures and recoveries arrive, fewer than trip_failures
    failures are followed by a normal backoff within any window (only the trial after an
    open period starts the count over), and every delay is within bounds."""
    tracker = RestartTracker(POLICY)
    now = 0
    failures: list[int] = []
    for step, gap in enumerate(gaps):
        now += gap
        trial = tracker.attempting() is BreakerState.HALF_OPEN
        if step in successes:
            tracker.succeeded(now)
            if trial:
                failures.clear()
            continue
        decision = tracker.failed(now)
        failures.append(now)
        assert POLICY.base_ms <= decision.delay_ms <= POLICY.open_ms
        assert decision.retry_at_ms == now + decision.delay_ms
        recent = [t for t in failures if t > now - POLICY.window_ms]
        if decision.state is BreakerState.CLOSED:
            assert decision.delay_ms <= POLICY.max_ms
            assert len(recent) < (POLICY.trip_failures or 0)
        else:
            assert decision.delay_ms == POLICY.open_ms
            assert trial or len(recent) >= (POLICY.trip_failures or 0)
            failures.clear()
