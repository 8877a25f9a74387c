"""SLOs measured on every finished task, per pool and per replica set (ORCH-3041).

The runtime reports each task that ended or failed; this module turns it into one outcome
for `orchestrator_core.SloTracker` in the scope of the task's pool and in the scope of the
replica set its replica belonged to (scope `set:<id>`; pool ids cannot contain `:`).
Time to first token runs from dispatch; decode time from the first token to the end. A
failure the client caused (its parameters) is not the service's error; canceled tasks are
not counted. The theoretical decode rate of a scope is the best per-task rate seen there
(over tasks long enough to measure one), so batch throughput is judged against what this
hardware has shown it can do; a reload forgets the pool's figures. On each
/metrics scrape the attainment ratios are exported as `slo_attainment_ratio`; a ratio
that cannot be computed has no sample.
"""

from __future__ import annotations

import contextlib

from orchestrator_core import (
    ErrorKind,
    Priority,
    ReplicaSetSnapshot,
    SloSnapshot,
    SloTracker,
)
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime.tasks import TaskContext

#: A task sets the best decode rate only when it decoded at least this long and this many
#: tokens: a few tokens read in one piece would claim an impossible rate.
RATE_MIN_DECODE_MS = 20
RATE_MIN_TOKENS = 8
#: Failures the client caused; they do not count against the service's SLOs.
CLIENT_ERRORS = frozenset({ErrorKind.INVALID_PARAMS})


def set_scope(set_id: str) -> str:
    """The tracker scope of a replica set."""
    return f"set:{set_id}"


class SloMeasurement:
    """The SLO tracker of one daemon, fed with finished tasks."""

    def __init__(self, metrics: Metrics) -> None:
        self.tracker = SloTracker()
        self._metrics = metrics
        self._best_rate: dict[str, float] = {}
        self._set_of_replica: dict[tuple[str, str], str] = {}

    def membership(self, sets: tuple[ReplicaSetSnapshot, ...]) -> None:
        """Which replica set each replica is in now (versions decide it, ORCH-3046)."""
        self._set_of_replica = {
            (member.pool_id, member.replica_id): snapshot.set_id
            for snapshot in sets
            for member in snapshot.members
        }

    def failed(self, task: TaskContext, kind: ErrorKind, now_ms: int) -> None:
        """A task failed: an error of the service unless the client caused it."""
        self.finished(task, ok=kind in CLIENT_ERRORS, now_ms=now_ms)

    def finished(self, task: TaskContext, *, ok: bool, now_ms: int) -> None:
        """Count a finished task toward its pool's and its replica set's SLOs."""
        first, start = task.first_token_ms, task.dispatched_ms
        decode = None if first is None else now_ms - first
        priority = Priority(task.request.priority.value)
        scopes = [task.pool.id]
        set_id = self._set_of_replica.get((task.pool.id, task.replica_id or ""))
        if set_id is not None:
            scopes.append(set_scope(set_id))
        rate = None
        if (
            decode is not None
            and decode >= RATE_MIN_DECODE_MS
            and task.tokens_out > RATE_MIN_TOKENS
        ):
            rate = (task.tokens_out - 1) * 1000 / decode
        for scope in scopes:
            if rate is not None and rate > self._best_rate.get(scope, 0.0):
                self._best_rate[scope] = rate
                self.tracker.set_theoretical_tokens_per_s(scope, rate)
            self.tracker.record_outcome(
                scope,
                priority,
                now_ms,
                first_token_ms=None if first is None or start is None else first - start,
                tokens_out=task.tokens_out,
                decode_ms=decode,
                ok=ok,
            )

    def forget(self, pool_id: str) -> None:
        """Drop a pool's window and best rate (it now serves another model)."""
        self.tracker.forget(pool_id)
        self._best_rate.pop(pool_id, None)

    def snapshot(self, scope: str, now_ms: int) -> SloSnapshot:
        """A pool's (or, with `set_scope`, a replica set's) figures over the window."""
        return self.tracker.snapshot(scope, now_ms)

    def export(self, engine: str, version: str, pool_id: str, now_ms: int) -> None:
        """Set slo_attainment_ratio of one pool per priority and objective."""
        gauge = self._metrics["slo_attainment_ratio"]
        snapshot = self.tracker.snapshot(pool_id, now_ms)
        for priority in Priority:
            figures = snapshot.of(priority)
            ratios = {
                "first_token_latency": figures.first_token_within,
                "decode_latency": figures.tokens_64_within,
                "errors": None if figures.error_rate is None else 1 - figures.error_rate,
                "throughput": None
                if figures.throughput_ratio is None
                else min(1.0, figures.throughput_ratio),
            }
            for objective, ratio in ratios.items():
                key = (engine, version, pool_id, priority.value, objective)
                if ratio is None:
                    with contextlib.suppress(KeyError):
                        gauge.remove(*key)
                else:
                    gauge.labels(*key).set(ratio)
