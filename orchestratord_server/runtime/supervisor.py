"""Replica supervision: preload until Ready, probe health, restart with backoff.

ORCH-3002: a replica is reported Ready to the core only after its preload and its
start-up self-test (ORCH-3049) succeeded; each attempt's outcome is counted. ORCH-3038:
while Ready, the engine is probed every health interval; a replica that stops answering,
whose engine exits, or that reset a stream (`ReplicaHandle.lost`, set by the runtime on
WORKER_RESET) is reported down, its managed engine is stopped, and it is preloaded again.
ORCH-3053: the failure is classified (crash, device or host OOM, driver reset, ECC error)
from what the engine wrote last and logged as `replica.restart` (`replica.driver_reset`
for device faults); the delay before each new attempt comes from
`orchestrator_core.RestartTracker`: exponential backoff, and for engines the daemon runs
a circuit breaker that suspends restarts after a storm of failures. What happened last is
kept in `ReplicaRecord` for the pool's health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from orchestrator_core import BreakerState, ReplicaStatus, RestartPolicy, RestartTracker
from orchestratord_server.adapters.base import EngineError
from orchestratord_server.logs import log_event
from orchestratord_server.runtime.clock import now_ms
from orchestratord_server.runtime.failures import FailureClass, classify, is_device_fault
from orchestratord_server.runtime.replicas import PreloadFailed, PreloadOutcome, ReplicaHandle
from orchestratord_server.runtime.selftest import self_test

log = logging.getLogger("orchestratord.pool")

#: Consecutive failed probes after which a replica is restarted (re-probed if not ours).
PROBES_TO_RESTART = 3
#: Consecutive good probes that put a replica back after a failed one.
PROBES_TO_READY = 2

StatusSink = Callable[[ReplicaHandle, ReplicaStatus], None]
OutcomeSink = Callable[[ReplicaHandle, PreloadOutcome], None]


@dataclass
class ReplicaRecord:
    """A replica's supervision history, as the pool's health reports it."""

    tracker: RestartTracker
    restarts: int = 0
    last_error: str | None = None
    retry_at_ms: int | None = None
    last_preload_outcome: PreloadOutcome | None = None
    failure_class: FailureClass | None = None

    @property
    def breaker(self) -> BreakerState:
        return self.tracker.state


def new_record(policy: RestartPolicy, *, managed: bool) -> ReplicaRecord:
    """A fresh record; only engines the daemon runs get a circuit breaker (a replica
    reached by URL is re-probed, never restarted, so it cannot storm)."""
    return ReplicaRecord(RestartTracker(policy if managed else replace(policy, trip_failures=None)))


async def preload_once(handle: ReplicaHandle) -> ReplicaStatus:
    """One preload with its self-test; PreloadFailed (with its outcome) on any failure.

    An unexpected error is a failed start too (logged with its traceback): a supervisor
    must outlive whatever one attempt throws.
    """
    try:
        status = await handle.preload()
        await self_test(handle)
    except PreloadFailed:
        raise
    except EngineError as exc:
        raise PreloadFailed(
            PreloadOutcome.ENGINE_UNAVAILABLE, f"{handle.label}: {exc.kind}: {exc.message}"
        ) from exc
    except OSError as exc:
        raise PreloadFailed(PreloadOutcome.ENGINE_START_FAILED, f"{handle.label}: {exc}") from exc
    except Exception as exc:
        log.exception("unexpected failure preloading %s", handle.label)
        raise PreloadFailed(
            PreloadOutcome.ENGINE_START_FAILED, f"{handle.label}: unexpected {exc!r}"
        ) from exc
    return status


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
    if not handle.wanted.is_set():
        log_event(
            log,
            logging.INFO,
            "pool.preload",
            f"{handle.label} loads on the first task routed to its pool (preload: false)",
            outcome="deferred",
            **where,
        )
        await handle.wanted.wait()
    while True:
        if ready is None:
            ready = await _preload_until_ready(handle, record, on_status, on_preload, where)
        record.tracker.succeeded(now_ms())
        on_status(handle, ready)
        ready = None
        log_event(log, logging.INFO, "pool.ready", f"{handle.label} is Ready", **where)
        reason = await _watch(handle, interval_s, on_status, where)
        failure = classify(await handle.exit_output()) if handle.process_exited else None
        record.failure_class = failure
        record.last_error = reason if failure is None else f"{reason} ({failure.value})"
        record.restarts += 1
        decision = record.tracker.failed(now_ms())
        record.retry_at_ms = decision.retry_at_ms
        await handle.stop_engine()
        on_status(handle, handle.status(live=False, ready=False, retry_in_ms=decision.delay_ms))
        device_fault = failure is not None and is_device_fault(failure)
        log_event(
            log,
            logging.ERROR if device_fault else logging.WARNING,
            "replica.driver_reset" if device_fault else "replica.restart",
            f"{handle.label} {record.last_error}; restarting it in {decision.delay_ms} ms",
            attempt=decision.consecutive_failures,
            retry_in_ms=decision.delay_ms,
            breaker=decision.state.value,
            failure_class=None if failure is None else failure.value,
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
            status = await preload_once(handle)
        except PreloadFailed as exc:
            handle.attempted = True
            on_preload(handle, exc.outcome)
            record.last_preload_outcome = exc.outcome
            record.last_error = str(exc)
            decision = record.tracker.failed(now_ms())
            record.retry_at_ms = decision.retry_at_ms
            await handle.stop_engine()
            live, _ = await handle.probe()
            on_status(handle, handle.status(live=live, ready=False, retry_in_ms=decision.delay_ms))
            log_event(
                log,
                logging.WARNING if decision.state is BreakerState.CLOSED else logging.ERROR,
                "pool.preload",
                f"preload of {handle.label} failed ({exc.outcome.value}), retrying in "
                f"{decision.delay_ms} ms (circuit {decision.state.value}): {exc}",
                outcome=exc.outcome.value,
                attempt=decision.consecutive_failures,
                retry_in_ms=decision.delay_ms,
                breaker=decision.state.value,
                **where,
            )
            await asyncio.sleep(decision.delay_ms / 1000)
            continue
        handle.attempted = True
        on_preload(handle, PreloadOutcome.SUCCESS)
        record.last_preload_outcome = PreloadOutcome.SUCCESS
        record.last_error = None
        return status


async def _watch(
    handle: ReplicaHandle, interval_s: float, on_status: StatusSink, where: dict[str, str]
) -> str:
    """Probe until the replica is lost, and say why (ORCH-3010, ORCH-3038).

    A failed probe takes the replica out of placement at once; two consecutive good probes
    put it back. It is lost, and restarted, when its engine exits, a stream on it breaks
    (`lost`), or `PROBES_TO_RESTART` probes in a row fail: one slow answer from a busy
    engine does not cost a restart.
    """
    handle.lost.clear()
    failed = good = 0
    out = False  # taken out of placement by a failed probe, not back yet
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval_s):  # not wait_for: see Runtime
                await handle.lost.wait()
        if handle.lost.is_set():
            reason, live = "reset a stream", False
        else:
            live, ready = await handle.probe()
            if live and ready:
                failed, good = 0, good + 1
                if out and good >= PROBES_TO_READY:
                    out = False
                    on_status(handle, handle.status(live=True, ready=True))
                    log_event(
                        log, logging.INFO, "pool.ready", f"{handle.label} answers again", **where
                    )
                continue
            good, failed = 0, failed + 1
            reason = "stopped answering" if not live else "reports not ready"
            if failed < PROBES_TO_RESTART and not handle.process_exited:
                if not out:
                    out = True
                    on_status(handle, handle.status(live=live, ready=False))
                    log_event(
                        log, logging.WARNING, "pool.unready", f"{handle.label} {reason}", **where
                    )
                continue
        if handle.process_exited:
            reason = f"engine exited ({reason})"
        on_status(handle, handle.status(live=live, ready=False))
        log_event(log, logging.WARNING, "pool.unready", f"{handle.label} {reason}", **where)
        return reason
