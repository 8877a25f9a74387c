"""One replica as the pool manager sees it: its adapter, its engine process, its model.

Preload (ORCH-3002, ORCH-3003) gates readiness: the model file's checksum is verified
before anything loads it (ORCH-3037), a managed engine is started (a llama.cpp `launch`,
or a configured `command`, given time to come up), then the engine must answer health,
report its properties (slots, version, model digest; ORCH-3019, ORCH-3032) and complete a
minimal one-token decode before the replica is reported Ready to the core. Health probes
then keep the core's view current; a replica that stops answering is reported not live.

A managed replica can be moved to another model (`use_model`, for reloads, ORCH-3031):
its engine is stopped and the next preload starts it on the new model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

from orchestrator_core import ReplicaStatus
from orchestratord_server.adapters.base import (
    AdapterSettings,
    CompletionRequest,
    EngineAdapter,
    EngineError,
    EngineName,
    EngineProps,
    FinalChunk,
    sampler_profile,
)
from orchestratord_server.adapters.digest import sha256_path
from orchestratord_server.adapters.registry import make_adapter
from orchestratord_server.config import LaunchConfig, PoolConfig, ReplicaConfig
from orchestratord_server.engines.command_process import CommandProcess
from orchestratord_server.engines.llamacpp_process import (
    EngineStartError,
    LlamaCppProcess,
    LlamaCppServerConfig,
)
from orchestratord_server.logs import log_event
from orchestratord_server.model_catalog import ResolvedModel

log = logging.getLogger("orchestratord.replica")

PRELOAD_PROMPT = "Hello"
#: How long a freshly started `command` engine may take to answer its health check.
COMMAND_START_TIMEOUT_S = 300.0
_START_POLL_S = 0.25


class PreloadFailed(Exception):
    """A replica could not be made Ready; the message says which step failed."""


class ReplicaHandle:
    """A replica's adapter, its managed engine (if any) and what preload learned.

    `lost` is set when a stream saw the worker reset; the supervisor then preloads the
    replica again without waiting for its next health probe. `model` is what a managed
    replica loads (None for an engine reached by URL whose model the daemon cannot
    resolve; that engine serves whatever it serves).
    """

    def __init__(
        self, pool: PoolConfig, config: ReplicaConfig, model: ResolvedModel | None
    ) -> None:
        self.pool_id = pool.id
        self.pool_ctx = pool.ctx
        self.sampler = sampler_profile(pool.sampler_profile_version)
        self.engine_name: EngineName = pool.engine.value
        self.replica_id = config.id
        self.config = config
        self.model = model
        self.launched: LlamaCppProcess | None = None
        self.command: CommandProcess | None = None
        self.adapter: EngineAdapter | None = None
        self.props: EngineProps | None = None
        self.verified_digest: str | None = None
        self.lost = asyncio.Event()
        if not config.managed:
            self.adapter = make_adapter(self.engine_name, self._settings(str(config.url)))

    @property
    def label(self) -> str:
        """`pool/replica`, for logs."""
        return f"{self.pool_id}/{self.replica_id}"

    @property
    def engine_pid(self) -> int | None:
        """The managed engine's process id, while it runs."""
        process = self.launched or self.command
        return process.pid if process is not None and process.running else None

    def engine(self) -> EngineAdapter:
        """The adapter; raises PreloadFailed before the engine is reachable."""
        if self.adapter is None:
            raise PreloadFailed(f"{self.label}: the engine has not been started")
        return self.adapter

    def _model_path(self) -> Path | None:
        """The model on this machine: the resolved model's file, or the URL replica's
        configured path (for its digest)."""
        if self.model is not None:
            return self.model.path
        return self.config.model_path

    def _settings(self, base_url: str, engine_version: str | None = None) -> AdapterSettings:
        engine_model = self.config.engine_model or (self.model.engine_model if self.model else None)
        return AdapterSettings(
            base_url=base_url.rstrip("/"),
            model=engine_model,
            model_path=self._model_path(),
            engine_version=engine_version,
            slots=self.config.slots,
        )

    # -- model -------------------------------------------------------------------------

    def use_model(self, model: ResolvedModel) -> None:
        """Load ``model`` at the next preload (the engine must be stopped first)."""
        self.model = model
        self.verified_digest = None
        self.props = None

    async def verify_model(self) -> None:
        """Check the model against its expected digest before it is loaded (ORCH-3037)."""
        model = self.model
        if model is None or model.expected_digest is None or self.verified_digest is not None:
            return
        path = self._model_path() or model.path
        if not path.exists():
            raise PreloadFailed(f"{self.label}: model {model.ref} not found at {path}")
        digest = await asyncio.to_thread(sha256_path, path)
        if digest != model.expected_digest:
            raise PreloadFailed(
                f"{self.label}: checksum mismatch for {model.ref}: {path} has {digest}, "
                f"expected {model.expected_digest}; the model was not loaded (ORCH-3037)"
            )
        self.verified_digest = digest

    # -- engine process ----------------------------------------------------------------

    async def start_engine(self) -> None:
        """Start a managed engine unless it runs already (no-op for URL replicas)."""
        if self.config.launch is not None:
            await self._launch(self.config.launch)
        elif self.config.command is not None:
            await self._start_command(self.config.command)

    async def _launch(self, launch: LaunchConfig) -> None:
        if self.launched is not None and self.launched.running:
            return
        model_path = self._model_path()
        if model_path is None:
            raise PreloadFailed(f"{self.label}: no model file to launch llama.cpp with")
        self.launched = LlamaCppProcess(_server_config(launch, model_path))
        try:
            await self.launched.start()
        except EngineStartError as exc:
            raise PreloadFailed(f"{self.label}: {exc}") from exc
        await self._replace_adapter(self.launched.base_url, self.launched.engine_version)
        self._log_started(self.launched.base_url, self.launched.pid)

    async def _start_command(self, argv: tuple[str, ...]) -> None:
        if self.command is not None and self.command.running:
            return
        path = self._model_path()
        values = {
            "model_path": "" if path is None else str(path),
            "model_ref": self.model.ref if self.model else "",
        }
        env = {key: value.format(**values) for key, value in self.config.env.items()}
        self.command = CommandProcess([arg.format(**values) for arg in argv], env, self.label)
        try:
            self.command.start()
        except OSError as exc:
            raise PreloadFailed(f"{self.label}: cannot start {argv[0]}: {exc}") from exc
        await self._replace_adapter(str(self.config.url))
        self._log_started(str(self.config.url), self.command.pid)
        await self._await_command_health(self.command)

    async def _await_command_health(self, process: CommandProcess) -> None:
        """Give a just-started engine time to load; fail early if it exits."""
        adapter = self.engine()
        deadline = time.monotonic() + COMMAND_START_TIMEOUT_S
        while True:
            if not process.running:
                raise PreloadFailed(
                    f"{self.label}: the engine exited with status {process.returncode} while "
                    f"starting; its output ends with:\n{process.output_tail()}"
                )
            health = await adapter.health()
            if health.ready:
                return
            if time.monotonic() > deadline:
                raise PreloadFailed(
                    f"{self.label}: the engine was not healthy within "
                    f"{COMMAND_START_TIMEOUT_S:g}s ({health.detail})"
                )
            await asyncio.sleep(_START_POLL_S)

    async def _replace_adapter(self, base_url: str, engine_version: str | None = None) -> None:
        if self.adapter is not None:
            await self.adapter.close()
        self.adapter = make_adapter(self.engine_name, self._settings(base_url, engine_version))

    def _log_started(self, url: str, pid: int | None) -> None:
        log_event(
            log,
            logging.INFO,
            "replica.start",
            f"engine of {self.label} started",
            pool_id=self.pool_id,
            replica_id=self.replica_id,
            url=url,
            pid=pid,
        )

    async def stop_engine(self) -> None:
        """Stop a managed engine (the adapter stays, pointing at nothing)."""
        if self.launched is not None:
            await self.launched.stop()
            self.launched = None
        if self.command is not None:
            await self.command.stop()
            self.command = None

    # -- readiness ---------------------------------------------------------------------

    async def preload(self) -> ReplicaStatus:
        """Checksum, start, health, properties and a one-token decode; the Ready status."""
        await self.verify_model()
        await self.start_engine()
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
            request = CompletionRequest(
                prompt=PRELOAD_PROMPT, max_tokens=1, seed=0, sampler=self.sampler
            )
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
        digest = (props.model_digest if props else None) or self.verified_digest
        return ReplicaStatus(
            live=live,
            ready=ready,
            engine_version=props.engine_version if props else None,
            model_digest=digest,
            slots_total=self.config.slots or (props.slots_total if props else None),
        )

    async def probe(self) -> tuple[bool, bool]:
        """(live, ready) as the engine answers now; a dead managed engine is not live."""
        process = self.launched or self.command
        if self.config.managed and (process is None or not process.running):
            return False, False
        if self.adapter is None:
            return False, False
        health = await self.adapter.health()
        return health.live, health.ready

    async def close(self) -> None:
        """Close the adapter and stop a managed engine."""
        if self.adapter is not None:
            await self.adapter.close()
        await self.stop_engine()


def _server_config(launch: LaunchConfig, model_path: Path) -> LlamaCppServerConfig:
    return LlamaCppServerConfig(
        model_path=model_path,
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
