"""Start-time prediction and refusal backoff (ORCH-3029, ORCH-2007).

Model
-----
Each pool keeps an EWMA `T` of its service time, the ms from dispatch to a normal end,
seeded with the pool's configured estimate: T <- T + alpha * (observed - T). Canceled and
failed tasks do not feed it (their duration says nothing about service).

A queued task at position `p` (the number of tasks dispatched before it under the
scheduling rule) in a pool with `S` slots on Ready replicas, `F` of them free, starts:

* at once (0 ms) when p < F — a slot is free for it;
* otherwise after ceil((p - F + 1) / S) x T — the busy slots turn over in waves of S
  tasks, one service time per wave.

The model ignores how far running tasks have progressed, so it over-estimates by at most
one service time for the first wave (on average T/2 when arrivals are random), and it
assumes no later arrival overtakes the task (exact for interactive, approximate for batch
when interactive work keeps arriving).

A refusal's backoff is the predicted time until the queue falls below the limit that
refused it: the start time of the k-th next dispatch, k being the number of dispatches
that bring the depth under the limit, and never less than 1 ms.
"""

from __future__ import annotations

import math


class ServiceTime:
    """EWMA of one pool's service time; `estimate_ms` is it in whole ms (at least 1)."""

    __slots__ = ("_value", "alpha", "estimate_ms")

    def __init__(self, initial_ms: int, alpha: float) -> None:
        self._value = float(initial_ms)
        self.alpha = alpha
        self.estimate_ms = max(1, initial_ms)

    def observe(self, service_ms: int) -> None:
        """Fold one observed service time into the average."""
        self._value += self.alpha * (service_ms - self._value)
        self.estimate_ms = max(1, math.ceil(self._value))

    def export_state(self) -> float:
        """The average (the estimate follows from it)."""
        return self._value

    def restore_state(self, value: float) -> None:
        """Take back what `export_state` gave."""
        self._value = value
        self.estimate_ms = max(1, math.ceil(value))


def predict_start_ms(position: int, slots_total: int, slots_free: int, service_ms: int) -> int:
    """Predicted wait of the task at `position` (see the module docstring)."""
    if position < slots_free:
        return 0
    waves = -(-(position - slots_free + 1) // max(slots_total, 1))
    return waves * service_ms


def backoff_ms(dispatches: int, slots_total: int, slots_free: int, service_ms: int) -> int:
    """Predicted ms until `dispatches` more tasks have left the queue (at least 1)."""
    return max(1, predict_start_ms(dispatches - 1, slots_total, slots_free, service_ms))
