"""The runtime: orchestrator_core driven by real time, real engines and real streams.

Theory of operation. The core decides everything; the runtime feeds it every event with
the current monotonic time and carries out every action it returns (`_perform`), and
nowhere else:

- a `Dispatch` records the `started` frame and starts the task's engine stream
  (`streams`); an `Abort` cancels that stream, which closes the upstream request and
  frees the engine's slot (ORCH-3017);
- `TaskEnded` / `TaskCanceled` / `TaskFailed` close the task's transcript with its one
  terminal frame; `recording` counts and logs it (ORCH-3028, ORCH-3027);
- `Preload`, `StopEngine` and `Probe` go to `engine_actions`, which runs them on the pool
  manager, one replica at a time, and hands their outcomes back here as core inputs;
- `ReplicaChanged`, `PoolChanged` and `SessionEvicted` are logged.

A timer task sleeps until the core's next deadline (watchdog, drain, replica attempts and
probes, session TTL, task deadlines) or until woken by a new event, then polls the core.
Finished transcripts stay readable for late subscribers for
`server.transcript_retention_ms`, then the task is reaped from the core. On shutdown the
core admits nothing more and fails queued tasks at once and running ones still running
after `server.shutdown_grace_ms` with the retriable SHUTTING_DOWN, so every admitted task
gets its terminal event and every open stream closes.

Handlers use the intent-level methods below (`submit`, `cancel`, `drain`, `reload`,
`pool_status`, `routes`, `chat_prompt`, ...), which return plain values; the runtime's
parts are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

from orchestrator_core import (
    Abort,
    Action,
    Admitted,
    CancelReason,
    CancelStatus,
    Dispatch,
    InvalidArgument,
    PoolChanged,
    Preload,
    Probe,
    Readiness,
    Refused,
    ReplicaChanged,
    Route,
    SessionEvicted,
    SessionInfo,
    StopEngine,
    TaskCanceled,
    TaskEnded,
    TaskFailed,
    TaskSpec,
    set_scope,
)
from orchestrator_core import inputs as core_inputs
from orchestrator_core.journal import apply as apply_input
from orchestratord_server.adapters.base import EngineAdapter, EngineError
from orchestratord_server.config import Config
from orchestratord_server.generated.models import TaskRequest
from orchestratord_server.logs import log_event
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime.clock import now_ms
from orchestratord_server.runtime.engine_actions import EngineActions
from orchestratord_server.runtime.gauges import Gauges
from orchestratord_server.runtime.pool_manager import NotReloadable, PoolManager
from orchestratord_server.runtime.pool_specs import core
from orchestratord_server.runtime.recording import Recorder
from orchestratord_server.runtime.streams import TaskStreams
from orchestratord_server.runtime.tasks import NO_ENGINE_OPTIONS, EngineOptions, TaskContext
from orchestratord_server.runtime.views import PoolStatus, ReplicaSetStatus
from orchestratord_server.transcripts import Transcript, emit

log = logging.getLogger("orchestratord.runtime")

#: How long stop() waits for canceled streams and loops before it goes on without them.
STOP_TIMEOUT_S = 10.0


def _task_spec(request: TaskRequest, client_id: str, prompt_tokens: int) -> TaskSpec:
    """What the core is told of an admission request; the caller is also its tenant."""
    return TaskSpec(
        task_id=str(request.task_id),
        engine=request.engine,
        model_ref=request.model_ref,
        ctx=request.ctx,
        max_tokens=request.max_tokens,
        prompt_tokens=prompt_tokens,
        priority=request.priority,
        session_id=str(request.session_id),
        client_id=client_id,
        tenant_id=client_id,
        seed=request.seed,
        sampler_profile_version=request.sampler_profile_version,
        kv_hint=request.kv_hint,
        deadline_ms=request.deadline_ms,
    )


class Runtime:
    """Drives the core of one daemon and carries out what it decides."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self._config = config
        self._pools = {p.id: p for p in config.pools}
        self._core = core(config)
        self._manager = PoolManager(config)
        self._engine_actions = EngineActions(self._manager, metrics, self._deliver)
        self._streams = TaskStreams(self._core, self._manager, self._settle)
        self._record = Recorder(metrics)
        self._gauges = Gauges(metrics)
        self._tasks: dict[str, TaskContext] = {}
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retention_s = config.server.transcript_retention_ms / 1000

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Begin: the core's first actions (every replica preloads) and the timer."""
        self._loop = asyncio.get_running_loop()
        for pool in self._config.pools:
            if pool.device_kind.value == "cpu":
                log_event(
                    log,
                    logging.WARNING,
                    "pool.cpu",
                    f"DEVELOPMENT SETUP: pool {pool.id} runs inference on CPU; production "
                    "pools are GPU-only (ORCH-1101)",
                    pool_id=pool.id,
                )
        self._timer = self._loop.create_task(self._timer_loop(), name="core timer")
        self._pump()

    @property
    def shutting_down(self) -> bool:
        """A shutdown has begun: nothing new is admitted."""
        return self._core.shutting_down

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown; safe to call from a signal handler."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._begin_shutdown)

    def _begin_shutdown(self) -> None:
        if self._core.shutting_down:
            return
        grace = self._config.server.shutdown_grace_ms
        log_event(
            log,
            logging.WARNING,
            "daemon.shutdown",
            f"shutting down: nothing more is admitted; running tasks have {grace} ms",
        )
        self._perform(self._core.shut_down(grace, now_ms()))
        self._pump()

    async def stop(self) -> None:
        """Cancel every stream and the timer, then stop every engine the daemon runs."""
        stuck = await self._streams.close(STOP_TIMEOUT_S)
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if stuck:
            log_event(
                log,
                logging.ERROR,
                "daemon.stop",
                f"{len(stuck)} stream(s) ignored cancellation; stopping without them",
            )
        await self._engine_actions.close()
        await self._manager.close()

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
        spec = _task_spec(request, client_id, prompt_tokens)
        decision = self._core.submit(spec, now_ms())
        if isinstance(decision, Refused):
            self._record.refused(request, decision)
            if self._core.has_pending_actions:  # a `preload: false` pool now loads
                self._pump()
            return decision
        view = self._core.pool_view(decision.pool_id, now_ms())
        task = TaskContext(
            task_id=task_id,
            request=request,
            pool=self._pools[decision.pool_id],
            client_id=client_id,
            transcript=Transcript(keep_events=keep_events),
            prompt_tokens=prompt_tokens,
            model_id=view.model_digest or view.model_ref,
            options=options,
        )
        self._tasks[task_id] = task
        self._record.admitted(task, decision, view.engine_version)
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
        adapter = self._ready_adapter(request.engine, request.model_ref)
        if adapter is not None:
            with contextlib.suppress(EngineError):
                return await adapter.count_tokens(prompt)
        return bound

    def _ready_adapter(self, engine: str, model_ref: str) -> EngineAdapter | None:
        """The adapter of a Ready replica of a pool serving ``model_ref`` on ``engine``
        now, if any: for engine calls made before admission."""
        for route in self._core.routes(model_ref):
            if route.engine != engine or not route.ready:
                continue
            view = self._core.pool_view(route.pool_id, now_ms())
            for replica in view.replicas:
                adapter = self._manager.handles[route.pool_id, replica.replica_id].adapter
                if replica.usable and adapter is not None:
                    return adapter
        return None

    async def chat_prompt(
        self, engine: str, model_ref: str, messages: Sequence[Mapping[str, str]]
    ) -> str | None:
        """``messages`` rendered with the model's chat template on a Ready replica; None
        when no replica is Ready or its engine renders no templates. Raises EngineError
        when the engine refuses them."""
        adapter = self._ready_adapter(engine, model_ref)
        if adapter is None:
            return None
        return await adapter.apply_template(messages)

    # -- tasks, streams, sessions ------------------------------------------------------

    def transcript(self, task_id: str) -> Transcript | None:
        """The task's transcript, while the task is known."""
        task = self._tasks.get(task_id)
        return task.transcript if task else None

    def cancel(self, task_id: str, reason: CancelReason = CancelReason.CLIENT) -> CancelStatus:
        """Cancel a task in any state; idempotent (ORCH-3017, ORCH-3026)."""
        outcome = self._core.cancel(task_id, now_ms(), reason)
        actions: list[Action] = []
        if outcome.abort is not None:
            actions.append(outcome.abort)
        if outcome.canceled is not None:
            actions.append(outcome.canceled)
        self._perform(actions)
        self._pump()
        return outcome.status

    def stream_opened(self, task_id: str) -> None:
        """A stream of the task opened: a client that reconnected resumes its task."""
        self._core.watched(task_id, now_ms())

    def stream_abandoned(self, task_id: str) -> None:
        """The last open stream of an unfinished task closed: the task is canceled unless
        a stream opens again within `server.reconnect_grace_ms` (no slot leaks)."""
        self._perform(self._core.unwatched(task_id, now_ms()))
        self._pump()

    def client_gone(self, task_id: str) -> None:
        """The client of a task that cannot be resumed (an OpenAI request) went away:
        cancel the task now."""
        self.cancel(task_id, CancelReason.DISCONNECT)

    def session_info(self, session_id: str) -> SessionInfo | None:
        """A session's TTL, turns, KV bytes and warmth (ORCH-2004)."""
        return self._core.session_info(session_id, now_ms())

    def delete_session(self, session_id: str) -> bool:
        """Forget a session (ORCH-2005); False when it is unknown."""
        evicted = self._core.delete_session(session_id, now_ms())
        if evicted is not None:
            self._perform([evicted])
        return evicted is not None

    # -- pools (ORCH-2101..2104) -------------------------------------------------------

    def drain(self, pool_id: str, deadline_ms: int) -> int:
        """Take the pool out of service (raises UnknownPool): no admissions, queued tasks
        canceled, running ones canceled after ``deadline_ms``; the time left of the drain
        window that applies."""
        now = now_ms()
        self._perform(self._core.drain(pool_id, deadline_ms, now))
        self._pump()
        return self._core.pool_view(pool_id, now).drain_remaining_ms or 0

    def reload(self, pool_id: str, model_ref: str) -> str:
        """Move the pool to ``model_ref``; the reference it resolved to. Raises UnknownPool,
        UnknownModel or NotReloadable before anything changes."""
        self._core.pool_view(pool_id, now_ms())  # UnknownPool first
        target = self._manager.check_reload(pool_id, model_ref)
        try:
            self._perform(self._core.reload(pool_id, target.ref, now_ms()))
        except InvalidArgument as exc:
            raise NotReloadable(str(exc)) from None
        self._pump()
        return target.ref

    def pool_status(self, pool_id: str) -> PoolStatus:
        """A pool's phase, models, replicas, load and SLOs (raises UnknownPool)."""
        now = now_ms()
        view = self._core.pool_view(pool_id, now)
        pool = self._pools[pool_id]
        return PoolStatus(
            view,
            pool.device_kind.value,
            pool.devices,
            pool.tensor_split,
            self._core.slo(pool_id, now),
        )

    def replica_sets(self) -> tuple[ReplicaSetStatus, ...]:
        """Replica sets with their members, slots, load and SLOs (ORCH-2104)."""
        now = now_ms()
        return tuple(
            ReplicaSetStatus(view, self._core.slo(set_scope(view.set_id), now))
            for view in self._core.replica_sets()
        )

    def routes(self, model_ref: str) -> tuple[Route, ...]:
        """The pools that serve ``model_ref`` as applied now (ORCH-2001)."""
        return self._core.routes(model_ref)

    def models(self) -> tuple[str, ...]:
        """The models served now."""
        return self._core.models()

    def readiness(self) -> Readiness:
        """Which pools take work, and whether every first preload has ended (ORCH-3002)."""
        return self._core.readiness()

    def refresh_gauges(self) -> None:
        """Set the gauges from the core; called when /metrics is scraped."""
        self._gauges.refresh(self._core, now_ms())

    # -- the loop ----------------------------------------------------------------------

    def _pump(self) -> None:
        """Poll the core now and wake the timer so it re-reads the next deadline. Before
        `start` nothing is polled: the core's first actions wait for the loop to run."""
        if self._timer is None:
            return
        self._perform(self._core.poll(now_ms()))
        self._wake.set()

    def _settle(self, actions: list[Action]) -> None:
        """A stream ended: carry out what the core decided, then what it has pending."""
        self._perform(actions)
        self._pump()

    def _deliver(self, outcome: core_inputs.Input) -> None:
        """An engine action's outcome, fed to the core as the input it is."""
        result = apply_input(self._core, outcome)
        assert isinstance(result, list)
        self._perform(result)
        self._pump()

    async def _timer_loop(self) -> None:
        while True:
            deadline = self._core.next_deadline_ms()
            timeout = None if deadline is None else max(0, deadline - now_ms()) / 1000
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # lands as the event is set (every pump sets it), and stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._perform(self._core.poll(now_ms()))

    def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Dispatch):
                self._start(action)
            elif isinstance(action, TaskEnded | TaskCanceled | TaskFailed):
                self._finish(action)
            elif isinstance(action, Abort):
                self._streams.abort(action.task_id)
            elif isinstance(action, Preload | StopEngine | Probe):
                self._engine_actions.perform(action)
            elif isinstance(action, ReplicaChanged):
                self._record.replica_changed(action)
            elif isinstance(action, PoolChanged):
                self._record.pool_changed(action)
            elif isinstance(action, SessionEvicted):
                log_event(
                    log,
                    logging.INFO,
                    "session.evicted",
                    f"session evicted ({action.reason.value})",
                    reason=action.reason.value,
                    kv_bytes=action.kv_bytes,
                )

    def _start(self, dispatch: Dispatch) -> None:
        task = self._tasks[dispatch.task_id]
        task.dispatch = dispatch
        pool = task.pool
        emit(
            task.transcript,
            "started",
            {
                "queue_position": dispatch.queue_position,
                "predicted_start_ms": dispatch.predicted_start_ms,
                "task_id": dispatch.task_id,
                "pool_id": dispatch.pool_id,
                "replica_id": dispatch.replica_id,
                "engine": pool.engine.value,
                "engine_version": dispatch.engine_version,
                "model_digest": dispatch.model_digest,
                "sampler_profile_version": pool.sampler_profile_version,
                "kv_warmth": dispatch.kv_warmth,
                "seed": dispatch.seed,
                "queue_time_ms": dispatch.queue_time_ms,
                "kv_migrated": dispatch.kv_migrated,
            },
        )
        self._record.dispatched(task, dispatch)
        self._streams.start(task, dispatch)

    def _finish(self, outcome: TaskEnded | TaskCanceled | TaskFailed) -> None:
        """Close the task's transcript with its one terminal frame; count and log it."""
        task = self._tasks.get(outcome.task_id)
        if task is None or task.transcript.closed:
            return
        figures = outcome.figures
        if figures.decode_ms is not None:
            metrics = {
                "tokens_out": figures.tokens_out,
                "decode_ms": figures.decode_ms,
                "queue_time_ms": figures.queue_time_ms,
                "queue_depth": self._core.pool_view(outcome.pool_id, now_ms()).queue_depth,
            }
            emit(task.transcript, "metrics", metrics)
        if isinstance(outcome, TaskEnded):
            end = {
                "tokens_out": figures.tokens_out,
                "decode_ms": figures.decode_ms,
                "tokens_in": figures.tokens_in,
                "finish_reason": outcome.finish_reason.value,
            }
            emit(task.transcript, "end", end, terminal=True)
            self._record.ended(task, outcome)
        elif isinstance(outcome, TaskCanceled):
            end = {
                "tokens_out": figures.tokens_out,
                "decode_ms": figures.decode_ms or 0,
                "finish_reason": outcome.finish_reason.value,
            }
            emit(task.transcript, "end", end, terminal=True)
            self._record.canceled(task, outcome)
        else:
            error = {
                "code": outcome.kind.value,
                "message": outcome.message,
                "engine": task.pool.engine.value,
                "retriable": outcome.retriable,
                "retry_after_ms": outcome.backoff_ms or None,
            }
            emit(task.transcript, "error", error, terminal=True)
            self._record.failed(task, outcome)
        asyncio.get_running_loop().call_later(self._retention_s, self._reap, outcome.task_id)

    def _reap(self, task_id: str) -> None:
        self._core.reap(task_id)
        self._tasks.pop(task_id, None)
