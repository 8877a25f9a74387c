"""Restart decisions for failed workers: exponential backoff under a circuit breaker.

ORCH-3038: a failed worker is restarted (or re-probed) with backoff. ORCH-3053: restart
storms are bounded. Theory of operation: each consecutive failure doubles the delay before
the next attempt, from ``base_ms`` up to ``max_ms``. The backoff starts over only once the
worker has stayed Ready for ``stable_ms``, so a worker that flaps (comes up, fails, comes
up again) keeps backing off. Every failure, an attempt that failed or a worker that failed
after it came up, is also counted in a sliding window of ``window_ms``; when
``trip_failures`` of them fall within it the breaker opens and the next attempt waits
``open_ms``. The attempt after an open period is a half-open trial: success closes the
breaker and clears the count; failure opens it again at once. ``reset`` closes it early
(an operator's reload). A policy without ``trip_failures`` never opens: workers the
daemon does not run are only re-probed, so there is no restart storm to bound. Time is a
parameter, so every rule is testable without sleeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from orchestrator_core.errors import InvalidArgument


class BreakerState(StrEnum):
    """``closed``: backing off normally; ``open``: attempts suspended; ``half_open``:
    the one trial attempt after an open period is under way."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Backoff and breaker limits (milliseconds); ``trip_failures`` None: no breaker."""

    base_ms: int = 1_000
    max_ms: int = 60_000
    stable_ms: int = 300_000
    trip_failures: int | None = 5
    window_ms: int = 600_000
    open_ms: int = 600_000

    def __post_init__(self) -> None:
        if not 0 < self.base_ms <= self.max_ms <= self.open_ms:
            raise InvalidArgument("restart policy needs 0 < base_ms <= max_ms <= open_ms")
        if self.trip_failures is not None and self.trip_failures < 1:
            raise InvalidArgument("restart policy needs trip_failures >= 1 (or none)")
        if self.window_ms < 1 or self.stable_ms < 0:
            raise InvalidArgument("restart policy needs window_ms >= 1 and stable_ms >= 0")

    def without_breaker(self) -> RestartPolicy:
        """The same backoff with no circuit breaker (for engines the daemon does not run)."""
        return replace(self, trip_failures=None)


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """When to try again: ``retry_at_ms``, and the breaker's state until then."""

    retry_at_ms: int
    delay_ms: int
    state: BreakerState
    consecutive_failures: int


class RestartTracker:
    """The restart history of one worker."""

    __slots__ = ("_consecutive", "_failures", "_policy", "_ready_since", "_state")

    def __init__(self, policy: RestartPolicy) -> None:
        self._policy = policy
        self._failures: deque[int] = deque()
        self._consecutive = 0
        self._ready_since: int | None = None
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
        if self._ready_since is not None and now_ms - self._ready_since >= policy.stable_ms:
            self._consecutive = 0
        self._ready_since = None
        self._consecutive += 1
        self._failures.append(now_ms)
        while self._failures and self._failures[0] <= now_ms - policy.window_ms:
            self._failures.popleft()
        trip = policy.trip_failures
        tripped = trip is not None and len(self._failures) >= trip
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
        return self._state

    def succeeded(self, now_ms: int) -> None:
        """The worker is Ready since ``now_ms``; a half-open trial closes the breaker."""
        self._ready_since = now_ms
        if self._state is BreakerState.HALF_OPEN:
            self.reset()
            self._ready_since = now_ms

    def export_state(self) -> dict[str, Any]:
        """The failures in the window, the consecutive count, the breaker, Ready since."""
        return {
            "failures": list(self._failures),
            "consecutive": self._consecutive,
            "ready_since": self._ready_since,
            "state": self._state.value,
        }

    def restore_state(self, data: dict[str, Any]) -> None:
        """Take back what `export_state` gave."""
        self._failures = deque(data["failures"])
        self._consecutive = data["consecutive"]
        self._ready_since = data["ready_since"]
        self._state = BreakerState(data["state"])

    def reset(self) -> None:
        """Forget the history: breaker closed, backoff from the start (a reload)."""
        self._consecutive = 0
        self._failures.clear()
        self._ready_since = None
        self._state = BreakerState.CLOSED
