"""The start-up self-test every replica passes before it is reported Ready (ORCH-3049).

Preload already proved the artifact, the headroom, the engine's health and properties and a
minimal decode (a fixed prompt and seed, up to 4 tokens, at least one token and an end).
The self-test adds what a serving replica must also do: cancel a generation (a stream of
up to 64 tokens closed after its first token) with the replica's slots all free again
within 2 s, then still decode; and emit telemetry: the steps and their timings are logged
as one `pool.selftest` record, and the caller counts the preload outcome in the metrics.
A failed step fails the preload with outcome `selftest_failed`; the replica stays Unready
and is retried with backoff. Self-test requests go straight to the engine, so they are
neither tasks nor counted in SLO measurement (ORCH-3041). An embedding replica embeds a
batch instead: it has no generation to cancel.
"""

from __future__ import annotations

import asyncio
import logging
import time

from orchestrator_core import PreloadOutcome, Workload
from orchestratord_server.adapters.base import (
    CompletionRequest,
    EngineError,
    FinalChunk,
    TokenChunk,
)
from orchestratord_server.logs import log_event
from orchestratord_server.runtime.replicas import PRELOAD_PROMPT, PreloadFailed, ReplicaHandle

log = logging.getLogger("orchestratord.pool")

#: How long the replica's slots may take to come free after the cancel.
SLOTS_FREE_WITHIN_S = 2.0
_POLL_S = 0.02


async def self_test(handle: ReplicaHandle) -> None:
    """Cancel, slots free, decode after the cancel; raises PreloadFailed naming the step."""
    try:
        steps = await _steps(handle)
    except EngineError as exc:
        raise PreloadFailed(
            PreloadOutcome.SELFTEST_FAILED,
            f"{handle.label}: self-test: {exc.kind}: {exc.message}",
        ) from exc
    log_event(
        log,
        logging.INFO,
        "pool.selftest",
        f"self-test of {handle.label} passed ({_tested(handle)}, telemetry)",
        pool_id=handle.pool_id,
        replica_id=handle.replica_id,
        outcome="success",
        **steps,
    )


async def _steps(handle: ReplicaHandle) -> dict[str, float]:
    if handle.pool.workload is Workload.EMBEDDING:
        return await _embedding_steps(handle)
    adapter = handle.engine()
    steps: dict[str, float] = {}
    began = time.perf_counter()
    cancel = CompletionRequest(PRELOAD_PROMPT, max_tokens=64, seed=1, sampler=handle.sampler)
    stream = adapter.stream(cancel)
    try:
        async for chunk in stream:
            if isinstance(chunk, TokenChunk | FinalChunk):
                break
    finally:
        await stream.aclose()
    steps["cancel_ms"] = _since(began)
    began = time.perf_counter()
    deadline = time.monotonic() + SLOTS_FREE_WITHIN_S
    while (slots := await adapter.slots()).busy:
        if time.monotonic() > deadline:
            raise PreloadFailed(
                PreloadOutcome.SELFTEST_FAILED,
                f"{handle.label}: self-test: {slots.busy} of {slots.total} slots still busy "
                f"{SLOTS_FREE_WITHIN_S:g}s after a cancel",
            )
        await asyncio.sleep(_POLL_S)
    steps["slots_free_ms"] = _since(began)
    began = time.perf_counter()
    decode = CompletionRequest(PRELOAD_PROMPT, max_tokens=1, seed=0, sampler=handle.sampler)
    finished = False
    async for chunk in adapter.stream(decode):
        finished = finished or isinstance(chunk, FinalChunk)
    if not finished:
        raise PreloadFailed(
            PreloadOutcome.SELFTEST_FAILED, f"{handle.label}: self-test: no decode after a cancel"
        )
    steps["decode_after_cancel_ms"] = _since(began)
    return steps


async def _embedding_steps(handle: ReplicaHandle) -> dict[str, float]:
    """An embedding replica has nothing to cancel: it embeds a batch of two texts, in
    order and alike for the same text (the vectors a task will get), and its slots are
    free afterwards."""
    adapter = handle.engine()
    began = time.perf_counter()
    batch = await adapter.embed([PRELOAD_PROMPT, PRELOAD_PROMPT])
    single = await adapter.embed([PRELOAD_PROMPT])
    if len(batch.vectors) != 2 or batch.vectors[0] != single.vectors[0]:
        raise PreloadFailed(
            PreloadOutcome.SELFTEST_FAILED,
            f"{handle.label}: self-test: the same text embedded alone and in a batch "
            "gave different vectors",
        )
    steps = {"embed_ms": _since(began)}
    if (slots := await adapter.slots()).busy:
        raise PreloadFailed(
            PreloadOutcome.SELFTEST_FAILED,
            f"{handle.label}: self-test: {slots.busy} of {slots.total} slots busy when idle",
        )
    return steps


def _tested(handle: ReplicaHandle) -> str:
    """What the self-test of the replica's workload tried, as its log record says it."""
    if handle.pool.workload is Workload.EMBEDDING:
        return "preload, embedding"
    return "preload, decode, cancel"


def _since(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 2)
