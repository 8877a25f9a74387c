"""The runtime: orchestrator_core driven by real time, real engines and real streams.

Theory of operation. Every event is fed to the core with the current monotonic time, and
every action the core returns is carried out here and nowhere else (`_perform`):

- a `Dispatch` records the `started` frame and starts an asyncio task that streams the
  completion from the replica's engine; each token is offered to the core first
  (`on_token`) and recorded only if the core accepts it, so after a cancel no token is
  ever emitted (ORCH-3026);
- `TaskEnded` / `TaskCanceled` / `TaskFailed` close the task's transcript with its one
  terminal frame; `recording` counts and logs it (ORCH-3028, ORCH-3027);
- an `Abort` cancels the streaming asyncio task, which closes the upstream HTTP request
  and so frees the engine's slot (ORCH-3017).

A timer task sleeps until the core's next deadline (watchdog, drain, task deadline) or
until woken by a new event, then polls the core. `supervisor` preloads and probes each
replica (ORCH-3002). Finished transcripts stay readable for late subscribers for
`server.transcript_retention_ms`, then the task is reaped from the core. On shutdown
every pool is drained with `server.shutdown_grace_ms`: queued tasks are canceled at once,
running ones may finish within the grace window, then are canceled, so every admitted
task gets its terminal event and every open stream closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from orchestrator_core import (
    Abort,
    Action,
    Admitted,
    CancelStatus,
    Dispatch,
    ErrorKind,
    FinishReason,
    KvHint,
    Orchestrator,
    PoolDrained,
    PoolHealth,
    Priority,
    Refused,
    ReplicaSetSnapshot,
    ReplicaStatus,
    SessionEvicted,
    SessionInfo,
    SloSnapshot,
    TaskCanceled,
    TaskEnded,
    TaskFailed,
    TaskSpec,
)
from orchestratord_server.adapters.base import (
    CompletionRequest,
    EngineAdapter,
    EngineError,
    FinalChunk,
    sampler_profile,
)
from orchestratord_server.config import Config
from orchestratord_server.generated.models import Determinism, TaskRequest
from orchestratord_server.logs import log_event
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime.clock import now_ms
from orchestratord_server.runtime.failures import FailureClass, classify, is_device_fault
from orchestratord_server.runtime.pool_manager import PoolHooks, PoolManager
from orchestratord_server.runtime.pool_specs import pool_spec, session_config
from orchestratord_server.runtime.recording import UNKNOWN_VERSION, Recorder
from orchestratord_server.runtime.replicas import PreloadFailed, PreloadOutcome, ReplicaHandle
from orchestratord_server.runtime.slo_measurement import SloMeasurement
from orchestratord_server.runtime.tasks import NO_ENGINE_OPTIONS, EngineOptions, TaskContext
from orchestratord_server.transcripts import TaskEvent, Transcript, sse_frame, token_frame

log = logging.getLogger("orchestratord.runtime")


#: How long a broken stream waits for its managed engine to exit before it is classified.
EXIT_GRACE_S = 0.5
#: How long stop() waits for canceled streams and loops before it goes on without them.
STOP_TIMEOUT_S = 10.0


def _emit(
    transcript: Transcript, name: str, data: dict[str, Any], *, terminal: bool = False
) -> None:
    """Record one event: its frame, and its typed form when the transcript keeps those.

    Fields without a value are left out: no event field of the contract is nullable.
    """
    data = {key: value for key, value in data.items() if value is not None}
    frame = sse_frame(name, data)
    event = TaskEvent(name, data) if transcript.events is not None else None
    if terminal:
        transcript.close(frame, event)
    else:
        transcript.append(frame, event)


class ClassifiedReset(EngineError):
    """A worker reset whose engine exited, with the class of its failure (ORCH-3053)."""

    def __init__(self, message: str, failure: FailureClass) -> None:
        super().__init__("WORKER_RESET", message)
        self.failure = failure


def _classified(exc: EngineError, failure: FailureClass) -> ClassifiedReset:
    return ClassifiedReset(f"{exc.message} (engine exited: {failure.value})", failure)


class Runtime:
    """Owns the core, the replicas and the transcripts of one daemon."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.core = Orchestrator([pool_spec(p) for p in config.pools], session_config(config))
        self.pools = {p.id: p for p in config.pools}
        self.manager = PoolManager(
            config,
            PoolHooks(
                replica_status=self._replica_status,
                preload_outcome=self._preload_outcome,
                drain=self.drain_and_wait,
                swap_model=self._swap_model,
                undrain=self._undrain,
            ),
        )
        self.replicas = self.manager.handles
        self._drained: dict[str, asyncio.Event] = {}
        self.ready_replicas: set[tuple[str, str]] = set()
        self.slo = SloMeasurement(metrics)
        #: The kv_cache_usage_ratio series shown per (pool, replica), to remove on change.
        self._kv_series: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        self.tasks: dict[str, TaskContext] = {}
        self.shutting_down = False
        self._record = Recorder(metrics)
        self._streams: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retention_s = config.server.transcript_retention_ms / 1000

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start launched engines, preload every replica, and begin timers and probes."""
        self._loop = asyncio.get_running_loop()
        for pool in self.config.pools:
            if pool.device_kind.value == "cpu":
                log_event(
                    log,
                    logging.WARNING,
                    "pool.cpu",
                    f"DEVELOPMENT SETUP: pool {pool.id} runs inference on CPU; production "
                    "pools are GPU-only (ORCH-1101)",
                    pool_id=pool.id,
                )
        self._spawn(self._timer_loop())
        self.manager.start()

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown; safe to call from a signal handler."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._begin_shutdown)

    def _begin_shutdown(self) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        grace = self.config.server.shutdown_grace_ms
        log_event(
            log, logging.WARNING, "daemon.shutdown", f"draining every pool ({grace} ms grace)"
        )
        now = now_ms()
        for pool_id in self.pools:
            self._perform(self.core.drain(pool_id, grace, now))
        self._pump()

    async def stop(self) -> None:
        """Cancel every stream and background task, then stop launched engines."""
        running = [*self._streams.values(), *self._background]
        for task in running:
            task.cancel()
        if running:
            _, stuck = await asyncio.wait(running, timeout=STOP_TIMEOUT_S)
            if stuck:
                log_event(
                    log,
                    logging.ERROR,
                    "daemon.stop",
                    f"{len(stuck)} task(s) ignored cancellation; stopping without them",
                )
        await self.manager.close()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def ready_pools(self) -> set[str]:
        """Pools with at least one Ready replica (ORCH-3002)."""
        return {pool_id for pool_id, _ in self.ready_replicas}

    # -- replicas ----------------------------------------------------------------------

    def _preload_outcome(self, handle: ReplicaHandle, outcome: PreloadOutcome) -> None:
        pool = self.pools[handle.pool_id]
        version = handle.props.engine_version if handle.props else UNKNOWN_VERSION
        self.metrics["preload_outcomes_total"].labels(
            pool.engine.value, version, pool.id, outcome.value
        ).inc()

    def _replica_status(self, handle: ReplicaHandle, status: ReplicaStatus) -> None:
        key = (handle.pool_id, handle.replica_id)
        if status.ready:
            self.ready_replicas.add(key)
        else:
            self.ready_replicas.discard(key)
        self._perform(self.core.update_replica(*key, status, now_ms()))
        self.slo.membership(self.core.replica_sets())
        self._pump()

    def model_ref(self, pool_id: str) -> str:
        """The model reference the pool serves now (changes with a reload)."""
        return self.manager.state[pool_id].applied_ref

    # -- drain and reload (ORCH-2101, ORCH-2102) ---------------------------------------

    def drain(self, pool_id: str, deadline_ms: int) -> None:
        """Take the pool out of service: no admissions, queued tasks canceled, running
        ones canceled after ``deadline_ms`` (raises UnknownPool)."""
        self._drained.setdefault(pool_id, asyncio.Event()).clear()
        self._perform(self.core.drain(pool_id, deadline_ms, now_ms()))
        self._pump()

    async def drain_and_wait(self, pool_id: str, deadline_ms: int) -> None:
        """Drain the pool and return once nothing runs on it any more."""
        self.drain(pool_id, deadline_ms)
        await self._drained[pool_id].wait()

    def _undrain(self, pool_id: str) -> None:
        self.core.undrain(pool_id)
        self._pump()

    def _swap_model(self, pool_id: str, model_ref: str) -> None:
        """Point the core's pool at ``model_ref`` (the pool is drained and idle)."""
        spec = pool_spec(self.pools[pool_id])
        self.core.replace_pool(dataclasses.replace(spec, model_ref=model_ref))
        self.slo.forget(pool_id)  # the old model's figures say nothing about the new one
        for (owner, _), handle in self.replicas.items():
            if owner == pool_id and handle.props is not None:
                self._replica_status(handle, handle.status(live=True, ready=True))

    def _pool_identity(self, pool_id: str) -> tuple[str | None, str | None]:
        """(engine_version, model_digest) of the pool, from any replica that preloaded."""
        for (owner, _), handle in self.replicas.items():
            if owner == pool_id and handle.props is not None:
                return handle.props.engine_version, handle.props.model_digest
        return None, None

    # -- admission ---------------------------------------------------------------------

    async def submit(
        self,
        request: TaskRequest,
        client_id: str,
        options: EngineOptions = NO_ENGINE_OPTIONS,
        *,
        keep_events: bool = False,
    ) -> Admitted | Refused:
        """Admit a task (ORCH-2001) or say why not; the token budget is checked first.

        ``options`` go to the engine with the task; ``keep_events`` makes its transcript
        keep typed events for in-process followers (`Transcript.follow_events`).
        """
        task_id = str(request.task_id)
        prompt_tokens = await self._prompt_tokens(request)
        spec = TaskSpec(
            task_id=task_id,
            engine=request.engine.value,
            model_ref=request.model_ref,
            ctx=request.ctx,
            max_tokens=request.max_tokens,
            prompt_tokens=prompt_tokens,
            priority=Priority(request.priority.value),
            session_id=str(request.session_id),
            client_id=client_id,
            tenant_id=client_id,
            seed=request.seed,
            sampler_profile_version=request.sampler_profile_version,
            kv_hint=KvHint(request.kv_hint.value) if request.kv_hint else None,
            deadline_ms=request.deadline_ms,
        )
        now = now_ms()
        decision = self.core.submit(spec, now)
        if isinstance(decision, Refused):
            self._record.refused(request, decision)
            if decision.kind in (ErrorKind.POOL_UNREADY, ErrorKind.POOL_UNAVAILABLE):
                self.manager.want(request.engine.value, request.model_ref)
            return decision
        version, digest = self._pool_identity(decision.pool_id)
        task = TaskContext(
            task_id=task_id,
            request=request,
            pool=self.pools[decision.pool_id],
            client_id=client_id,
            transcript=Transcript(keep_events=keep_events),
            admitted_ms=now,
            prompt_tokens=prompt_tokens,
            model_digest=digest,
            options=options,
        )
        self.tasks[task_id] = task
        self._record.admitted(task, decision, version)
        if decision.evicted is not None:
            self._perform([decision.evicted])
        self._pump()
        return decision

    async def _prompt_tokens(self, request: TaskRequest) -> int:
        """Prompt tokens for the budget check (ORCH-3015).

        Byte-level tokenizers never produce more tokens than UTF-8 bytes, so bytes + 2
        (for BOS/EOS) bounds the count without asking the engine. Only when that bound
        would not fit the context is the engine's tokenizer asked for the exact count.
        """
        prompt = request.prompt or ""
        bound = len(prompt.encode()) + 2
        if bound + request.max_tokens <= request.ctx:
            return bound
        for pool_id, replica_id in sorted(self.ready_replicas):
            pool = self.pools[pool_id]
            if pool.engine.value == request.engine.value and self.model_ref(pool_id) == (
                request.model_ref
            ):
                adapter = self.replicas[pool_id, replica_id].adapter
                if adapter is not None:
                    with contextlib.suppress(EngineError):
                        return await adapter.count_tokens(prompt)
        return bound

    def ready_adapter(self, engine: str, model_ref: str) -> EngineAdapter | None:
        """The adapter of a Ready replica serving ``engine`` and ``model_ref``, if any; for
        engine calls made before admission, such as rendering a chat template."""
        for pool_id, replica_id in sorted(self.ready_replicas):
            pool = self.pools[pool_id]
            if pool.engine.value == engine and self.model_ref(pool_id) == model_ref:
                adapter = self.replicas[pool_id, replica_id].adapter
                if adapter is not None:
                    return adapter
        return None

    # -- cancel, streams, sessions, snapshots ------------------------------------------

    def transcript(self, task_id: str) -> Transcript | None:
        """The task's transcript, while the task is known."""
        task = self.tasks.get(task_id)
        return task.transcript if task else None

    def cancel(self, task_id: str, label: str = "client") -> CancelStatus:
        """Cancel a task in any state; idempotent (ORCH-3017, ORCH-3026)."""
        task = self.tasks.get(task_id)
        if task is not None and not task.transcript.closed:
            task.cancel_label = label
        outcome = self.core.cancel(task_id, now_ms())
        actions: list[Action] = []
        if outcome.abort is not None:
            actions.append(outcome.abort)
        if outcome.canceled is not None:
            actions.append(outcome.canceled)
        self._perform(actions)
        self._pump()
        return outcome.status

    def stream_abandoned(self, task_id: str) -> None:
        """The last open stream of an unfinished task closed: cancel it (no slot leaks)."""
        self.cancel(task_id, label="disconnect")

    def session_info(self, session_id: str) -> SessionInfo | None:
        """A session's TTL, turns, KV bytes and warmth (ORCH-2004)."""
        return self.core.session_info(session_id, now_ms())

    def delete_session(self, session_id: str) -> bool:
        """Forget a session (ORCH-2005); False when it is unknown."""
        evicted = self.core.delete_session(session_id, now_ms())
        if evicted is not None:
            self._perform([evicted])
        return evicted is not None

    def pool_health(self, pool_id: str) -> PoolHealth:
        """The core's health snapshot of one pool (raises UnknownPool)."""
        return self.core.pool_health(pool_id)

    def replica_sets(self) -> tuple[ReplicaSetSnapshot, ...]:
        """Replica sets with their members, slots and load (ORCH-2104)."""
        return self.core.replica_sets()

    def refresh_gauges(self) -> None:
        """Set the queue-depth gauges from the core; called when /metrics is scraped."""
        gauge = self.metrics["queue_depth"]
        for pool in self.config.pools:
            health = self.core.pool_health(pool.id)
            version = health.engine_version or UNKNOWN_VERSION
            engine = pool.engine.value
            gauge.labels(engine, version, pool.id, "interactive").set(
                health.queue_depth_interactive
            )
            gauge.labels(engine, version, pool.id, "batch").set(health.queue_depth_batch)
            self.slo.export(engine, version, pool.id, now_ms())
            self._refresh_kv_gauge(pool.id)

    def _refresh_kv_gauge(self, pool_id: str) -> None:
        """kv_cache_usage_ratio per replica from its last probe; no sample when unknown."""
        gauge = self.metrics["kv_cache_usage_ratio"]
        for handle in self.manager.pool_handles(pool_id):
            props = handle.props
            version = props.engine_version if props else UNKNOWN_VERSION
            key = (handle.engine_name, version, pool_id, handle.replica_id)
            shown = self._kv_series.get(key[2:])
            if shown is not None and (handle.kv_usage is None or shown != key):
                with contextlib.suppress(KeyError):
                    gauge.remove(*shown)
                del self._kv_series[key[2:]]
            if handle.kv_usage is not None:
                gauge.labels(*key).set(handle.kv_usage)
                self._kv_series[key[2:]] = key

    # -- the loop ----------------------------------------------------------------------

    def _pump(self) -> None:
        """Poll the core now and wake the timer so it re-reads the next deadline."""
        self._perform(self.core.poll(now_ms()))
        self._wake.set()

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.core.next_deadline_ms()
            timeout = None if deadline is None else max(0, deadline - now_ms()) / 1000
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # lands as the event is set (every pump sets it), and stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._perform(self.core.poll(now_ms()))

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Dispatch):
                self._start(action)
            elif isinstance(action, TaskEnded | TaskCanceled | TaskFailed):
                self._finish(action)
            elif isinstance(action, Abort):
                stream = self._streams.get(action.task_id)
                if stream is not None:
                    stream.cancel()
            elif isinstance(action, SessionEvicted):
                log_event(
                    log,
                    logging.INFO,
                    "session.evicted",
                    f"session evicted ({action.reason.value})",
                    reason=action.reason.value,
                    kv_bytes=action.kv_bytes,
                )
            elif isinstance(action, PoolDrained):
                self._drained.setdefault(action.pool_id, asyncio.Event()).set()
                log_event(
                    log,
                    logging.INFO,
                    "pool.drain",
                    f"pool {action.pool_id} drained",
                    pool_id=action.pool_id,
                )

    def _start(self, dispatch: Dispatch) -> None:
        task = self.tasks[dispatch.task_id]
        pool = task.pool
        task.replica_id = dispatch.replica_id
        task.dispatched_ms = now_ms()
        task.engine_version = dispatch.engine_version
        task.model_digest = dispatch.model_digest or task.model_digest
        task.kv_warmth = dispatch.kv_warmth
        task.queue_time_ms = dispatch.queue_time_ms
        _emit(
            task.transcript,
            "started",
            {
                "queue_position": dispatch.queue_position,
                "predicted_start_ms": dispatch.predicted_start_ms,
                "task_id": dispatch.task_id,
                "pool_id": dispatch.pool_id,
                "replica_id": dispatch.replica_id,
                "engine": pool.engine.value,
                "engine_version": task.engine_version,
                "model_digest": task.model_digest,
                "sampler_profile_version": pool.sampler_profile_version,
                "kv_warmth": dispatch.kv_warmth,
                "seed": dispatch.seed,
                "queue_time_ms": dispatch.queue_time_ms,
            },
        )
        self._record.dispatched(task, dispatch)
        loop = asyncio.get_running_loop()
        stream = loop.create_task(self._stream(dispatch), name=dispatch.task_id)
        self._streams[dispatch.task_id] = stream
        stream.add_done_callback(self._stream_done)

    def _stream_done(self, stream: asyncio.Task[None]) -> None:
        """Forget a finished stream task (its name is the task id)."""
        self._streams.pop(stream.get_name(), None)

    async def _stream(self, dispatch: Dispatch) -> None:
        """Stream one completion from its replica into the transcript, through the core."""
        task_id = dispatch.task_id
        task = self.tasks[task_id]
        request = task.request
        handle = self.replicas[dispatch.pool_id, dispatch.replica_id]
        completion = CompletionRequest(
            prompt=request.prompt or "",
            max_tokens=request.max_tokens,
            seed=dispatch.seed,
            sampler=task.options.sampler(sampler_profile(task.pool.sampler_profile_version)),
            stop=task.options.stop,
            reuse_prompt_cache=request.determinism is Determinism.BEST_EFFORT,
        )
        transcript = task.transcript
        events = transcript.events
        core = self.core
        outcome: list[Action] = []
        try:
            chunks = handle.engine().stream(completion)
            try:
                async for chunk in chunks:
                    if isinstance(chunk, FinalChunk):
                        task.tokens_in = chunk.tokens_in
                        # tokens_out counts the token events the client got: llama.cpp
                        # merges tokens that split a UTF-8 character into one event, so its
                        # own count can be higher (ORCH-2002: end agrees with the stream).
                        ended = core.on_finish(
                            task_id,
                            FinishReason(chunk.finish_reason),
                            chunk.tokens_in,
                            task.tokens_out,
                            now_ms(),
                        )
                        outcome = [ended] if ended is not None else []
                        break
                    accepted = core.on_token(task_id, now_ms())
                    if accepted is None:
                        break
                    if accepted.index == 0:
                        task.first_token_ms = now_ms()
                    task.tokens_out = accepted.index + 1
                    frame = token_frame(chunk.text, accepted.index)
                    if events is None:
                        transcript.append(frame)
                    else:
                        token = {"t": chunk.text, "i": accepted.index}
                        transcript.append(frame, TaskEvent("token", token))
            finally:
                await chunks.aclose()
        except EngineError as exc:
            error = exc
            # A crashed engine's sockets close just before it can be reaped: give it a
            # moment, so that the task's error can say why it died (ORCH-3053).
            if (
                exc.kind == ErrorKind.WORKER_RESET.value
                and handle.config.managed
                and await handle.exited_within(EXIT_GRACE_S)
            ):
                error = _classified(exc, classify(await handle.exit_output()))
            outcome = self._engine_failed(dispatch, error)
        except PreloadFailed as exc:
            failed = core.on_failure(task_id, ErrorKind.WORKER_RESET, str(exc), now_ms())
            outcome = [failed] if failed is not None else []
        self._perform(outcome)
        self._pump()

    def _engine_failed(self, dispatch: Dispatch, exc: EngineError) -> list[Action]:
        """Map an engine error onto the task; a worker reset also marks the replica down and
        wakes its supervisor, which preloads it again (ORCH-3038)."""
        now = now_ms()
        if exc.kind == ErrorKind.WORKER_RESET.value:
            key = (dispatch.pool_id, dispatch.replica_id)
            handle = self.replicas[key]
            self.ready_replicas.discard(key)
            handle.lost.set()
            if isinstance(exc, ClassifiedReset):
                self._count_failure(key, exc.failure)
            return self.core.replica_failed(*key, now, exc.message)
        failed = self.core.on_failure(dispatch.task_id, ErrorKind(exc.kind), exc.message, now)
        return [failed] if failed is not None else []

    def _count_failure(self, key: tuple[str, str], failure: FailureClass) -> None:
        """Record a device fault or OOM on the tasks running on the failed replica, for
        their log records (ORCH-3027, ORCH-3053)."""
        for task in self.tasks.values():
            if (task.pool.id, task.replica_id) == key and not task.transcript.closed:
                if is_device_fault(failure):
                    task.driver_reset_events += 1
                elif failure in (FailureClass.DEVICE_OOM, FailureClass.HOST_OOM):
                    task.oom_events += 1

    def _finish(self, outcome: TaskEnded | TaskCanceled | TaskFailed) -> None:
        """Close the task's transcript with its one terminal frame; count and log it."""
        task = self.tasks.get(outcome.task_id)
        if task is None or task.transcript.closed:
            return
        now = now_ms()
        task.decode_time_ms = task.decode_ms_until(now)
        if task.queue_time_ms is None:
            task.queue_time_ms = now - task.admitted_ms
        if isinstance(outcome, TaskEnded):
            task.tokens_in = outcome.tokens_in
            task.tokens_out = outcome.tokens_out
            task.decode_time_ms = outcome.decode_ms
            _emit(
                task.transcript,
                "metrics",
                {
                    "tokens_out": outcome.tokens_out,
                    "decode_ms": outcome.decode_ms,
                    "queue_time_ms": outcome.queue_time_ms,
                    "queue_depth": self.core.pool_health(task.pool.id).queue_depth,
                },
            )
            end = {
                "tokens_out": outcome.tokens_out,
                "decode_ms": outcome.decode_ms,
                "tokens_in": outcome.tokens_in,
                "finish_reason": outcome.finish_reason.value,
            }
            _emit(task.transcript, "end", end, terminal=True)
            self._record.ended(task, outcome)
            self.slo.finished(task, ok=True, now_ms=now)
        elif isinstance(outcome, TaskCanceled):
            if outcome.reason.value == "drain":
                task.cancel_label = "drain"
            end = {
                "tokens_out": task.tokens_out,
                "decode_ms": task.decode_time_ms or 0,
                "finish_reason": FinishReason.CANCELED.value,
            }
            _emit(task.transcript, "end", end, terminal=True)
            self._record.canceled(task, outcome.replica_id)
        else:
            error = {
                "code": outcome.kind.value,
                "message": outcome.message,
                "engine": task.pool.engine.value,
                "retriable": outcome.retriable,
            }
            _emit(task.transcript, "error", error, terminal=True)
            self._record.failed(task, outcome)
            self.slo.failed(task, outcome.kind, now)
        asyncio.get_running_loop().call_later(self._retention_s, self._reap, outcome.task_id)

    def slo_snapshot(self, scope: str) -> SloSnapshot:
        """SLO figures of a pool, or of a replica set's `set_scope`, over the recent window
        (ORCH-3041)."""
        return self.slo.snapshot(scope, now_ms())

    def _reap(self, task_id: str) -> None:
        self.core.reap(task_id)
        self.tasks.pop(task_id, None)
