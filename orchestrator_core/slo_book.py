"""What counts toward SLOs: every ended or failed task, per pool and per replica set (ORCH-3041).

Each task that ends or fails is one outcome for the `SloTracker`, in the scope of its pool
and in the scope of the replica set its replica belonged to (`set_scope`; pool ids cannot
contain `:`). Time to first token runs from dispatch; decode time from the first token to
the end. A failure the client caused (its parameters) is not the service's error; canceled
tasks are not counted. The theoretical decode rate of a scope is the best per-task rate
seen there over tasks long enough to measure one (a few tokens read in one piece would
claim an impossible rate), so batch throughput is judged against what this hardware has
shown it can do; a reload forgets the pool's figures.
"""

from __future__ import annotations

from orchestrator_core.slo import SloSnapshot, SloTracker
from orchestrator_core.vocabulary import ErrorKind, Priority

#: A task sets the best decode rate only when it decoded at least this long and this many
#: tokens.
RATE_MIN_DECODE_MS = 20
RATE_MIN_TOKENS = 8
#: Failures the client caused; they do not count against the service's SLOs.
CLIENT_ERRORS = frozenset({ErrorKind.INVALID_PARAMS})


def set_scope(set_id: str) -> str:
    """The tracker scope of a replica set."""
    return f"set:{set_id}"


class SloBook:
    """The SLO tracker of one core and the best decode rate seen per scope."""

    __slots__ = ("best_rate", "tracker")

    def __init__(self, tracker: SloTracker | None = None) -> None:
        self.tracker = tracker if tracker is not None else SloTracker()
        self.best_rate: dict[str, float] = {}

    def record(
        self,
        scopes: tuple[str, ...],
        priority: Priority,
        now_ms: int,
        *,
        first_token_ms: int | None,
        decode_ms: int | None,
        tokens_out: int,
        kind: ErrorKind | None,
    ) -> None:
        """Count one ended (`kind` None) or failed task in each of `scopes`.

        `first_token_ms` runs from dispatch; `decode_ms` from the first token to the end.
        """
        rate = None
        if (
            decode_ms is not None
            and decode_ms >= RATE_MIN_DECODE_MS
            and (tokens_out > RATE_MIN_TOKENS)
        ):
            rate = (tokens_out - 1) * 1000 / decode_ms
        if rate is not None:
            for scope in scopes:
                if rate > self.best_rate.get(scope, 0.0):
                    self.best_rate[scope] = rate
                    self.tracker.set_theoretical_tokens_per_s(scope, rate)
        self.tracker.record_outcome(
            scopes,
            priority,
            now_ms,
            first_token_ms=first_token_ms,
            tokens_out=tokens_out,
            decode_ms=decode_ms,
            ok=kind is None or kind in CLIENT_ERRORS,
        )

    def forget(self, scope: str) -> None:
        """Drop a scope's window and best rate (a pool that now serves another model)."""
        self.tracker.forget(scope)
        self.best_rate.pop(scope, None)

    def snapshot(self, scope: str, now_ms: int) -> SloSnapshot:
        """A scope's figures over the window ending at `now_ms`."""
        return self.tracker.snapshot(scope, now_ms)
