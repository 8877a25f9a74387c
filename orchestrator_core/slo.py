"""Per-priority service-level objectives, measured continuously (ORCH-3041).

The server reports each task's outcome once it is terminal; `SloTracker` keeps the outcomes
of the last `window_ms` per (scope, priority) and answers `snapshot(scope, now_ms)` with
the figures of that window and whether they meet the priority's objectives. A scope is any
string the caller chooses (the daemon uses pool ids and `set:<replica set id>`); every
outcome also counts in the aggregate scope `GLOBAL_SCOPE`, which cannot be recorded into
directly.

Definitions
-----------
* Time to first token (TTFT): ms to the first token, as the caller gives it (the daemon
  measures from dispatch, ORCH-3041). A task that produced no token has none.
* Time for 64 tokens: TTFT plus the task's decode time scaled to 63 more tokens.
  `decode_ms` is the time from the first token to the last one, so it spans
  `tokens_out - 1` inter-token gaps; the figure is ``ttft + ceil(decode_ms * 63 /
  (tokens_out - 1))``. It is exact when the gaps are even, and an extrapolation at the
  task's own mean token rate otherwise (shorter tasks say less about the 64th token). A
  task with fewer than two tokens, or without TTFT or decode time, has none: one token
  shows no decode rate, and no figure is invented.
* Error: a failure the caller attributes to the service (`ok=False`). The error rate is
  failures / tasks in the window.
* Throughput ratio: the achieved decode rate of the window, sum(gaps) x 1000 /
  sum(decode_ms), divided by the scope's theoretical tokens/s (the decode rate one task
  should reach there, set with `set_theoretical_tokens_per_s`). It is a time-weighted rate,
  so long tasks weigh more than short ones, and it does not depend on how much work
  arrived. Without a theoretical rate, or without timed decode in the window, it is None.
* p95: nearest rank over the window's values of a figure: the value at 1-based rank
  ceil(0.95 x n) of the sorted values (always one of the observed values).
* Attainment ratio: the fraction of the window's tasks that individually met their
  objectives: the task succeeded, its TTFT and 64-token time (where it has them) are within
  the p95 limits, and its own decode rate (where timed, with a theoretical rate known) is
  at least the throughput floor. A failed task never attains.
* `met`: None while the window holds fewer than `min_samples` tasks (default 20: below it
  the nearest-rank p95 is the maximum). Otherwise each objective of the priority is judged
  on its own figure, and an objective whose figure has fewer than `min_samples` values (or
  none, such as a throughput ratio without a theoretical rate) cannot be judged. `met` is
  False when any judged objective is violated, None when none is but one cannot be judged,
  and True when every objective is judged and met.

Memory and time
---------------
A window keeps at most `max_samples` outcomes (the newest; older ones are dropped when a
new one arrives) and drops outcomes once they are `window_ms` old: an outcome recorded at t
counts at `now_ms` iff now_ms - window_ms < t. Recording is amortised O(1); a snapshot
sorts the window's values. The tracker's clock never goes back: an earlier `now_ms` than
the latest seen reads as the latest.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from orchestrator_core.errors import ConfigError, InvalidArgument
from orchestrator_core.vocabulary import Priority

GLOBAL_SCOPE = "*"
REFERENCE_TOKENS = 64
P95 = 95
DEFAULT_WINDOW_MS = 300_000
DEFAULT_MAX_SAMPLES = 10_000
DEFAULT_MIN_SAMPLES = 20
_BEFORE_ALL = -(1 << 62)


@dataclass(frozen=True, slots=True)
class PriorityObjectives:
    """The objectives of one priority; None means no objective on that figure."""

    first_token_p95_ms: int | None = None
    tokens_64_p95_ms: int | None = None
    max_error_rate: float | None = None
    min_throughput_ratio: float | None = None

    def validate(self, where: str) -> None:
        """Raise ConfigError naming the first objective that cannot be used."""
        for name, limit_ms in (
            ("first_token_p95_ms", self.first_token_p95_ms),
            ("tokens_64_p95_ms", self.tokens_64_p95_ms),
        ):
            if limit_ms is not None and limit_ms < 1:
                raise ConfigError(f"{where}: {name} must be at least 1")
        if self.max_error_rate is not None and not 0.0 <= self.max_error_rate <= 1.0:
            raise ConfigError(f"{where}: max_error_rate must lie in [0, 1]")
        ratio = self.min_throughput_ratio
        if ratio is not None and not (ratio > 0.0 and math.isfinite(ratio)):
            raise ConfigError(f"{where}: min_throughput_ratio must be positive")


INTERACTIVE_OBJECTIVES = PriorityObjectives(
    first_token_p95_ms=900, tokens_64_p95_ms=2_500, max_error_rate=0.005
)
BATCH_OBJECTIVES = PriorityObjectives(max_error_rate=0.01, min_throughput_ratio=0.8)


@dataclass(frozen=True, slots=True)
class SloObjectives:
    """Objectives per priority; the defaults are those of ORCH-3041."""

    interactive: PriorityObjectives = INTERACTIVE_OBJECTIVES
    batch: PriorityObjectives = BATCH_OBJECTIVES

    def of(self, priority: Priority) -> PriorityObjectives:
        """The objectives of one priority class."""
        return self.interactive if priority is Priority.INTERACTIVE else self.batch

    def validate(self) -> None:
        """Raise ConfigError naming the first objective that cannot be used."""
        for priority in Priority:
            self.of(priority).validate(f"slo.{priority}")


DEFAULT_OBJECTIVES = SloObjectives()


@dataclass(frozen=True, slots=True)
class PrioritySlo:
    """One priority's figures over a scope's window (see the module docstring).

    Every figure is None when the window holds nothing to compute it from.
    `first_token_within` and `tokens_64_within` are the shares of the tasks with that
    figure whose own value is within the objective's limit (None without a limit).
    """

    priority: Priority
    samples: int
    first_token_p95_ms: int | None
    tokens_64_p95_ms: int | None
    error_rate: float | None
    throughput_ratio: float | None
    attainment_ratio: float | None
    met: bool | None
    first_token_within: float | None = None
    tokens_64_within: float | None = None


@dataclass(frozen=True, slots=True)
class SloSnapshot:
    """A scope's SLO figures per priority at `at_ms`, over the `window_ms` before it."""

    scope: str
    at_ms: int
    window_ms: int
    interactive: PrioritySlo
    batch: PrioritySlo

    def of(self, priority: Priority) -> PrioritySlo:
        """The figures of one priority class."""
        return self.interactive if priority is Priority.INTERACTIVE else self.batch


