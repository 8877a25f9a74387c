"""One replica as the runtime sees it: its engine adapter and, if launched here, its process.

Preload (ORCH-3002, ORCH-3003) gates readiness: the engine must answer health, report
its properties (slots, version, model digest; ORCH-3019, ORCH-3032) and complete a minimal
one-token decode before the replica is reported Ready to the core. Health probes then keep
the core's view current; a replica that stops answering is reported not live.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from orchestrator_core import ReplicaStatus
from orchestratord_server.adapters.base import (
    CompletionRequest,
    EngineError,
    EngineProps,
    FinalChunk,
)
from orchestratord_server.adapters.llamacpp import LlamaCppAdapter
from orchestratord_server.config import LaunchConfig, PoolConfig, ReplicaConfig
from orchestratord_server.engines.llamacpp_process import LlamaCppProcess, LlamaCppServerConfig
from orchestratord_server.engines.models import smollm2_gguf_path
from orchestratord_server.logs import log_event

log = logging.getLogger("orchestratord.replica")

PRELOAD_PROMPT = "Hello"


class PreloadFailed(Exception):
    """A replica could not be made Ready; the message says which step failed."""


class ReplicaHandle:
    """A replica's adapter, its launched engine (if any) and what preload learned.

    `lost` is set when a stream saw the worker reset; the supervisor then preloads the
    replica again without waiting for its next health probe.
    """

    def __init__(self, pool: PoolConfig, config: ReplicaConfig) -> None:
        self.pool_id = pool.id
        self.pool_ctx = pool.ctx
        self.replica_id = config.id
        self.config = config
        self.process: LlamaCppProcess | None = None
        self.adapter: LlamaCppAdapter | None = None
        self.props: EngineProps | None = None
        self.lost = asyncio.Event()
        if config.url is not None:
            self.adapter = LlamaCppAdapter(str(config.url).rstrip("/"))

    @property
    def label(self) -> str:
        """`pool/replica`, for logs."""
        return f"{self.pool_id}/{self.replica_id}"

    def engine(self) -> LlamaCppAdapter:
        """The adapter; raises PreloadFailed before the engine is reachable."""
        if self.adapter is None:
            raise PreloadFailed(f"{self.label}: the engine has not been started")
        return self.adapter

    async def launch(self) -> None:
        """Start the llama.cpp server of a `launch` replica on loopback (no-op otherwise)."""
        launch = self.config.launch
        if launch is None or (self.process is not None and self.process.running):
            return
        self.process = LlamaCppProcess(_server_config(launch))
        await self.process.start()
        if self.adapter is not None:
            await self.adapter.close()
        model_path = launch.model_path or smollm2_gguf_path()
        self.adapter = LlamaCppAdapter(
            self.process.base_url,
            model_path=model_path,
            engine_version=self.process.engine_version,
        )
        log_event(
            log,
            logging.INFO,
            "replica.start",
            f"engine of {self.label} started",
            pool_id=self.pool_id,
            replica_id=self.replica_id,
            url=self.process.base_url,
        )

    async def preload(self) -> ReplicaStatus:
        """Health, properties and a one-token decode; the Ready status, or PreloadFailed."""
        await self.launch()
        adapter = self.engine()
        health = await adapter.health()
        if not health.ready:
            raise PreloadFailed(f"{self.label}: engine not ready ({health.detail})")
        try:
            self.props = await adapter.props()
            if self.props.ctx_limit < self.pool_ctx:
                raise PreloadFailed(
                    f"{self.label}: the engine's context per slot ({self.props.ctx_limit} "
                    f"tokens) is smaller than the pool's ctx ({self.pool_ctx}); a task the "
                    "pool admits could not run there (ORCH-3014)"
                )
            request = CompletionRequest(prompt=PRELOAD_PROMPT, max_tokens=1, seed=0)
            finished = False
            async for chunk in adapter.stream(request):
                finished = finished or isinstance(chunk, FinalChunk)
        except EngineError as exc:
            raise PreloadFailed(f"{self.label}: {exc.kind}: {exc.message}") from exc
        if not finished:
            raise PreloadFailed(f"{self.label}: the minimal decode did not finish")
        return self.status(live=True, ready=True)

    def status(self, *, live: bool, ready: bool) -> ReplicaStatus:
        """A status for the core, with what preload learned about the engine."""
        props = self.props
        return ReplicaStatus(
            live=live,
            ready=ready,
            engine_version=props.engine_version if props else None,
            model_digest=props.model_digest if props else None,
            slots_total=self.config.slots or (props.slots_total if props else None),
        )

    async def probe(self) -> tuple[bool, bool]:
        """(live, ready) as the engine answers now; a dead launched engine is not live."""
        if self.process is not None and not self.process.running:
            return False, False
        if self.adapter is None:
            return False, False
        health = await self.adapter.health()
        return health.live, health.ready

    async def close(self) -> None:
        """Close the adapter and stop a launched engine."""
        if self.adapter is not None:
            await self.adapter.close()
        if self.process is not None:
            await self.process.stop()


def _server_config(launch: LaunchConfig) -> LlamaCppServerConfig:
    model = launch.model_path or smollm2_gguf_path()
    return LlamaCppServerConfig(
        model_path=model,
        n_ctx=launch.ctx_per_slot * launch.slots,
        n_parallel=launch.slots,
        threads=launch.threads or default_threads(),
        python=sys.executable,
    )


def default_threads() -> int:
    """Engine threads when the config names none: every core but one for the daemon.

    llama.cpp's threads spin at barriers; sharing every core with the daemon makes a
    descheduled thread stall the whole decode, so the daemon keeps a core of its own.
    """
    return max(1, (os.cpu_count() or 1) - 1)
