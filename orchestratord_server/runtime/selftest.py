"""The start-up self-test every replica passes before it is reported Ready (ORCH-3049).

Preload already proved health, properties and a minimal decode. The self-test adds what
a serving replica must also do: cancel a generation (start a stream, take its first
token, close it) and then still decode (so a cancel cannot wedge the engine), report its
slots for placement, and emit telemetry: the outcome of each step is logged as one
`pool.selftest` record, and the preload outcome counter is incremented by the caller. A
failed step fails the preload; the replica stays Unready and is retried with backoff.
"""

from __future__ import annotations

import logging
import time

from orchestratord_server.adapters.base import CompletionRequest, FinalChunk, TokenChunk
from orchestratord_server.logs import log_event
from orchestratord_server.runtime.replicas import PRELOAD_PROMPT, PreloadFailed, ReplicaHandle

log = logging.getLogger("orchestratord.pool")


async def self_test(handle: ReplicaHandle) -> None:
    """Cancel, decode after the cancel, slots; raises PreloadFailed naming the step."""
    adapter = handle.engine()
    steps: dict[str, float] = {}
    began = time.perf_counter()
    cancel = CompletionRequest(PRELOAD_PROMPT, max_tokens=16, seed=1, sampler=handle.sampler)
    stream = adapter.stream(cancel)
    try:
        async for chunk in stream:
            if isinstance(chunk, TokenChunk | FinalChunk):
                break
    finally:
        await stream.aclose()
    steps["cancel_ms"] = _since(began)
    began = time.perf_counter()
    finished = False
    decode = CompletionRequest(PRELOAD_PROMPT, max_tokens=1, seed=0, sampler=handle.sampler)
    async for chunk in adapter.stream(decode):
        finished = finished or isinstance(chunk, FinalChunk)
    if not finished:
        raise PreloadFailed(f"{handle.label}: self-test: no decode after a cancel")
    steps["decode_after_cancel_ms"] = _since(began)
    began = time.perf_counter()
    slots = await adapter.slots()
    if slots.total < 1:
        raise PreloadFailed(f"{handle.label}: self-test: the engine reports no slots")
    steps["slots_ms"] = _since(began)
    log_event(
        log,
        logging.INFO,
        "pool.selftest",
        f"self-test of {handle.label} passed (preload, decode, cancel, telemetry)",
        pool_id=handle.pool_id,
        replica_id=handle.replica_id,
        outcome="success",
        **steps,
    )


def _since(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 2)
