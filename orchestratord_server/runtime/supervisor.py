"""Replica supervision: preload until Ready, probe health, restart with backoff.

ORCH-3002/3003: a replica is reported Ready to the core only after its preload (which is
also its self-test, ORCH-3049) succeeded. ORCH-3038: while Ready, the engine is probed
every health interval; a replica that stops answering, or that reset a stream
(`ReplicaHandle.lost`, set by the runtime on WORKER_RESET), is reported down, its managed
engine is stopped, and it is preloaded again. ORCH-3053: the delay before each new attempt
comes from `orchestrator_core.RestartTracker`: exponential backoff, and a circuit breaker
that suspends attempts after a storm of failures. What happened last is kept in
`ReplicaRecord` for the pool's health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator_core import BreakerState, ReplicaStatus, RestartPolicy, RestartTracker
from orchestratord_server.adapters.base import EngineError
from orchestratord_server.logs import log_event
from orchestratord_server.runtime.clock import now_ms
from orchestratord_server.runtime.replicas import PreloadFailed, ReplicaHandle
from orchestratord_server.runtime.selftest import self_test

log = logging.getLogger("orchestratord.pool")

StatusSink = Callable[[ReplicaHandle, ReplicaStatus], None]
OutcomeSink = Callable[[ReplicaHandle, str], None]


@dataclass
class ReplicaRecord:
    """A replica's supervision history, as the pool's health reports it."""

    tracker: RestartTracker
    restarts: int = 0
    last_error: str | None = None
    retry_at_ms: int | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def breaker(self) -> BreakerState:
        return self.tracker.state


async def supervise(
    handle: ReplicaHandle,
    record: ReplicaRecord,
    interval_s: float,
    on_status: StatusSink,
    on_preload: OutcomeSink,
    *,
    ready: ReplicaStatus | None = None,
) -> None:
    """Run until cancelled: preload (with backoff) until Ready, probe, start over after a
    loss. ``ready``: the replica was just preloaded by the caller; start by probing."""
    where = {"pool_id": handle.pool_id, "replica_id": handle.replica_id}
    while True:
        if ready is None:
            ready = await _preload_until_ready(handle, record, on_status, on_preload, where)
        on_status(handle, ready)
        ready = None
        log_event(log, logging.INFO, "pool.ready", f"{handle.label} is Ready", **where)
        reason = await _watch(handle, interval_s, on_status, where)
        record.last_error = reason
        record.restarts += 1
        decision = record.tracker.failed(now_ms())
        record.retry_at_ms = decision.retry_at_ms
        await handle.stop_engine()
        log_event(
            log,
            logging.WARNING,
            "pool.restart",
            f"{handle.label} {reason}; restarting it in {decision.delay_ms} ms",
            retry_in_ms=decision.delay_ms,
            breaker=decision.state.value,
            **where,
        )
        await asyncio.sleep(decision.delay_ms / 1000)


async def _preload_until_ready(
    handle: ReplicaHandle,
    record: ReplicaRecord,
    on_status: StatusSink,
    on_preload: OutcomeSink,
    where: dict[str, str],
) -> ReplicaStatus:
    while True:
        record.tracker.attempting()
        record.retry_at_ms = None
        try:
            status = await handle.preload()
            await self_test(handle)
        except (PreloadFailed, EngineError, OSError) as exc:
            on_preload(handle, "failure")
            record.last_error = str(exc)
            decision = record.tracker.failed(now_ms())
            record.retry_at_ms = decision.retry_at_ms
            await handle.stop_engine()
            live, _ = await handle.probe()
            on_status(handle, handle.status(live=live, ready=False))
            log_event(
                log,
                logging.WARNING if decision.state is BreakerState.CLOSED else logging.ERROR,
                "pool.preload",
                f"preload of {handle.label} failed, retrying in {decision.delay_ms} ms "
                f"(circuit {decision.state.value}): {exc}",
                outcome="failure",
                retry_in_ms=decision.delay_ms,
                breaker=decision.state.value,
                **where,
            )
            await asyncio.sleep(decision.delay_ms / 1000)
            continue
        record.tracker.succeeded()
        record.last_error = None
        on_preload(handle, "success")
        return status


async def _watch(
    handle: ReplicaHandle, interval_s: float, on_status: StatusSink, where: dict[str, str]
) -> str:
    """Probe until the replica is lost; report it down and say why."""
    handle.lost.clear()
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):  # not wait_for: see Runtime
                await handle.lost.wait()
        if handle.lost.is_set():
            reason = "reset a stream"
            live = False
        else:
            live, ready = await handle.probe()
            if live and ready:
                continue
            reason = "stopped answering" if not live else "reports not ready"
        on_status(handle, handle.status(live=live, ready=False))
        log_event(log, logging.WARNING, "pool.unready", f"{handle.label} {reason}", **where)
        return reason


def new_record(policy: RestartPolicy) -> ReplicaRecord:
    """A fresh supervision record under ``policy``."""
    return ReplicaRecord(tracker=RestartTracker(policy))