class _Outcome(NamedTuple):
    """One task's outcome as the window keeps it; `gaps` are the timed inter-token gaps."""

    at_ms: int
    ok: bool
    first_token_ms: int | None
    tokens_64_ms: int | None
    gaps: int
    decode_ms: int


class SloTracker:
    """Sliding windows of task outcomes per (scope, priority), judged against objectives."""

    __slots__ = (
        "_now_ms",
        "_rates",
        "_windows",
        "max_samples",
        "min_samples",
        "objectives",
        "window_ms",
    )

    def __init__(
        self,
        window_ms: int = DEFAULT_WINDOW_MS,
        objectives: SloObjectives = DEFAULT_OBJECTIVES,
        *,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        min_samples: int = DEFAULT_MIN_SAMPLES,
    ) -> None:
        for name, value in (
            ("window_ms", window_ms),
            ("max_samples", max_samples),
            ("min_samples", min_samples),
        ):
            if value < 1:
                raise ConfigError(f"slo: {name} must be at least 1")
        objectives.validate()
        self.window_ms = window_ms
        self.objectives = objectives
        self.max_samples = max_samples
        self.min_samples = min_samples
        self._now_ms = _BEFORE_ALL
        self._windows: dict[tuple[str, Priority], deque[_Outcome]] = {}
        self._rates: dict[str, float] = {}

    def record_outcome(
        self,
        scopes: str | tuple[str, ...],
        priority: Priority,
        now_ms: int,
        *,
        first_token_ms: int | None,
        tokens_out: int,
        decode_ms: int | None,
        ok: bool,
    ) -> None:
        """Count one terminal task of `priority` in each of `scopes` (a task counts in its
        pool and in its replica set) and, once, in `GLOBAL_SCOPE`.

        `first_token_ms` is admission to first token, `decode_ms` first to last token
        (None when not observed); `ok` is False for a failure attributable to the service.
        """
        if isinstance(scopes, str):
            scopes = (scopes,)
        if GLOBAL_SCOPE in scopes:
            raise InvalidArgument(f"scope {GLOBAL_SCOPE!r} aggregates the others")
        if tokens_out < 0 or (first_token_ms or 0) < 0 or (decode_ms or 0) < 0:
            raise InvalidArgument("tokens_out, first_token_ms and decode_ms must not be negative")
        now = self._advance(now_ms)
        gaps, tokens_64_ms = 0, None
        if decode_ms is not None and tokens_out >= 2:
            gaps = tokens_out - 1
            if first_token_ms is not None:
                tokens_64_ms = first_token_ms - (-decode_ms * (REFERENCE_TOKENS - 1) // gaps)
        outcome = _Outcome(now, ok, first_token_ms, tokens_64_ms, gaps, decode_ms or 0)
        windows = self._windows
        cutoff = now - self.window_ms
        for scope in (*scopes, GLOBAL_SCOPE):
            key = (scope, priority)
            window = windows.get(key)
            if window is None:
                window = windows[key] = deque(maxlen=self.max_samples)
            window.append(outcome)
            if window[0].at_ms <= cutoff:
                self._expire(window, now)

    def set_theoretical_tokens_per_s(self, scope: str, rate: float | None) -> None:
        """Set (or clear, with None) the decode rate one task should reach in `scope`."""
        if rate is None:
            self._rates.pop(scope, None)
            return
        if not (rate > 0.0 and math.isfinite(rate)):
            raise InvalidArgument("a theoretical tokens/s rate must be positive and finite")
        self._rates[scope] = rate

    def forget(self, scope: str) -> None:
        """Drop a scope's windows and rate (its outcomes stay in the global aggregate)."""
        for priority in Priority:
            self._windows.pop((scope, priority), None)
        self._rates.pop(scope, None)

    def export_state(self) -> dict[str, Any]:
        """The windows' outcomes, the theoretical rates and the clock."""
        return {
            "now": self._now_ms,
            "windows": [
                [scope, priority.value, [list(outcome) for outcome in window]]
                for (scope, priority), window in self._windows.items()
            ],
            "rates": dict(self._rates),
        }

    def restore_state(self, data: dict[str, Any]) -> None:
        """Take back what `export_state` gave."""
        self._now_ms = data["now"]
        self._windows = {
            (scope, Priority(priority)): deque(
                (_Outcome(*outcome) for outcome in outcomes), maxlen=self.max_samples
            )
            for scope, priority, outcomes in data["windows"]
        }
        self._rates = dict(data["rates"])

    def scopes(self) -> list[str]:
        """The scopes holding outcomes (some may have expired since they were recorded),
        sorted."""
        return sorted({scope for scope, _ in self._windows})

    def stored(self) -> int:
        """Outcomes held in all windows, expired ones not yet dropped included."""
        return sum(len(window) for window in self._windows.values())

    def snapshot(self, scope: str, now_ms: int) -> SloSnapshot:
        """The figures of `scope` over the window ending at `now_ms` (changes nothing: a
        reading never moves the tracker's clock or drops outcomes)."""
        now = max(self._now_ms, now_ms)
        cutoff = now - self.window_ms
        rate = self._rates.get(scope)
        figures: list[PrioritySlo] = []
        for priority in Priority:
            window = self._windows.get((scope, priority), ())
            recent = [o for o in window if o.at_ms > cutoff]
            figures.append(self._summarise(priority, recent, rate))
        interactive, batch = figures
        return SloSnapshot(scope, now, self.window_ms, interactive, batch)

    def _advance(self, now_ms: int) -> int:
        if now_ms > self._now_ms:
            self._now_ms = now_ms
        return self._now_ms

    def _expire(self, window: deque[_Outcome], now: int) -> None:
        cutoff = now - self.window_ms
        while window and window[0].at_ms <= cutoff:
            window.popleft()

    def _summarise(
        self, priority: Priority, window: Iterable[_Outcome], rate: float | None
    ) -> PrioritySlo:
        outcomes = list(window)
        objectives = self.objectives.of(priority)
        samples = len(outcomes)
        first = [o.first_token_ms for o in outcomes if o.first_token_ms is not None]
        tokens_64 = [o.tokens_64_ms for o in outcomes if o.tokens_64_ms is not None]
        timed = [o for o in outcomes if o.gaps]
        decode_ms = sum(o.decode_ms for o in timed)
        throughput = None
        if rate is not None and decode_ms > 0:
            throughput = sum(o.gaps for o in timed) * 1000 / decode_ms / rate
        first_p95, tokens_64_p95 = _p95(first), _p95(tokens_64)
        error_rate = sum(not o.ok for o in outcomes) / samples if samples else None
        attained = sum(_attained(o, objectives, rate) for o in outcomes)
        minimum = self.min_samples
        verdicts = [
            _judge(first_p95, len(first), minimum, objectives.first_token_p95_ms),
            _judge(tokens_64_p95, len(tokens_64), minimum, objectives.tokens_64_p95_ms),
            _judge(error_rate, samples, minimum, objectives.max_error_rate),
            _judge(throughput, len(timed), minimum, objectives.min_throughput_ratio, floor=True),
        ]
        met: bool | None = None
        if samples >= minimum:
            met = False if False in verdicts else None if None in verdicts else True
        return PrioritySlo(
            priority,
            samples,
            first_p95,
            tokens_64_p95,
            error_rate,
            throughput,
            attained / samples if samples else None,
            met,
            _within(first, objectives.first_token_p95_ms),
            _within(tokens_64, objectives.tokens_64_p95_ms),
        )


def _p95(values: list[int]) -> int | None:
    """Nearest-rank p95: the value at 1-based rank ceil(0.95 n) of the sorted values."""
    if not values:
        return None
    values.sort()
    return values[-(-P95 * len(values) // 100) - 1]


def _within(values: list[int], limit: int | None) -> float | None:
    """The share of ``values`` at or below ``limit``; None without values or a limit."""
    if limit is None or not values:
        return None
    return sum(v <= limit for v in values) / len(values)


def _judge(
    value: float | None, count: int, minimum: int, limit: float | None, *, floor: bool = False
) -> bool | None:
    """True or False for an objective judged on enough values; None when it cannot be.

    An absent objective (`limit` None) is vacuously met. `floor` makes the limit a minimum.
    """
    if limit is None:
        return True
    if value is None or count < minimum:
        return None
    return value >= limit if floor else value <= limit


def _attained(outcome: _Outcome, objectives: PriorityObjectives, rate: float | None) -> bool:
    """Whether one task met its objectives on its own figures (see the module docstring)."""
    if not outcome.ok:
        return False
    for value, limit in (
        (outcome.first_token_ms, objectives.first_token_p95_ms),
        (outcome.tokens_64_ms, objectives.tokens_64_p95_ms),
    ):
        if value is not None and limit is not None and value > limit:
            return False
    floor = objectives.min_throughput_ratio
    if floor is None or rate is None or not outcome.gaps or outcome.decode_ms == 0:
        return True
    return outcome.gaps * 1000 / outcome.decode_ms / rate >= floor
