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

POLICY = RestartPolicy(base_ms=100, max_ms=1_000, trip_failures=4, window_ms=10_000, open_ms=60_000)


def test_delays_double_up_to_the_cap() -> None:
    """ORCH-3038: each consecutive failure doubles the wait, never beyond max_ms."""
    tracker = RestartTracker(RestartPolicy(base_ms=100, max_ms=1_000, trip_failures=100))
    delays = [tracker.failed(now_ms=i * 100_000).delay_ms for i in range(7)]
    assert delays == [100, 200, 400, 800, 1_000, 1_000, 1_000]


def test_flapping_trips_the_breaker_although_each_restart_succeeds() -> None:
    """ORCH-3053: a worker that comes up and fails again restarts fast (the backoff starts
    over), but its failures still count toward the breaker."""
    tracker = RestartTracker(POLICY)
    decisions = []
    for t in range(0, 4_000, 1_000):
        tracker.attempting()
        tracker.succeeded()
        decisions.append(tracker.failed(t))
    assert [d.delay_ms for d in decisions[:3]] == [100, 100, 100]
    assert decisions[-1].state is BreakerState.OPEN


def test_success_resets_the_backoff() -> None:
    """ORCH-3038: a worker that came back starts its next backoff from the base."""
    tracker = RestartTracker(POLICY)
    tracker.failed(0)
    tracker.failed(100)
    tracker.succeeded()
    decision = tracker.failed(200)
    assert decision.delay_ms == 100
    assert decision.consecutive_failures == 1
    assert decision.retry_at_ms == 300


def test_a_storm_of_failures_opens_the_breaker() -> None:
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


def test_half_open_trial_success_closes() -> None:
    """ORCH-3053: the one attempt after an open period closes the breaker on success."""
    tracker = RestartTracker(POLICY)
    for t in range(4):
        decision = tracker.failed(t)
    assert decision.delay_ms == 60_000
    assert tracker.attempting() is BreakerState.HALF_OPEN
    tracker.succeeded()
    assert tracker.state is BreakerState.CLOSED
    assert tracker.failed(70_000).delay_ms == 100


def test_half_open_trial_failure_reopens_at_once() -> None:
    """ORCH-3053: a failed trial opens the breaker again without a new storm."""
    tracker = RestartTracker(POLICY)
    for t in range(4):
        tracker.failed(t)
    tracker.attempting()
    decision = tracker.failed(61_000)
    assert decision.state is BreakerState.OPEN
    assert decision.delay_ms == 60_000


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
        {"max_ms": 200_000},
        {"trip_failures": 0},
        {"window_ms": 0},
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
    """ORCH-3053: however failures arrive, within any window at most trip_failures
    attempts are scheduled before the breaker opens (only the trial after an open period
    starts the count over), and every delay is within bounds."""
    tracker = RestartTracker(POLICY)
    now = 0
    scheduled: list[int] = []
    for step, gap in enumerate(gaps):
        now += gap
        if tracker.attempting() is BreakerState.HALF_OPEN:
            scheduled.clear()  # the trial after an open period starts a fresh window
        if step in successes:
            tracker.succeeded()
            continue
        decision = tracker.failed(now)
        assert POLICY.base_ms <= decision.delay_ms <= POLICY.open_ms
        assert decision.retry_at_ms == now + decision.delay_ms
        if decision.state is BreakerState.CLOSED:
            assert decision.delay_ms <= POLICY.max_ms
            scheduled.append(now)
            recent = [t for t in scheduled if t > now - POLICY.window_ms]
            assert len(recent) < POLICY.trip_failures
        else:
            assert decision.delay_ms == POLICY.open_ms
            scheduled.clear()
