"""Restart decisions for failed workers: exponential backoff under a circuit breaker.

ORCH-3038: a failed worker is restarted (or re-probed) with backoff. ORCH-3053: restart
storms are bounded. Theory of operation: each consecutive failed attempt doubles the
delay before the next one, from ``base_ms`` up to ``max_ms``; a success starts the backoff
over. Every failure, whether an attempt that failed or a worker that failed after it came
up, is also counted in a sliding window that a success does not clear, so a worker that
flaps (comes up, fails, comes up again) cannot restart without bound. When
``trip_failures`` failures fall within ``window_ms`` the breaker opens and the next
attempt waits ``open_ms`` (much longer than any backoff step). Choose ``trip_failures``
above the number of backoff steps that fit in the window, so a worker that is merely
slow to come back never trips it. The attempt after an open period is a half-open trial:
success closes the breaker and clears the window; failure opens it again at once. Time
is a parameter, so every rule is testable without sleeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from orchestrator_core.errors import InvalidArgument


class BreakerState(Enum):
    """``closed``: backing off normally; ``open``: attempts suspended; ``half_open``:
    the one trial attempt after an open period is under way."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff and breaker limits (milliseconds)."""

    base_ms: int = 500
    max_ms: int = 30_000
    trip_failures: int = 10
    window_ms: int = 60_000
    open_ms: int = 120_000

    def __post_init__(self) -> None:
        if not 0 < self.base_ms <= self.max_ms <= self.open_ms:
            raise InvalidArgument("restart policy needs 0 < base_ms <= max_ms <= open_ms")
        if self.trip_failures < 1 or self.window_ms < 1:
            raise InvalidArgument("restart policy needs trip_failures >= 1 and window_ms >= 1")


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """When to try again: ``retry_at_ms``, and the breaker's state until then."""

    retry_at_ms: int
    delay_ms: int
    state: BreakerState
    consecutive_failures: int


class RestartTracker:
    """The restart history of one worker."""

    __slots__ = ("_consecutive", "_failures", "_policy", "_state")

    def __init__(self, policy: RestartPolicy = RestartPolicy()) -> None:
        self._policy = policy
        self._failures: deque[int] = deque()
        self._consecutive = 0
        self._state = BreakerState.CLOSED

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    def failed(self, now_ms: int) -> RestartDecision:
        """An attempt (or a running worker) failed at ``now_ms``: when to try again."""
        policy = self._policy
        self._consecutive += 1
        self._failures.append(now_ms)
        while self._failures and self._failures[0] <= now_ms - policy.window_ms:
            self._failures.popleft()
        tripped = len(self._failures) >= policy.trip_failures
        if self._state is BreakerState.HALF_OPEN or tripped:
            self._state = BreakerState.OPEN
            delay = policy.open_ms
        else:
            exponent = min(self._consecutive - 1, 32)
            delay = min(policy.max_ms, policy.base_ms << exponent)
        return RestartDecision(now_ms + delay, delay, self._state, self._consecutive)

    def attempting(self) -> BreakerState:
        """An attempt starts now; after an open period it is the half-open trial."""
        if self._state is BreakerState.OPEN:
            self._state = BreakerState.HALF_OPEN
            self._failures.clear()
        return self._state

    def succeeded(self) -> None:
        """An attempt succeeded: the backoff starts over; a half-open trial closes the
        breaker and clears the failure window (otherwise the window keeps counting)."""
        self._consecutive = 0
        if self._state is BreakerState.HALF_OPEN:
            self._failures.clear()
        self._state = BreakerState.CLOSED
