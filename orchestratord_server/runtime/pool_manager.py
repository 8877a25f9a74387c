"""The pool manager: every replica supervised, and pools reloaded onto another model.

ORCH-3001: each pool serves one model on its device mask; its replicas are engine
servers reached by URL, optionally started and supervised here (a llama.cpp `launch` or
a `command`). ORCH-3002/3038/3053: one supervisor per replica preloads it, probes it, and
restarts it with backoff under a circuit breaker (see `supervisor`).

ORCH-2102/3031 reload, theory of operation. A reload request resolves the new model
reference first (unknown references are refused before anything changes) and records it
as the pool's desired model; one reload task per pool then converges on the most recent
request:

1. drain the pool (no new admissions; running tasks may finish within the pool's
   watchdog wall limit, then are canceled) and wait until nothing runs;
2. stop the pool's supervisors and engines; verify the new model's checksum (ORCH-3037),
   start every replica on it and preload it (with its self-test, ORCH-3049);
3. on success, the core's pool is replaced by one serving the new model reference; on
   any failure every replica goes back to the previous model and `last_error` says why
   (the rollback is the same single step, automatic);
4. the pool leaves the drained state and its supervisors resume.

Health shows `desired_model_ref` (set by the request) and `applied_model_ref` (set once
the swap is done), so progress and rollbacks are observable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from orchestrator_core import ReplicaStatus, RestartPolicy
from orchestratord_server.adapters.digest import PREFIX as DIGEST_PREFIX
from orchestratord_server.config import Config, PoolConfig
from orchestratord_server.logs import log_event
from orchestratord_server.model_catalog import ModelCatalog, ResolvedModel, UnknownModel
from orchestratord_server.runtime.replicas import PreloadFailed, PreloadOutcome, ReplicaHandle
from orchestratord_server.runtime.supervisor import (
    ReplicaRecord,
    new_record,
    preload_once,
    supervise,
)

log = logging.getLogger("orchestratord.pool")

ReplicaKey = tuple[str, str]
_MODEL_PLACEHOLDERS = ("{model_path}", "{model_ref}")


class NotReloadable(Exception):
    """The pool cannot change its model (its engines are not run by the daemon)."""


@dataclass
class PoolState:
    """What a pool should serve and serves, and what went wrong last (ORCH-2103)."""

    desired_ref: str
    applied_ref: str
    applied_model: ResolvedModel | None
    last_error: str | None = None
    pending: ResolvedModel | None = None
    #: An operator drained the pool while a reload ran; the reload leaves it drained.
    operator_drain: bool = False


@dataclass(frozen=True)
class PoolHooks:
    """How the pool manager acts on the rest of the runtime (the core lives there)."""

    replica_status: Callable[[ReplicaHandle, ReplicaStatus], None]
    preload_outcome: Callable[[ReplicaHandle, PreloadOutcome], None]
    drain: Callable[[str, int], Awaitable[None]]
    swap_model: Callable[[str, str], None]
    undrain: Callable[[str], None]


class PoolManager:
    """Replica handles, their supervisors, and each pool's model state."""

    def __init__(self, config: Config, hooks: PoolHooks) -> None:
        self.catalog = ModelCatalog(config)
        self.pools = {p.id: p for p in config.pools}
        self._hooks = hooks
        self._interval_s = config.server.health_interval_ms / 1000
        self.handles: dict[ReplicaKey, ReplicaHandle] = {}
        self.records: dict[ReplicaKey, ReplicaRecord] = {}
        self.state: dict[str, PoolState] = {}
        self._supervisors: dict[ReplicaKey, asyncio.Task[None]] = {}
        self._reloads: dict[str, asyncio.Task[None]] = {}
        self._configured: dict[str, ResolvedModel] = {}
        for pool in config.pools:
            model = self._initial_model(pool)
            policy = RestartPolicy(**pool.restart.model_dump())
            self.state[pool.id] = PoolState(pool.model, pool.model, model)
            for replica in pool.replicas:
                key = (pool.id, replica.id)
                self.handles[key] = ReplicaHandle(pool, replica, model)
                self.records[key] = new_record(policy, managed=replica.managed)

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

    # -- supervision -------------------------------------------------------------------

    def start(self) -> None:
        """Start one supervisor per replica (call inside the running loop)."""
        for key in self.handles:
            self._supervise(key)

    def _supervise(self, key: ReplicaKey, ready: ReplicaStatus | None = None) -> None:
        handle, record = self.handles[key], self.records[key]
        hooks = self._hooks
        self._supervisors[key] = asyncio.get_running_loop().create_task(
            supervise(
                handle,
                record,
                self._interval_s,
                hooks.replica_status,
                hooks.preload_outcome,
                ready=ready,
            ),
            name=f"supervise {handle.label}",
        )

    async def _stop_supervisors(self, pool_id: str) -> None:
        tasks = [self._supervisors.pop(key) for key in list(self._supervisors) if key[0] == pool_id]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def want(self, engine: str, model_ref: str) -> None:
        """A task was routed to ``engine``/``model_ref``: load the pools that serve it and
        wait for their first task (`preload: false`, ORCH-3002)."""
        for (pool_id, _), handle in self.handles.items():
            pool = self.pools[pool_id]
            if pool.engine.value == engine and self.state[pool_id].applied_ref == model_ref:
                handle.wanted.set()

    @property
    def first_preloads_done(self) -> bool:
        """Every replica of a `preload: true` pool has finished its first attempt."""
        return all(h.attempted for h in self.handles.values() if self.pools[h.pool_id].preload)

    def pool_handles(self, pool_id: str) -> list[ReplicaHandle]:
        return [h for (owner, _), h in self.handles.items() if owner == pool_id]

    # -- reload ------------------------------------------------------------------------

    def request_reload(self, pool_id: str, model_ref: str) -> ResolvedModel:
        """Start moving ``pool_id`` to ``model_ref``; raises UnknownModel, NotReloadable."""
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
        state = self.state[pool_id]
        state.desired_ref = target.ref
        state.pending = target
        running = self._reloads.get(pool_id)
        if running is None or running.done():
            self._reloads[pool_id] = asyncio.get_running_loop().create_task(
                self._reload(pool_id), name=f"reload {pool_id}"
            )
        return target

    async def _reload(self, pool_id: str) -> None:
        state = self.state[pool_id]
        while state.pending is not None:
            target, state.pending = state.pending, None
            state.operator_drain = False
            try:
                outcome, message = await self._swap(pool_id, target)
            except Exception as exc:  # the pool must come back whatever went wrong
                log.exception("reload of %s failed unexpectedly", pool_id)
                state.last_error = f"reload to {target.ref} failed: {exc!r}"
                state.desired_ref = state.applied_ref
                outcome, message = "failed", state.last_error
            finally:
                if not state.operator_drain:
                    self._hooks.undrain(pool_id)
                for handle in self.pool_handles(pool_id):
                    key = (pool_id, handle.replica_id)
                    if key not in self._supervisors:
                        ready = handle.status(live=True, ready=True) if handle.props else None
                        self._supervise(key, ready)
            log_event(
                log,
                logging.INFO if outcome == "success" else logging.ERROR,
                "pool.reload",
                message,
                pool_id=pool_id,
                model_ref=state.applied_ref,
                outcome=outcome,
            )

    async def _swap(self, pool_id: str, target: ResolvedModel) -> tuple[str, str]:
        """Drain, load ``target`` (or roll back to the previous model); the outcome."""
        state = self.state[pool_id]
        log_event(
            log,
            logging.INFO,
            "pool.reload",
            f"reloading {pool_id}: {state.applied_ref} -> {target.ref}",
            pool_id=pool_id,
            model_ref=target.ref,
            phase="drain",
        )
        await self._hooks.drain(pool_id, self.pools[pool_id].timeouts.wall_ms)
        await self._stop_supervisors(pool_id)
        for handle in self.pool_handles(pool_id):
            self.records[pool_id, handle.replica_id].tracker.reset()
        error = await self._load(pool_id, target)
        if error is None:
            self._hooks.swap_model(pool_id, target.ref)
            state.applied_ref, state.applied_model = target.ref, target
            state.last_error = None
            return "success", f"{pool_id} now serves {target.ref}"
        state.last_error = f"reload to {target.ref} rolled back: {error}"
        if state.pending is None:
            state.desired_ref = state.applied_ref
        previous = state.applied_model
        rollback_error = None if previous is None else await self._load(pool_id, previous)
        if rollback_error is not None:
            state.last_error += f"; the previous model failed too: {rollback_error}"
        return "rolled_back", state.last_error

    def operator_drained(self, pool_id: str) -> None:
        """An operator drained the pool: a reload under way must leave it drained."""
        self.state[pool_id].operator_drain = True

    async def _load(self, pool_id: str, model: ResolvedModel) -> str | None:
        """Start every replica of the pool on ``model`` and preload it; the error, if any."""
        handles = self.pool_handles(pool_id)
        for handle in handles:
            await handle.stop_engine()
            handle.use_model(model)
            handle.wanted.set()
            self._hooks.replica_status(handle, handle.status(live=False, ready=False))
        for handle in handles:
            record = self.records[pool_id, handle.replica_id]
            try:
                await preload_once(handle)
            except PreloadFailed as exc:
                self._hooks.preload_outcome(handle, exc.outcome)
                record.last_preload_outcome = exc.outcome
                for other in handles:
                    await other.stop_engine()
                    other.props = None
                return f"{exc.outcome.value}: {exc}"
            self._hooks.preload_outcome(handle, PreloadOutcome.SUCCESS)
            record.last_preload_outcome = PreloadOutcome.SUCCESS
            record.last_error = None
        return None

    # -- shutdown ----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop reloads and supervisors, then every managed engine."""
        tasks = [*self._reloads.values(), *self._supervisors.values()]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(h.close() for h in self.handles.values()))
