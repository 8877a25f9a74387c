"""The pool manager: every replica's engine, and the operations the core asks for on it.

ORCH-3001: each pool serves one model on its device mask; its replicas are engine servers
reached by URL, optionally started here (a llama.cpp `launch` or a `command`). The core
decides when a replica preloads, is probed, is stopped and on which model
(`orchestrator_core.supervision`, `orchestrator_core.reloads`); the manager carries each
operation out on the replica's `ReplicaHandle` and returns what happened:

* `preload` — verify the model (ORCH-3037), check headroom (ORCH-3003), start the engine,
  check health and properties, decode, self-test (ORCH-3002, ORCH-3049): the engine's
  report, or `PreloadFailed` with the outcome of the step that failed;
* `probe` — the engine's health, and for an engine that exited, what its last output says
  about why (ORCH-3053);
* `stop` — stop an engine the daemon runs.

It also resolves model references (`resolve`, `check_reload`, ORCH-2102): which file a
reference names, and whether a pool's engines can change model at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from orchestrator_core import FailureClass, PreloadOutcome, ProbeReport, ReplicaReport
from orchestratord_server.adapters.base import EngineError
from orchestratord_server.adapters.digest import PREFIX as DIGEST_PREFIX
from orchestratord_server.config import Config, PoolConfig
from orchestratord_server.model_catalog import ModelCatalog, ResolvedModel, UnknownModel
from orchestratord_server.runtime.failures import classify
from orchestratord_server.runtime.replicas import PreloadFailed, ReplicaHandle
from orchestratord_server.runtime.selftest import self_test

log = logging.getLogger("orchestratord.pool")

ReplicaKey = tuple[str, str]
#: How long a broken stream waits for its managed engine to exit before it is classified.
EXIT_GRACE_S = 0.5
_MODEL_PLACEHOLDERS = ("{model_path}", "{model_ref}")


class NotReloadable(Exception):
    """The pool cannot change its model (its engines are not run by the daemon)."""


class PoolManager:
    """Replica handles, and the model references pools resolve to."""

    def __init__(self, config: Config) -> None:
        self.catalog = ModelCatalog(config)
        self.pools = {p.id: p for p in config.pools}
        self.handles: dict[ReplicaKey, ReplicaHandle] = {}
        self._configured: dict[str, ResolvedModel] = {}
        for pool in config.pools:
            model = self._initial_model(pool)
            for replica in pool.replicas:
                self.handles[pool.id, replica.id] = ReplicaHandle(pool, replica, model)

    def _initial_model(self, pool: PoolConfig) -> ResolvedModel | None:
        """The model the pool starts on: the file its launch replicas pin, else the
        catalog's entry; None for engines reached by URL, which serve their own model."""
        pinned = next(
            (r.launch.model_path for r in pool.replicas if r.launch and r.launch.model_path),
            None,
        )
        if pinned is not None:
            digest = pool.model if pool.model.startswith(DIGEST_PREFIX) else None
            model = ResolvedModel(pool.model, pinned, digest, None)
            self._configured[pool.id] = model
            return model
        try:
            return self.catalog.resolve(pool.model)
        except UnknownModel:
            if any(r.managed for r in pool.replicas):
                raise
            return None

    def resolve(self, pool_id: str, model_ref: str) -> ResolvedModel:
        """``model_ref`` for ``pool_id``: its configured file, or the catalog's entry."""
        configured = self._configured.get(pool_id)
        if configured is not None and configured.ref == model_ref:
            return configured
        return self.catalog.resolve(model_ref)

    def check_reload(self, pool_id: str, model_ref: str) -> ResolvedModel:
        """What ``pool_id`` would load for ``model_ref``; UnknownModel or NotReloadable when
        it cannot (ORCH-2102: refused before anything changes)."""
        pool = self.pools[pool_id]
        target = self.resolve(pool_id, model_ref)
        for replica in pool.replicas:
            if not replica.managed:
                raise NotReloadable(
                    f"pool {pool_id}: replica {replica.id} is an engine reached by URL; the "
                    "daemon cannot change the model it serves"
                )
            command = " ".join(replica.command or ())
            if replica.command is not None and not any(
                p in command or any(p in v for v in replica.env.values())
                for p in _MODEL_PLACEHOLDERS
            ):
                raise NotReloadable(
                    f"pool {pool_id}: the command of replica {replica.id} does not name its "
                    "model with {model_path} or {model_ref}, so it cannot load another"
                )
        return target

    def pool_handles(self, pool_id: str) -> list[ReplicaHandle]:
        return [h for (owner, _), h in self.handles.items() if owner == pool_id]

    async def preload(self, key: ReplicaKey, model_ref: str) -> ReplicaReport:
        """Make the replica Ready on ``model_ref``; PreloadFailed (with its outcome, and
        whether the engine still answers) on any failure."""
        handle = self.handles[key]
        if handle.config.managed and (handle.model is None or handle.model.ref != model_ref):
            await handle.stop_engine()
            handle.use_model(self.resolve(handle.pool_id, model_ref))
        try:
            return await self._preload_once(handle)
        except PreloadFailed as failed:
            failed.live = not handle.config.managed and (await handle.health())[0]
            raise

    @staticmethod
    async def _preload_once(handle: ReplicaHandle) -> ReplicaReport:
        """One preload with its self-test. An unexpected error is a failed start too (logged
        with its traceback): an attempt must end with an outcome whatever it throws."""
        try:
            report = await handle.preload()
            await self_test(handle)
        except PreloadFailed:
            raise
        except EngineError as exc:
            raise PreloadFailed(
                PreloadOutcome.ENGINE_UNAVAILABLE, f"{handle.label}: {exc.kind}: {exc.message}"
            ) from exc
        except OSError as exc:
            raise PreloadFailed(
                PreloadOutcome.ENGINE_START_FAILED, f"{handle.label}: {exc}"
            ) from exc
        except Exception as exc:
            log.exception("unexpected failure preloading %s", handle.label)
            raise PreloadFailed(
                PreloadOutcome.ENGINE_START_FAILED, f"{handle.label}: unexpected {exc!r}"
            ) from exc
        return report

    async def probe(self, key: ReplicaKey) -> ProbeReport:
        """The engine's health now; an engine the daemon ran that exited is classified by
        what it wrote last (ORCH-3053)."""
        handle = self.handles[key]
        live, ready, kv_usage = await handle.health()
        if not handle.process_exited:
            return ProbeReport(live, ready, kv_usage=kv_usage)
        failure = classify(await handle.exit_output())
        return ProbeReport(False, False, exited=True, failure_class=failure)

    async def reset_class(self, key: ReplicaKey) -> FailureClass | None:
        """A stream on the replica broke: the class of its engine's failure when an engine
        the daemon runs exited (it may take a moment to be reaped after its sockets
        close), else None."""
        handle = self.handles[key]
        if handle.config.managed and await handle.exited_within(EXIT_GRACE_S):
            return classify(await handle.exit_output())
        return None

    async def stop(self, key: ReplicaKey) -> None:
        """Stop the replica's engine if the daemon runs it."""
        await self.handles[key].stop_engine()

    async def close(self) -> None:
        """Stop every managed engine and close every adapter."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*(h.close() for h in self.handles.values()))
