"""Start-time prediction and refusal backoff (ORCH-3029, ORCH-2007).

Theory of operation
-------------------
A pool learns how fast it serves from what it completes (`ServiceModel`), and predicts
when a queued task starts by replaying the queue onto its slots (`Forecast`).

What a pool learns, each figure an EWMA of weight `ewma_alpha` whose first observation
replaces the prior; only tasks that finished normally teach it (how long a canceled or
failed task ran says nothing about service):

* `first_ms` — dispatch to first token (to the end, for a task that sends no tokens);
* `token_ms[c]` — ms per token of one stream while `c` tasks share its replica, `c` being
  the task's mean number of busy slots on its replica over its tokens (tasks sharing an
  engine slow each other down; how much is the engine's business, so it is learned);
* `ratio` — the tokens tasks produced over their token *budgets* (the client's
  `expected_tokens` when given, else `max_tokens`), as decayed sums of both, so a long
  task weighs more than a short one; its prior, "a task uses its whole budget", counts as
  one task;
* `tokens` — tokens per finished task, for the typical task when nothing is queued.

A task's expected tokens are E = ratio x budget, between 1 and its `max_tokens` (none for
a workload that sends no tokens), and its expected service on a replica of `k` slots, all
busy (they are whenever a task waits): first_ms + (E - 1) x token_ms(k). A level not seen
yet is extrapolated from the nearest one seen as if the replica's throughput were fixed,
token_ms(j) x k / j: exact for a compute-bound engine, pessimistic for one that batches
for free, and replaced as soon as the level is seen. Before a pool finished anything,
every task is taken to last `initial_service_ms`.

The forecast: each slot on the pool's usable replicas frees at a_j — 0 if free now, else
the expected remaining time of the task on it ((E - tokens so far) x token_ms(k), plus
what is left of first_ms before its first token). The head of the queue (its first
`eta.HEAD` tasks in serving order) is placed onto the slots one by one, each on the first
slot to free, for its own expected service; the (p + 1)-th dispatch happens when the
slot it takes frees. Past the head every task takes the mean expected service s of the
tasks queued, and slot j frees at a_j, a_j + s, a_j + 2s, ...: when the a_j lie within s
of each other the (q + 1)-th free moment is a[q mod S] + (q div S) x s (a sorted), else
it is found by bisection. Being an order statistic, the prediction never decreases with
the position. Without a usable slot the task at p is taken to start after (p + 1) x s.

A queued task's position (`PoolQueue.position`) assumes nobody arrives; under the burst
rule tasks of the other class that arrive later can still go before it, up to the rule's
bound (`PoolQueue.crowded_position`). While admissions keep coming faster than the pool
dispatches and without a gap of several times their mean (an `ArrivalRun`), the run is
expected to bring as many more of each class as
it has so far — a run seen so far is as likely to be in its first half as in its second —
and the prediction takes that many of the other class ahead, within the bound. Once the
run is over nobody more is expected.

A refusal's backoff is the forecast start of the k-th next dispatch, k being the number of
dispatches that bring the depth under the limit that refused it, and never less than
1 ms: the same forecast as the predicted starts, so a hint never promises room sooner
than the queue's own predictions.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from orchestrator_core.vocabulary import Priority

#: No learned service time is taken to be shorter than this (ms): a pool whose tasks
#: ended at once would otherwise predict that any number of tasks start at once.
MIN_SERVICE_MS = 1.0


class ServiceModel:
    """What one pool has learned of how fast it serves its tasks (see the module text)."""

    __slots__ = ("alpha", "budgeted", "first_ms", "initial_ms", "token_ms", "tokens", "used")

    def __init__(self, initial_ms: int, alpha: float) -> None:
        self.initial_ms = max(1, initial_ms)
        self.alpha = alpha
        self.first_ms: float | None = None
        self.token_ms: dict[int, float] = {}
        self.used: float | None = None
        self.budgeted: float | None = None
        self.tokens: float | None = None

    def _fold(self, average: float | None, observed: float) -> float:
        return observed if average is None else average + self.alpha * (observed - average)

    def observe(self, first_ms: int, tokens: int, rest_ms: int, budget: int, level: int) -> None:
        """One task finished normally: `first_ms` from its dispatch to its first token (to
        its end if it sent none), `tokens` sent, `rest_ms` from its first token to its end,
        its token `budget` (0 for a workload without tokens) and its concurrency `level`."""
        self.first_ms = self._fold(self.first_ms, max(0, first_ms))
        if tokens >= 2:
            per_token = max(0, rest_ms) / (tokens - 1)
            self.token_ms[level] = self._fold(self.token_ms.get(level), per_token)
        if budget > 0:
            # Decayed sums, so a long task weighs more than a short one, as in the work
            # it brings; the prior "a task uses its whole budget" counts as one task.
            keep = 1.0 - self.alpha
            if self.used is None or self.budgeted is None:
                self.used = self.budgeted = float(budget)
            self.used = keep * self.used + tokens
            self.budgeted = keep * self.budgeted + budget
            self.tokens = self._fold(self.tokens, tokens)

    def per_token_ms(self, level: int) -> float:
        """Learned ms per token of one stream at `level` busy slots (0 before any)."""
        known = self.token_ms
        if level in known:
            return known[level]
        if not known:
            return 0.0
        nearest = min(known, key=lambda seen: (abs(seen - level), seen))
        return known[nearest] * level / nearest

    @property
    def ratio(self) -> float:
        """The share of its token budget a task is expected to use."""
        if self.used is None or not self.budgeted:
            return 1.0
        return self.used / self.budgeted

    def expected_tokens(self, budget: float, max_tokens: float) -> float:
        """The tokens a task of this budget is expected to send (0 without a budget)."""
        if budget <= 0:
            return 0.0
        # min(max_tokens, max(1.0, ratio x budget)), without the builtins' call cost.
        tokens = self.ratio * budget
        tokens = tokens if tokens > 1.0 else 1.0
        return tokens if tokens < max_tokens else max_tokens

    def typical_tokens(self) -> float:
        """Tokens of the typical finished task (0 before any, or without tokens)."""
        return 0.0 if self.tokens is None else max(1.0, self.tokens)

    def service_ms(self, tokens: float, level: int) -> float:
        """Expected ms from dispatch to end of a task expected to send `tokens`."""
        if self.first_ms is None:
            return float(self.initial_ms)
        # max(MIN_SERVICE_MS, first_ms + max(0.0, tokens - 1) x per-token ms), inlined.
        rest = (tokens - 1 if tokens - 1 > 0.0 else 0.0) * self.per_token_ms(level)
        service = self.first_ms + rest
        return service if service > MIN_SERVICE_MS else MIN_SERVICE_MS

    def expected_service_ms(self, budget: float, max_tokens: float, level: int) -> float:
        """`service_ms` of a task of this budget and `max_tokens` (`expected_tokens`)."""
        return self.service_ms(self.expected_tokens(budget, max_tokens), level)

    def remaining_ms(
        self,
        tokens: float,
        max_tokens: int,
        level: int,
        sent: int,
        elapsed_ms: int,
        own_token_ms: float | None = None,
    ) -> float:
        """Expected ms left of a running task that has sent `sent` tokens in `elapsed_ms`;
        before the pool learned a per-token time, the task's own pace so far
        (`own_token_ms`) stands in for it."""
        step: float | None = self.per_token_ms(level) if self.token_ms else own_token_ms
        if step is None:
            return max(0.0, (self.first_ms or self.initial_ms) - elapsed_ms)
        if sent == 0:
            first = self.initial_ms if self.first_ms is None else self.first_ms
            return max(0.0, first - elapsed_ms) + max(0.0, tokens - 1) * step
        # A task past its expectation may still send up to max_tokens: one more at least.
        left = max(tokens - sent, 1.0 if sent < max_tokens else 0.0)
        return left * step

    def export_state(self) -> dict[str, Any]:
        """The learned figures as JSON data."""
        return {
            "first_ms": self.first_ms,
            "token_ms": [[level, ms] for level, ms in sorted(self.token_ms.items())],
            "used": self.used,
            "budgeted": self.budgeted,
            "tokens": self.tokens,
        }

    def restore_state(self, data: dict[str, Any]) -> None:
        """Take back what `export_state` gave."""
        self.first_ms = data["first_ms"]
        self.token_ms = {int(level): float(ms) for level, ms in data["token_ms"]}
        self.used = data["used"]
        self.budgeted = data["budgeted"]
        self.tokens = data["tokens"]


#: A run of admissions is over once no admission came for this many times its mean gap.
RUN_GAP_FACTOR = 8

_CLASSES = tuple(Priority)


class ArrivalRun:
    """The run of admissions a pool is in: admissions that each came within one dispatch
    interval of the one before (so the queue grows faster than it drains) and within
    `RUN_GAP_FACTOR` times the run's mean gap (so a burst is over soon after its last
    task, not a dispatch interval later); how many of each class it has brought so far."""

    __slots__ = ("arrived", "counts", "first_ms", "last_ms")

    def __init__(self) -> None:
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self.counts: dict[Priority, int] = dict.fromkeys(_CLASSES, 0)
        #: The sum of `counts`: how many the run has brought so far.
        self.arrived = 0

    def ongoing(self, now_ms: int, interval_ms: float) -> bool:
        """Whether an admission at `now_ms` continues the run."""
        if self.first_ms is None or self.last_ms is None:
            return False
        arrived = self.arrived
        if arrived > 1:
            # interval_ms = min(interval_ms, RUN_GAP_FACTOR x max(1.0, mean gap)), inlined.
            mean_gap = (self.last_ms - self.first_ms) / (arrived - 1)
            gap_limit = RUN_GAP_FACTOR * (mean_gap if mean_gap > 1.0 else 1.0)
            if gap_limit < interval_ms:
                interval_ms = gap_limit
        return now_ms - self.last_ms <= interval_ms

    def expected_more(self, priority: Priority, now_ms: int, interval_ms: float) -> int:
        """How many more of `priority` the run is expected to bring: as many as it has
        brought so far (a run seen so far is as likely to be in its first half as in its
        second), none once it is over."""
        return self.counts[priority] if self.ongoing(now_ms, interval_ms) else 0

    def arrive(self, priority: Priority, now_ms: int, interval_ms: float) -> None:
        """One task of `priority` was admitted at `now_ms`."""
        if not self.ongoing(now_ms, interval_ms):
            self.counts = dict.fromkeys(_CLASSES, 0)
            self.arrived = 0
            self.first_ms = now_ms
        self.counts[priority] += 1
        self.arrived += 1
        self.last_ms = now_ms

    def export_state(self) -> dict[str, Any]:
        """The run's first and last admissions and the counts so far."""
        return {
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "counts": {p.value: n for p, n in self.counts.items()},
        }

    def restore_state(self, data: dict[str, Any]) -> None:
        """Take back what `export_state` gave."""
        self.first_ms = data["first_ms"]
        self.last_ms = data["last_ms"]
        self.counts = {Priority(p): n for p, n in data["counts"].items()}
        self.arrived = sum(self.counts.values())


