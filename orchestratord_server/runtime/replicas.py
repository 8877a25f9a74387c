"""One replica as the pool manager sees it: its adapter, its engine process, its model.

Preload (ORCH-3002) gates readiness: the model's checksum is verified before anything
loads it (ORCH-3037), the memory a managed engine needs is checked against what is free
(ORCH-3003), the engine is started (a llama.cpp `launch`, or a configured `command`, given
the pool's preload timeout to come up), sees only its pool's devices (ORCH-3001) and is
given each device's share of the model (`tensor_split`, ORCH-3012); then
it must answer health, report its properties (slots, version, model digest; ORCH-3019,
ORCH-3032) and complete a minimal decode before the replica is reported Ready to the
core. Each failed step raises :class:`PreloadFailed` with its outcome, which is logged
and counted. Health probes then keep the core's view current.

A managed replica can be moved to another model (`use_model`, for reloads, ORCH-3031):
its engine is stopped and the next preload starts it on the new model. What a handle
learns goes back to the core as the outcome of the action it carried out; the handle
decides nothing about when to preload, probe or restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from orchestrator_core import PreloadOutcome, ReplicaReport, Workload
from orchestratord_server.adapters.base import (
    AdapterSettings,
    CompletionRequest,
    EngineAdapter,
    EngineError,
    EngineProps,
    FinalChunk,
    sampler_profile,
)
from orchestratord_server.adapters.digest import sha256_path
from orchestratord_server.adapters.registry import make_adapter
from orchestratord_server.config import DeviceKind, LaunchConfig, PoolConfig, ReplicaConfig
from orchestratord_server.engines.command_process import CommandProcess
from orchestratord_server.engines.llamacpp_process import (
    EngineStartError,
    LlamaCppProcess,
    LlamaCppServerConfig,
    split_text,
)
from orchestratord_server.engines.output import EngineOutput
from orchestratord_server.logs import log_event
from orchestratord_server.model_catalog import ResolvedModel
from orchestratord_server.runtime.headroom import (
    HOST,
    artifact_bytes,
    free_memory,
    needed_per_device,
    shortfalls,
)

log = logging.getLogger("orchestratord.replica")

PRELOAD_PROMPT = "Hello"
#: How long an exited engine's last output may take to be read in.
OUTPUT_SETTLE_S = 0.3
_START_POLL_S = 0.25


class PreloadFailed(Exception):
    """A replica could not be made Ready: the outcome, a message saying why, and whether
    its engine still answers (`live`, known once the attempt is over)."""

    def __init__(self, outcome: PreloadOutcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.live = False


class ReplicaHandle:
    """A replica's adapter, its managed engine (if any) and what preload learned.

    `model` is what a managed replica loads (None for an engine reached by URL whose model
    the daemon cannot resolve; that engine serves whatever it serves).
    """

    def __init__(
        self, pool: PoolConfig, config: ReplicaConfig, model: ResolvedModel | None
    ) -> None:
        self.pool_id = pool.id
        self.pool = pool
        self.pool_ctx = pool.ctx
        self.sampler = sampler_profile(pool.sampler_profile_version)
        self.start_timeout_s = pool.preload_timeout_ms / 1000
        self.engine_name = pool.engine
        self.replica_id = config.id
        self.config = config
        self.model = model
        self.launched: LlamaCppProcess | None = None
        self.command: CommandProcess | None = None
        self.adapter: EngineAdapter | None = None
        self.props: EngineProps | None = None
        self.verified_digest: str | None = None
        self._verified_stat: tuple[object, ...] | None = None
        self.headroom_unknown = False
        if not config.managed:
            self.adapter = make_adapter(self.engine_name, self._settings(str(config.url)))

    @property
    def label(self) -> str:
        """`pool/replica`, for logs."""
        return f"{self.pool_id}/{self.replica_id}"

    async def exit_output(self) -> str:
        """What an exited managed engine wrote last, once its output is read to the end
        (for failure classification, ORCH-3053)."""
        if self.command is not None:
            await asyncio.to_thread(self.command.settle_output, OUTPUT_SETTLE_S)
            return self.command.output_tail(200)
        if self.launched is not None:
            return self.launched.stderr_tail(200)
        return ""

    async def exited_within(self, seconds: float) -> bool:
        """Whether a managed engine has exited, waiting up to ``seconds`` for it: its
        sockets close a moment before the process can be reaped."""
        process = self.launched or self.command
        if process is None:
            return False
        deadline = time.monotonic() + seconds
        while process.running and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not process.running

    @property
    def process_exited(self) -> bool:
        """A managed engine was started and is no longer running."""
        process = self.launched or self.command
        return process is not None and not process.running

    def engine(self) -> EngineAdapter:
        """The adapter; raises PreloadFailed before the engine is reachable."""
        if self.adapter is None:
            raise PreloadFailed(
                PreloadOutcome.ENGINE_UNAVAILABLE, f"{self.label}: the engine has not been started"
            )
        return self.adapter

    def device_env(self) -> dict[str, str]:
        """Device visibility for an engine the daemon starts: only the pool's mask, in mask
        order (ORCH-3001); a CPU pool's engine sees the host as it is. Masks are NVML
        indices (those `nvidia-smi` and GPU telemetry show), so CUDA is told to number
        devices the same way (PCI bus order) rather than fastest first."""
        if self.pool.device_kind.value != "gpu":
            return {}
        mask = ",".join(str(d) for d in (self.config.devices or self.pool.devices))
        return {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": mask,
            "HIP_VISIBLE_DEVICES": mask,
        }

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
        self._verified_stat = None
        self.props = None

    async def verify_model(self) -> None:
        """Check the model against its expected digest before it is loaded (ORCH-3037).

        Runs before every engine start; a previous result is reused only while the files'
        device, inode, size and modification time are unchanged.
        """
        model = self.model
        if model is None or model.expected_digest is None:
            return
        path = model.path
        if not path.exists():
            raise PreloadFailed(
                PreloadOutcome.CHECKSUM_MISMATCH,
                f"{self.label}: model {model.ref} not found at {path}",
            )
        stat = await asyncio.to_thread(_stat_key, path)
        if self.verified_digest is not None and stat == self._verified_stat:
            return
        digest = await asyncio.to_thread(sha256_path, path)
        if digest != model.expected_digest:
            log_event(
                log,
                logging.ERROR,
                "pool.checksum",
                f"checksum mismatch for {model.ref}",
                pool_id=self.pool_id,
                replica_id=self.replica_id,
                expected=model.expected_digest,
                actual=digest,
            )
            raise PreloadFailed(
                PreloadOutcome.CHECKSUM_MISMATCH,
                f"{self.label}: checksum mismatch for {model.ref}: {path} has {digest}, "
                f"expected {model.expected_digest}; the model was not loaded (ORCH-3037)",
            )
        self.verified_digest, self._verified_stat = digest, stat

    async def check_headroom(self) -> None:
        """Fail fast when a managed engine would not fit in free memory (ORCH-3003)."""
        model = self.model
        if not self.config.managed or model is None or not model.path.exists():
            return
        free = await free_memory(self.pool.device_kind.value)
        if free is None:
            if not self.headroom_unknown:
                log_event(
                    log,
                    logging.WARNING,
                    "pool.headroom",
                    f"free memory of {self.label}'s devices cannot be read; the headroom "
                    "check (ORCH-3003) is skipped",
                    pool_id=self.pool_id,
                    replica_id=self.replica_id,
                )
            self.headroom_unknown = True
            return
        launch = self.config.launch
        slots = (launch.slots if launch else None) or self.config.slots or 1
        cpu = self.pool.device_kind.value == "cpu"
        devices = [HOST] if cpu else list(self.config.devices or self.pool.devices)
        needed = needed_per_device(
            await asyncio.to_thread(artifact_bytes, model.path),
            self.pool.kv_bytes_per_token * self.pool_ctx * slots,
            self.pool.memory_margin_bytes,
            devices,
            device_shares(self.pool, self.config),
        )
        short = shortfalls(needed, free)
        if short:
            raise PreloadFailed(
                PreloadOutcome.INSUFFICIENT_HEADROOM,
                f"{self.label}: not enough free memory to load {model.ref}, the engine was "
                "not started: " + "; ".join(s.describe() for s in short),
            )

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
            raise PreloadFailed(
                PreloadOutcome.ENGINE_START_FAILED,
                f"{self.label}: no model file to launch llama.cpp with",
            )
        self.launched = LlamaCppProcess(
            self.launch_config(launch, model_path), EngineOutput(self.pool_id, self.replica_id)
        )
        try:
            await self.launched.start()
        except EngineStartError as exc:
            raise PreloadFailed(PreloadOutcome.ENGINE_START_FAILED, f"{self.label}: {exc}") from exc
        await self._replace_adapter(self.launched.base_url, self.launched.engine_version)
        self._log_started(self.launched.base_url, self.launched.pid)

    def launch_config(self, launch: LaunchConfig, model_path: Path) -> LlamaCppServerConfig:
        """How to run this replica's llama.cpp server on ``model_path``: its slots and
        threads, its devices (ORCH-3001) and their shares of the model (ORCH-3012)."""
        shares = device_shares(self.pool, self.config)
        return LlamaCppServerConfig(
            model_path=model_path,
            n_ctx=launch.ctx_per_slot * launch.slots,
            n_parallel=launch.slots,
            threads=launch.threads or default_threads(),
            python=sys.executable,
            start_timeout_s=self.start_timeout_s,
            env=tuple(self.device_env().items()),
            tensor_split=shares if len(shares) > 1 else (),
            embedding=self.pool.workload is Workload.EMBEDDING,
        )

    def command_line(self, argv: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
        """A configured command's argv and environment with the placeholders filled in:
        the model (ORCH-3031), the devices' shares (ORCH-3012); plus device visibility."""
        path = self._model_path()
        values = {
            "model_path": "" if path is None else str(path),
            "model_ref": self.model.ref if self.model else "",
            "tensor_split": split_text(device_shares(self.pool, self.config)),
        }
        env = self.device_env() | {
            key: _fill(value, values) for key, value in self.config.env.items()
        }
        return [_fill(arg, values) for arg in argv], env

    async def _start_command(self, argv: tuple[str, ...]) -> None:
        if self.command is not None and self.command.running:
            return
        self.command = CommandProcess(
            *self.command_line(argv),
            self.label,
            output=EngineOutput(self.pool_id, self.replica_id),
        )
        try:
            self.command.start()
        except OSError as exc:
            raise PreloadFailed(
                PreloadOutcome.ENGINE_START_FAILED, f"{self.label}: cannot start {argv[0]}: {exc}"
            ) from exc
        await self._replace_adapter(str(self.config.url))
        self._log_started(str(self.config.url), self.command.pid)
        await self._await_command_health(self.command)

    async def _await_command_health(self, process: CommandProcess) -> None:
        """Give a just-started engine the preload timeout to load; fail early if it exits."""
        adapter = self.engine()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if not process.running:
                raise PreloadFailed(
                    PreloadOutcome.ENGINE_START_FAILED,
                    f"{self.label}: the engine exited with status {process.returncode} while "
                    f"starting; its output ends with:\n{process.output_tail()}",
                )
            health = await adapter.health()
            if health.ready:
                return
            if time.monotonic() > deadline:
                raise PreloadFailed(
                    PreloadOutcome.HEALTH_TIMEOUT,
                    f"{self.label}: the engine was not healthy within "
                    f"{self.start_timeout_s:g}s ({health.detail})",
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

    async def preload(self) -> ReplicaReport:
        """Checksum, headroom, start, health, properties and a minimal decode; what the
        engine reports, or PreloadFailed with the outcome of the step that failed."""
        await self.verify_model()
        await self.check_headroom()
        await self.start_engine()
        adapter = self.engine()
        health = await adapter.health()
        if not health.ready:
            raise PreloadFailed(
                PreloadOutcome.ENGINE_UNAVAILABLE,
                f"{self.label}: engine not ready ({health.detail})",
            )
        try:
            self.props = await adapter.props()
        except EngineError as exc:
            raise PreloadFailed(
                PreloadOutcome.ENGINE_UNAVAILABLE, f"{self.label}: {exc.kind}: {exc.message}"
            ) from exc
        if self.props.ctx_limit < self.pool_ctx:
            raise PreloadFailed(
                PreloadOutcome.ENGINE_MISMATCH,
                f"{self.label}: the engine's context per slot ({self.props.ctx_limit} "
                f"tokens) is smaller than the pool's ctx ({self.pool_ctx}); a task the "
                "pool admits could not run there (ORCH-3014)",
            )
        try:
            done = await self._minimal_work(adapter)
        except EngineError as exc:
            raise PreloadFailed(
                PreloadOutcome.SELFTEST_FAILED,
                f"{self.label}: the minimal {self._work} failed: {exc.kind}: {exc.message}",
            ) from exc
        if not done:
            raise PreloadFailed(
                PreloadOutcome.SELFTEST_FAILED,
                f"{self.label}: the minimal {self._work} gave no result",
            )
        return self.report()

    @property
    def _work(self) -> str:
        return "embedding" if self.pool.workload is Workload.EMBEDDING else "decode"

    async def _minimal_work(self, adapter: EngineAdapter) -> bool:
        """What the pool's tasks ask, once: an embedding of a fixed text for an embedding
        pool (also proving the engine runs in embedding mode), else a decode of up to 4
        tokens that gives at least one token and an end."""
        if self.pool.workload is Workload.EMBEDDING:
            result = await adapter.embed([PRELOAD_PROMPT])
            return len(result.vectors) == 1 and bool(result.vectors[0])
        request = CompletionRequest(
            prompt=PRELOAD_PROMPT, max_tokens=4, seed=0, sampler=self.sampler
        )
        finished = tokens = 0
        async for chunk in adapter.stream(request):
            finished += isinstance(chunk, FinalChunk)
            tokens += not isinstance(chunk, FinalChunk)
        return bool(finished and tokens)

    def report(self) -> ReplicaReport:
        """What preload learned about the engine, for the core."""
        props = self.props
        digest = (props.model_digest if props else None) or self.verified_digest
        return ReplicaReport(
            engine_version=props.engine_version if props else None,
            model_digest=digest,
            slots_total=self.config.slots or (props.slots_total if props else None),
        )

    async def health(self) -> tuple[bool, bool, float | None]:
        """(live, ready, KV-cache usage) as the engine answers now; a dead managed engine
        is not live. The KV-cache usage is read from a ready engine that reports it."""
        process = self.launched or self.command
        if self.config.managed and (process is None or not process.running):
            return False, False, None
        if self.adapter is None:
            return False, False, None
        health = await self.adapter.health()
        kv_usage = None
        if health.ready:
            with contextlib.suppress(EngineError):
                kv_usage = await self.adapter.kv_cache_usage()
        return health.live, health.ready, kv_usage

    async def close(self) -> None:
        """Close the adapter and stop a managed engine."""
        if self.adapter is not None:
            await self.adapter.close()
        await self.stop_engine()


def device_shares(pool: PoolConfig, replica: ReplicaConfig) -> tuple[float, ...]:
    """Each device's share of the model, in the order the replica's engine sees them
    (ORCH-3012): the pool's ratios of the replica's devices, scaled to sum to 1; equal
    shares without ratios; a CPU pool's host is one device with the whole model."""
    if pool.device_kind is DeviceKind.cpu:
        return (1.0,)
    devices = replica.devices or pool.devices
    if pool.tensor_split is None:
        return (1 / len(devices),) * len(devices)
    ratio = dict(zip(pool.devices, pool.tensor_split, strict=True))
    total = sum(ratio[d] for d in devices)
    return tuple(ratio[d] / total for d in devices)


def _fill(text: str, values: dict[str, str]) -> str:
    """``text`` with ``{model_path}``, ``{model_ref}`` and ``{tensor_split}`` replaced;
    other braces (JSON in an engine's arguments) stay as they are."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def _stat_key(path: Path) -> tuple[object, ...]:
    """What identifies a model's files on disk without reading them (ORCH-3037)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return tuple(
        (str(f), s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for f in files for s in [f.stat()]
    )


def default_threads() -> int:
    """Engine threads when the config names none: every core but one for the daemon.

    llama.cpp's threads spin at barriers; sharing every core with the daemon makes a
    descheduled thread stall the whole decode, so the daemon keeps a core of its own.
    """
    return max(1, (os.cpu_count() or 1) - 1)
