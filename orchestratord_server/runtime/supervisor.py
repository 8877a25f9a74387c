"""Replica supervision: preload until Ready with backoff, then probe health (ORCH-3002/3003).

A replica is reported Ready to the core only after preload succeeded. Preload failures
are retried with growing delays; while Ready, the engine is probed every health interval,
and a replica that stops answering, or that reset a stream (`ReplicaHandle.lost`, set by
the runtime on WORKER_RESET), is reported down and preloaded again (ORCH-3038).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from orchestrator_core import ReplicaStatus
from orchestratord_server.adapters.base import EngineError
from orchestratord_server.logs import log_event
from orchestratord_server.runtime.replicas import PreloadFailed, ReplicaHandle

log = logging.getLogger("orchestratord.pool")

PRELOAD_RETRY_MS = (500, 1_000, 2_000, 5_000, 10_000)

StatusSink = Callable[[ReplicaHandle, ReplicaStatus], None]
OutcomeSink = Callable[[ReplicaHandle, str], None]


async def supervise(
    handle: ReplicaHandle, interval_s: float, on_status: StatusSink, on_preload: OutcomeSink
) -> None:
    """Run forever: preload (with backoff) until Ready, probe, start over after a loss."""
    attempt = 0
    where = {"pool_id": handle.pool_id, "replica_id": handle.replica_id}
    while True:
        try:
            status = await handle.preload()
        except (PreloadFailed, EngineError, OSError) as exc:
            on_preload(handle, "failure")
            live, _ = await handle.probe()
            on_status(handle, handle.status(live=live, ready=False))
            delay = PRELOAD_RETRY_MS[min(attempt, len(PRELOAD_RETRY_MS) - 1)]
            attempt += 1
            log_event(
                log,
                logging.WARNING,
                "pool.preload",
                f"preload of {handle.label} failed, retrying in {delay} ms: {exc}",
                outcome="failure",
                retry_in_ms=delay,
                **where,
            )
            await asyncio.sleep(delay / 1000)
            continue
        attempt = 0
        on_preload(handle, "success")
        on_status(handle, status)
        log_event(log, logging.INFO, "pool.ready", f"{handle.label} is Ready", **where)
        handle.lost.clear()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):  # not wait_for: see Runtime
                    await handle.lost.wait()
            if handle.lost.is_set():
                log_event(
                    log,
                    logging.WARNING,
                    "pool.unready",
                    f"{handle.label} reset a stream; preloading it again",
                    **where,
                )
                break
            live, ready = await handle.probe()
            if live and ready:
                continue
            on_status(handle, handle.status(live=live, ready=False))
            log_event(
                log,
                logging.WARNING,
                "pool.unready",
                f"{handle.label} stopped answering",
                live=live,
                **where,
            )
            break
