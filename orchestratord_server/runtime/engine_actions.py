"""Carrying out the core's engine actions: preload, stop and probe, one replica at a time.

Each replica has a lane: its actions run one after another, in the order the core decided
them, so an engine is stopped before the next preload starts it again. A `StopEngine`
also cancels what its lane still runs or holds (a preload or probe the core has already
superseded): nothing started before a stop outlives it. Each finished preload or probe
becomes the core input that reports it (`inputs.Preloaded`, `inputs.PreloadFailed`,
`inputs.Probed`), quoting the generation of the action it answers, and goes to `deliver`;
the core decides what follows. Preload outcomes are counted here, where they are known
(ORCH-3002).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from orchestrator_core import Preload, PreloadFailure, PreloadOutcome, Probe, StopEngine
from orchestrator_core import inputs as core_inputs
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime.pool_manager import PoolManager, ReplicaKey
from orchestratord_server.runtime.recording import UNKNOWN_VERSION
from orchestratord_server.runtime.replicas import PreloadFailed

log = logging.getLogger("orchestratord.pool")

EngineAction = Preload | StopEngine | Probe
Outcome = core_inputs.Preloaded | core_inputs.PreloadFailed | core_inputs.Probed
Deliver = Callable[[Outcome], object]
Job = Callable[[], Coroutine[Any, Any, None]]


class _Lane:
    """The actions of one replica: what runs now and what waits, in order."""

    __slots__ = ("queued", "running", "worker")

    def __init__(self) -> None:
        self.queued: deque[Job] = deque()
        self.running: asyncio.Task[None] | None = None
        self.worker: asyncio.Task[None] | None = None


class EngineActions:
    """Runs Preload, StopEngine and Probe on the pool manager; reports their outcomes."""

    def __init__(
        self, manager: PoolManager, metrics: Metrics, deliver: Deliver, clock: Callable[[], int]
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        self._deliver = deliver
        self._clock = clock
        self._lanes: dict[ReplicaKey, _Lane] = {}

    def perform(self, action: EngineAction) -> None:
        """Queue `action` on its replica's lane (a stop first clears the lane)."""
        key = (action.pool_id, action.replica_id)
        lane = self._lanes.setdefault(key, _Lane())
        if isinstance(action, StopEngine):
            lane.queued.clear()
            if lane.running is not None:
                lane.running.cancel()
            lane.queued.append(lambda: self._manager.stop(key))
        elif isinstance(action, Preload):
            lane.queued.append(lambda: self._preload(action))
        else:
            lane.queued.append(lambda: self._probe(action))
        if lane.worker is None or lane.worker.done():
            lane.worker = asyncio.get_running_loop().create_task(
                self._work(lane), name=f"engine actions {key[0]}/{key[1]}"
            )

    async def _work(self, lane: _Lane) -> None:
        while lane.queued:
            job = lane.queued.popleft()
            lane.running = asyncio.get_running_loop().create_task(job())
            try:
                await lane.running
            except asyncio.CancelledError:
                worker = asyncio.current_task()
                if worker is not None and worker.cancelling():
                    raise  # the lane itself is being closed
            except Exception:  # an action must never take its lane down with it
                log.exception("engine action failed unexpectedly")
            finally:
                lane.running = None

    async def _preload(self, action: Preload) -> None:
        key = (action.pool_id, action.replica_id)
        try:
            report = await self._manager.preload(key, action.model_ref)
        except PreloadFailed as failed:
            self._count(key, failed.outcome)
            failure = PreloadFailure(failed.outcome, str(failed), failed.live)
            outcome = core_inputs.PreloadFailed(*key, action.generation, failure, self._clock())
            self._deliver(outcome)
            return
        self._count(key, PreloadOutcome.SUCCESS)
        self._deliver(core_inputs.Preloaded(*key, action.generation, report, self._clock()))

    async def _probe(self, action: Probe) -> None:
        key = (action.pool_id, action.replica_id)
        report = await self._manager.probe(key)
        self._deliver(core_inputs.Probed(*key, action.generation, report, self._clock()))

    def _count(self, key: ReplicaKey, outcome: PreloadOutcome) -> None:
        handle = self._manager.handles[key]
        version = handle.props.engine_version if handle.props else UNKNOWN_VERSION
        self._metrics["preload_outcomes_total"].labels(
            handle.engine_name.value, version, key[0], outcome.value
        ).inc()

    async def close(self) -> None:
        """Cancel every lane and wait for them (bounded)."""
        workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        for lane in self._lanes.values():
            lane.queued.clear()
            if lane.running is not None:
                lane.running.cancel()
        for worker in workers:
            worker.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*workers, return_exceptions=True)