class Forecast:
    """A pool's slots at one instant: when each frees, the head of the queue placed onto
    them task by task, and the mean service of the tasks after it."""

    __slots__ = ("_free_at", "_head", "_step", "_tidy")

    def __init__(self, free_at: list[float], step_ms: float, head: Iterable[float] = ()) -> None:
        self._step = step_ms if step_ms > MIN_SERVICE_MS else MIN_SERVICE_MS
        self._head: list[float] = []
        if len(free_at) == 1:
            # One slot: each task of the head starts when the one before it ends.
            floor = MIN_SERVICE_MS
            services = [service if service > floor else floor for service in head]
            self._head = list(accumulate(services, initial=free_at[0]))
            free_at[0] = self._head.pop()
        elif free_at:
            heapq.heapify(free_at)
            for service in head:
                start = free_at[0]
                self._head.append(start)
                heapq.heapreplace(free_at, start + max(MIN_SERVICE_MS, service))
        free_at.sort()
        self._free_at = free_at
        self._tidy = not free_at or free_at[-1] - free_at[0] <= self._step

    @property
    def step_ms(self) -> float:
        """The mean expected service of a queued task after the head."""
        return self._step

    def start_ms(self, position: int) -> int:
        """Predicted wait of the task with `position` dispatches before it."""
        free_at, step, head = self._free_at, self._step, self._head
        if not free_at:
            return math.ceil((position + 1) * step)
        if position < len(head):
            return math.ceil(head[position])
        position -= len(head)
        if self._tidy:
            slots = len(free_at)
            return math.ceil(free_at[position % slots] + (position // slots) * step)
        return math.ceil(self._nth_free(position + 1))

    def _nth_free(self, n: int) -> float:
        """The n-th moment a slot frees (n >= 1), over every slot's sequence of frees."""
        free_at, step = self._free_at, self._step

        def frees_by(moment: float) -> int:
            return sum(int((moment - at) // step) + 1 for at in free_at if at <= moment)

        # Narrow (low, high] around the answer to less than one step: then each slot frees
        # at most once inside it, and the answer is among those moments.
        low, high = free_at[0] - 1.0, free_at[-1] + n * step
        while high - low > 0.5:
            middle = (low + high) / 2
            if frees_by(middle) >= n:
                high = middle
            else:
                low = middle
        inside = sorted(at if at > low else at + ((low - at) // step + 1) * step for at in free_at)
        return inside[n - frees_by(low) - 1]

    def backoff_ms(self, dispatches: int) -> int:
        """Predicted ms until `dispatches` more tasks have left the queue (at least 1)."""
        return max(1, self.start_ms(dispatches - 1))
