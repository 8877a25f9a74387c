"""The runtime: orchestrator_core driven by real time, real engines and real streams.

Theory of operation. The core decides everything. Every change the runtime wants is an
entry (`entries`: an admission, a token, a cancel, a poll, a preload outcome, ...) that
goes through the `Sequencer`, which puts all entries in one order and hands each back to
`apply`; `apply` feeds it to the core and carries out what the core decided, and nowhere
else. In memory (`LocalSequencer`) an entry is applied the moment it is proposed; with a
shared log (`orchestratord_server.cluster`) every instance applies every entry in the
log's order, so every instance holds the same core, task records and transcripts.

What a decision does here depends on the instance's role:

- on every instance: a `Dispatch` writes the `started` event, an accepted token its
  `token` event (and the periodic `metrics` event), a terminal decision the task's one
  terminal event (`transcribe`); an admission creates the task's record and transcript;
- on the leader only: a `Dispatch` starts the relay of the task's engine stream
  (`streams`) and an `Abort` stops it (which frees the engine's slot, ORCH-3017);
  `Preload`, `StopEngine` and `Probe` go to `engine_actions`, whose outcomes come back as
  entries; the leader also polls the core when its next deadline comes due, reaps
  finished tasks after `server.transcript_retention_ms`, and counts and logs task and pool
  outcomes (`recording`), so each is counted once. Admissions and refusals are counted
  by the instance that answered them.

On shutdown the memory core admits nothing more and fails queued tasks at once and
running ones still running after `server.shutdown_grace_ms` with the retriable
SHUTTING_DOWN, so every admitted task gets its terminal event and every open stream
closes. Sharing a log, an instance that stops only hands its work to the others.

Handlers use the intent-level methods below (`submit`, `cancel`, `drain`, `reload`,
`pool_status`, `all_routes`, ...), which return plain values; the runtime's
parts are its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator_core import (
    RETRIABLE,
    Abort,
    Action,
    Admitted,
    CancelOutcome,
    CancelReason,
    CancelStatus,
    Dispatch,
    ErrorKind,
    FailureClass,
    FinishReason,
    InvalidArgument,
    PoolChanged,
    PoolView,
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
    TaskView,
    TokenAccepted,
    persistence,
    set_scope,
)
from orchestrator_core import inputs as core_inputs
from orchestrator_core.journal import apply as apply_input
from orchestratord_server.adapters.base import EngineAdapter, EngineError
from orchestratord_server.adapters.chat import (
    chat_prompt_bound,
    prompt_messages,
    turns,
    unservable,
)
from orchestratord_server.adapters.registry import engine_features
from orchestratord_server.config import Config
from orchestratord_server.generated.models import TaskRequest
from orchestratord_server.logs import log_event
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime import task_records, transcribe
from orchestratord_server.runtime.engine_actions import EngineActions
from orchestratord_server.runtime.entries import Admission, Embedded, Entry, TokenOut
from orchestratord_server.runtime.gauges import Gauges
from orchestratord_server.runtime.gpu_telemetry import GpuMonitor, PoolGpus
from orchestratord_server.runtime.pool_manager import NotReloadable, PoolManager
from orchestratord_server.runtime.pool_specs import core
from orchestratord_server.runtime.recent_ends import RecentEnds
from orchestratord_server.runtime.recording import Recorder
from orchestratord_server.runtime.sequencer import (
    PENDING,
    Applier,
    LocalSequencer,
    Sequencer,
    StateUnavailable,
)
from orchestratord_server.runtime.streams import TaskStreams
from orchestratord_server.runtime.tasks import (
    NO_ENGINE_OPTIONS,
    EngineOptions,
    TaskContext,
    token_key,
)
from orchestratord_server.runtime.views import PoolStatus, ReplicaSetStatus
from orchestratord_server.transcripts import Transcript

log = logging.getLogger("orchestratord.runtime")

#: How long stop() waits for canceled streams and loops before it goes on without them.
STOP_TIMEOUT_S = 10.0

#: The back-off a client is given when this instance cannot take its task right now.
UNAVAILABLE_BACKOFF_MS = 1_000

#: What builds the sequencer of a runtime (the runtime is its applier).
SequencerFactory = Callable[[Applier], Sequencer]


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
        workload=request.workload,
        expected_tokens=request.expected_tokens,
    )


def _actions(result: object) -> list[Action]:
    """The actions in an applied entry's answer, whatever its shape."""
    if isinstance(result, list):
        return result
    if isinstance(result, CancelOutcome):
        return [a for a in (result.abort, result.canceled) if a is not None]
    if isinstance(result, TaskEnded | TaskCanceled | TaskFailed | SessionEvicted):
        return [result]
    return []


class Runtime:
    """Drives the core of one daemon and carries out what it decides."""

    def __init__(
        self, config: Config, metrics: Metrics, sequencer: SequencerFactory = LocalSequencer
    ) -> None:
        self._config = config
        self._pools = {p.id: p for p in config.pools}
        self._core = core(config)
        self._sequencer = sequencer(self)
        clock = self._sequencer.now_ms
        self._now = clock
        self._manager = PoolManager(config)
        self._engine_actions = EngineActions(self._manager, metrics, self._sequencer.send, clock)
        self._streams = TaskStreams(self._manager, self, clock)
        self._record = Recorder(metrics)
        self._gpus = GpuMonitor(config)
        self._gauges = Gauges(metrics, self._gpus)
        self._tasks: dict[str, TaskContext] = {}
        self._leader = False
        self._started = False
        self._poll_sent = False
        self._timer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retention_ms = config.server.transcript_retention_ms
        self._reaps: dict[str, asyncio.TimerHandle] = {}
        #: The tasks that ended lately, for the control-plane event stream.
        self.recent_ends = RecentEnds()
        self._leaving = False

    # -- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Begin: the sequencer delivers entries, and as the leader the core's first
        actions (every replica preloads) are carried out."""
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
        self._started = True
        await self._sequencer.start()

    @property
    def shutting_down(self) -> bool:
        """A shutdown has begun: nothing new is admitted."""
        return self._core.shutting_down or self._leaving

    @property
    def available(self) -> bool:
        """Entries can be ordered now: False while a shared log cannot be reached."""
        return self._sequencer.available

    def request_shutdown(self) -> None:
        """Begin a graceful shutdown; safe to call from a signal handler."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._begin_shutdown)

    def _begin_shutdown(self) -> None:
        if self.shutting_down:
            return
        if self._sequencer.shared:
            log_event(
                log,
                logging.WARNING,
                "daemon.leaving",
                "shutting down: this instance admits nothing more and hands scheduling to "
                "another; its open streams go on until they end or the grace runs out",
            )
            self._leaving = True
            assert self._loop is not None
            self._loop.create_task(self._sequencer.leave())
            return
        grace = self._config.server.shutdown_grace_ms
        log_event(
            log,
            logging.WARNING,
            "daemon.shutdown",
            f"shutting down: nothing more is admitted; running tasks have {grace} ms",
        )
        self._sequencer.send(core_inputs.ShutDown(grace, self._now()))

    async def stop(self) -> None:
        """Stop taking entries, cancel every relay and the timer, then stop every engine
        the daemon runs."""
        await self._sequencer.stop()
        self.leadership(False)
        await self._engine_actions.close()
        await self._manager.close()

    # -- leadership --------------------------------------------------------------------

    def leadership(self, leader: bool) -> None:
        """Become the leader (start the timer, carry out what the core has pending) or
        stop being it (stop relays, engine actions and the timer)."""
        if leader == self._leader:
            return
        self._lead(leader)

    def _lead(self, leader: bool) -> None:
        self._leader = leader
        if leader:
            loop = asyncio.get_running_loop()
            self._timer = loop.create_task(self._timer_loop(), name="core timer")
            self._poll_sent = False
            self._take_over()
            self._pump()
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for handle in self._reaps.values():
            handle.cancel()
        self._reaps.clear()
        for stream in self._streams.running():
            stream.cancel()
        if self._loop is not None:
            self._loop.create_task(self._release_relays())

    def _take_over(self) -> None:
        """Carry on where a scheduler that stopped left off (nothing to do on a first
        start): send again the engine actions the core still waits to hear back from,
        continue its running tasks (`streams.resume`), and reap what ended."""
        for action in self._core.in_flight():
            self._engine_actions.perform(action)
        for task_id in self._core.running():
            task = self._tasks[task_id]
            if task.dispatch is not None:
                self._streams.resume(task, task.dispatch, tuple(task.texts))
        for task in self._tasks.values():
            if task.ended_ms is not None:
                self._schedule_reap(task.task_id, task.ended_ms)

    # -- snapshots ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The core and every task record as JSON data (for a shared log's snapshots)."""
        return {
            "core": persistence.snapshot(self._core),
            "tasks": [task_records.dump(task) for task in self._tasks.values()],
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Continue from a snapshot (before `start`, or while not the leader)."""
        self._core = persistence.restore(data["core"])
        tasks = (task_records.load(record, self._pools) for record in data["tasks"])
        self._tasks = {task.task_id: task for task in tasks}

    async def _release_relays(self) -> None:
        stuck = await self._streams.close(STOP_TIMEOUT_S)
        if stuck:
            log_event(
                log,
                logging.ERROR,
                "daemon.stop",
                f"{len(stuck)} stream(s) ignored cancellation; stopping without them",
            )
        if not self._leader:
            await self._engine_actions.close()

    # -- applying entries --------------------------------------------------------------

    def apply(self, entry: Entry, local: bool) -> object:
        """Feed one entry to the core and carry out what it decided (see the module's
        theory of operation); the core's answer."""
        if isinstance(entry, TokenOut):
            return self._token(entry)
        if isinstance(entry, Admission):
            return self._admit(entry, local)
        if isinstance(entry, Embedded):
            return self._embedded(entry, local)
        if isinstance(entry, core_inputs.Reap):
            self._tasks.pop(entry.task_id, None)
            self._reaps.pop(entry.task_id, None)
            return self._core.reap(entry.task_id)
        if isinstance(entry, core_inputs.Poll):
            self._poll_sent = False
            self._wake.set()  # the timer re-reads the next deadline
        result = apply_input(self._core, entry)
        self._perform(_actions(result), entry.now_ms)
        if not isinstance(entry, core_inputs.Poll):
            self._pump()
        return result

    def _embedded(self, entry: Embedded, local: bool) -> object:
        """An embedding task's vectors go into its transcript, then it finishes like any
        task (a task canceled meanwhile has a closed transcript and stays canceled)."""
        task = self._tasks.get(entry.task_id)
        if task is not None and not task.transcript.closed:
            transcribe.embeddings(task, entry.vectors)
        finish = core_inputs.Finish(entry.task_id, FinishReason.STOP, entry.tokens_in, entry.now_ms)
        return self.apply(finish, local)

    def _token(self, entry: TokenOut) -> TokenAccepted | None:
        accepted = self._core.on_token(entry.task_id, entry.now_ms)
        if accepted is not None:
            task = self._tasks[entry.task_id]
            if self._sequencer.shared:  # only a successor scheduler re-checks them
                task.texts.append(token_key(entry.text, entry.extra))
            pool_id = task.pool.id
            transcribe.token(
                task,
                entry.text,
                accepted.index,
                entry.now_ms,
                lambda: self._core.pool_view(pool_id, entry.now_ms).queue_depth,
                entry.extra,
            )
        return accepted

    def _admit(self, entry: Admission, local: bool) -> Admitted | Refused:
        decision = self._core.submit(entry.spec, entry.now_ms)
        request = entry.request
        if isinstance(decision, Refused):
            if local:
                self._record.refused(request, decision)
            self._pump()  # a `preload: false` pool may now load
            return decision
        view = self._core.pool_view(decision.pool_id, entry.now_ms)
        task = TaskContext(
            task_id=entry.spec.task_id,
            request=request,
            pool=self._pools[decision.pool_id],
            client_id=entry.spec.client_id,
            transcript=Transcript(keep_events=entry.keep_events),
            prompt_tokens=entry.spec.prompt_tokens,
            model_id=view.model_digest or view.model_ref,
            options=entry.options,
        )
        self._tasks[task.task_id] = task
        if local:
            self._record.admitted(task, decision, view.engine_version)
        if decision.evicted is not None:
            self._perform([decision.evicted], entry.now_ms)
        self._pump()
        return decision

    def _perform(self, actions: list[Action], now: int) -> None:
        leader = self._leader
        for action in actions:
            if isinstance(action, Dispatch):
                task = self._tasks[action.task_id]
                transcribe.started(task, action, task.pool.engine.value, now)
                if leader:
                    self._record.dispatched(task, action)
                    self._streams.start(task, action)
            elif isinstance(action, TaskEnded | TaskCanceled | TaskFailed):
                self._finish(action, now)
            elif not leader:
                continue
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

    def _finish(self, outcome: TaskEnded | TaskCanceled | TaskFailed, now: int) -> None:
        """Close the task's transcript with its one terminal event; count and log it."""
        task = self._tasks.get(outcome.task_id)
        if task is None or task.transcript.closed:
            return
        depth = self._core.pool_view(outcome.pool_id, now).queue_depth
        transcribe.ended(task, outcome, depth, now)
        self.recent_ends.add(task.request.priority, outcome)
        if not self._leader:
            return
        if isinstance(outcome, TaskEnded):
            self._record.ended(task, outcome)
        elif isinstance(outcome, TaskCanceled):
            self._record.canceled(task, outcome)
        else:
            self._record.failed(task, outcome)
        self._schedule_reap(outcome.task_id, now)

    def _schedule_reap(self, task_id: str, ended_ms: int) -> None:
        """Forget a finished task once its transcript has been kept long enough."""
        if self._loop is None or task_id in self._reaps:
            return
        delay = max(0, ended_ms + self._retention_ms - self._now()) / 1000
        self._reaps[task_id] = self._loop.call_later(delay, self._reap, task_id)

    def _reap(self, task_id: str) -> None:
        self._sequencer.send(core_inputs.Reap(task_id))

    # -- the relays' sink ----------------------------------------------------------------

    def token(
        self, task_id: str, text: str, now_ms: int, extra: dict[str, Any] | None = None
    ) -> bool:
        """A relay's next token; False once the task is known to have ended."""
        result = self._sequencer.send(TokenOut(task_id, text, now_ms, extra))
        return result is PENDING or result is not None

    def finish(self, task_id: str, reason: FinishReason, tokens_in: int, now_ms: int) -> None:
        """A relay's final chunk."""
        self._sequencer.send(core_inputs.Finish(task_id, reason, tokens_in, now_ms))

    def embedded(
        self, task_id: str, vectors: tuple[tuple[float, ...], ...], tokens_in: int, now_ms: int
    ) -> None:
        """An embedding task's vectors, which end it."""
        self._sequencer.send(Embedded(task_id, vectors, tokens_in, now_ms))

    def fail(
        self,
        task_id: str,
        kind: ErrorKind,
        message: str,
        now_ms: int,
        failure_class: FailureClass | None = None,
    ) -> None:
        """A relay's engine failed the task."""
        self._sequencer.send(core_inputs.Fail(task_id, kind, message, now_ms, failure_class))

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
        if self._leaving:
            return self._refuse_here(
                request,
                ErrorKind.SHUTTING_DOWN,
                "this instance is shutting down; submit to another",
            )
        wrong = unservable(request, engine_features(request.engine))
        if wrong is not None:
            field, why = wrong
            return self._refuse_here(request, ErrorKind.INVALID_PARAMS, why, field)
        prompt_tokens = await self._prompt_tokens(request)
        spec = _task_spec(request, client_id, prompt_tokens)
        entry = Admission(spec, request, options, keep_events, self._now())
        try:
            decision = await self._sequencer.propose(entry)
        except StateUnavailable as exc:
            return self._refuse_here(
                request, ErrorKind.STATE_UNAVAILABLE, exc.consequence("admission")
            )
        assert isinstance(decision, Admitted | Refused)
        return decision

    def _refuse_here(
        self, request: TaskRequest, kind: ErrorKind, message: str, field: str | None = None
    ) -> Refused:
        """A refusal this instance answers by itself: it cannot, or will not, write, or
        the task asks its engine for what it cannot do."""
        backoff = UNAVAILABLE_BACKOFF_MS if kind in RETRIABLE else 0
        refused = Refused(
            str(request.task_id), kind, message, backoff, engine=request.engine, field=field
        )
        self._record.refused(request, refused)
        return refused

    async def _prompt_tokens(self, request: TaskRequest) -> int:
        """Prompt tokens for the budget check (ORCH-3015).

        Byte-level tokenizers never produce more tokens than UTF-8 bytes, so bytes + 2
        (for BOS/EOS) bounds the count without asking the engine. Only when that bound
        would not fit the context is the engine's tokenizer asked for the exact count.
        A chat's bound is the bytes of everything the template renders (messages, tools,
        answer form) plus a generous allowance for the template's own text; when that does
        not fit, the messages are rendered by a Ready replica and counted.
        """
        prompt = request.prompt or ""
        bound = len(prompt.encode()) + 2
        if request.inputs is not None:  # an embedding: each input is its own sequence
            prompt = max(request.inputs, key=lambda text: len(text.encode()))
            bound = len(prompt.encode()) + 2
        if request.messages is not None:
            bound = chat_prompt_bound(request)
        if bound + request.max_tokens <= request.ctx:
            return bound
        adapter = self._ready_adapter(request.engine, request.model_ref)
        if adapter is not None:
            with contextlib.suppress(EngineError):
                if request.messages is not None:
                    rendered = await adapter.apply_template(turns(prompt_messages(request)))
                    if rendered is None:
                        return bound
                    prompt = rendered
                return await adapter.count_tokens(prompt)
        return bound

    def _ready_adapter(self, engine: str, model_ref: str) -> EngineAdapter | None:
        """The adapter of a Ready replica of a pool serving ``model_ref`` on ``engine``
        now, if any: for engine calls made before admission."""
        for route in self._core.routes(model_ref):
            if route.engine != engine or not route.ready:
                continue
            view = self._core.pool_view(route.pool_id, self._now())
            for replica in view.replicas:
                adapter = self._manager.handles[route.pool_id, replica.replica_id].adapter
                if replica.usable and adapter is not None:
                    return adapter
        return None

    # -- tasks, streams, sessions ------------------------------------------------------

    def transcript(self, task_id: str) -> Transcript | None:
        """The task's transcript, while the task is known."""
        task = self._tasks.get(task_id)
        return task.transcript if task else None

    async def cancel(
        self, task_id: str, reason: CancelReason = CancelReason.CLIENT
    ) -> CancelStatus:
        """Cancel a task in any state; idempotent (ORCH-3017, ORCH-3026). When this
        returns, the core has decided the cancel: no later token is accepted."""
        outcome = await self._sequencer.propose(core_inputs.Cancel(task_id, self._now(), reason))
        assert isinstance(outcome, CancelOutcome)
        return outcome.status

    def stream_opened(self, task_id: str) -> None:
        """A stream of the task opened: a client that reconnected resumes its task."""
        self._sequencer.send(core_inputs.Watched(task_id, self._now()))

    def stream_abandoned(self, task_id: str) -> None:
        """The last open stream of an unfinished task closed: the task is canceled unless
        a stream opens again within `server.reconnect_grace_ms` (no slot leaks)."""
        self._sequencer.send(core_inputs.Unwatched(task_id, self._now()))

    def client_gone(self, task_id: str) -> None:
        """The client of a task that cannot be resumed (an OpenAI request) went away:
        cancel the task now."""
        self._sequencer.send(core_inputs.Cancel(task_id, self._now(), CancelReason.DISCONNECT))

    def session_info(self, session_id: str) -> SessionInfo | None:
        """A session's TTL, turns, KV bytes and warmth (ORCH-2004)."""
        return self._core.session_info(session_id, self._now())

    async def delete_session(self, session_id: str) -> bool:
        """Forget a session (ORCH-2005); False when it is unknown."""
        entry = core_inputs.DeleteSession(session_id, self._now())
        return await self._sequencer.propose(entry) is not None

    # -- pools (ORCH-2101..2104) -------------------------------------------------------

    async def drain(self, pool_id: str, deadline_ms: int) -> int:
        """Take the pool out of service (raises UnknownPool): no admissions, queued tasks
        canceled, running ones canceled after ``deadline_ms``; the time left of the drain
        window that applies."""
        self._core.pool_view(pool_id, self._now())  # UnknownPool before anything is sent
        await self._sequencer.propose(core_inputs.Drain(pool_id, deadline_ms, self._now()))
        return self._core.pool_view(pool_id, self._now()).drain_remaining_ms or 0

    async def reload(self, pool_id: str, model_ref: str) -> str:
        """Move the pool to ``model_ref``; the reference it resolved to. Raises UnknownPool,
        UnknownModel or NotReloadable before anything changes."""
        self._core.pool_view(pool_id, self._now())  # UnknownPool first
        target = self._manager.check_reload(pool_id, model_ref)
        try:
            await self._sequencer.propose(core_inputs.Reload(pool_id, target.ref, self._now()))
        except InvalidArgument as exc:
            raise NotReloadable(str(exc)) from None
        return target.ref

    def pool_status(self, pool_id: str) -> PoolStatus:
        """A pool's phase, models, replicas, load and SLOs (raises UnknownPool)."""
        now = self._now()
        view = self._core.pool_view(pool_id, now)
        pool = self._pools[pool_id]
        return PoolStatus(
            view,
            pool.device_kind.value,
            pool.devices,
            pool.tensor_split,
            self._core.slo(pool_id, now),
        )

    def pool_gpus(self, pool_id: str) -> PoolGpus:
        """A pool's GPUs as NVML on this host reports them (ORCH-2103, ORCH-3028)."""
        return self._gpus.pool(pool_id)

    def replica_sets(self) -> tuple[ReplicaSetStatus, ...]:
        """Replica sets with their members, slots, load and SLOs (ORCH-2104)."""
        now = self._now()
        return tuple(
            ReplicaSetStatus(view, self._core.slo(set_scope(view.set_id), now))
            for view in self._core.replica_sets()
        )

    def task_view(self, task_id: str) -> TaskView | None:
        """Where a known task is (it may have ended), or None once it was reaped; a queued
        one with its position and predicted start as of now."""
        return self._core.task(task_id, self._now())

    def pool_tasks(self, pool_id: str, queued_limit: int | None = None) -> tuple[TaskView, ...]:
        """A pool's running tasks, then its queue in serving order (the first
        `queued_limit` of it when given); raises UnknownPool."""
        return self._core.pool_tasks(pool_id, self._now(), queued_limit)

    @property
    def pool_ids(self) -> tuple[str, ...]:
        """The configured pools, in configuration order."""
        return self._core.pool_ids

    def pool_views(self) -> tuple[PoolView, ...]:
        """Every pool as the core sees it now; the scrape-time metrics read them."""
        now = self._now()
        return tuple(self._core.pool_view(pool_id, now) for pool_id in self._core.pool_ids)

    def all_routes(self) -> tuple[Route, ...]:
        """Every pool's route as applied now, grouped by model in config order."""
        return tuple(route for model in self._core.models() for route in self._core.routes(model))

    def readiness(self) -> Readiness:
        """Which pools take work, and whether every first preload has ended (ORCH-3002)."""
        return self._core.readiness()

    def refresh_gauges(self) -> None:
        """Set the gauges from the core; called when /metrics is scraped."""
        self._gauges.refresh(self._core, self._now())

    # -- the loop ----------------------------------------------------------------------

    def _pump(self) -> None:
        """As the leader: have the core polled now, and wake the timer so it re-reads the
        next deadline (one poll at a time waits to be applied)."""
        if not self._leader or not self._started:
            return
        if not self._poll_sent:
            self._poll_sent = True
            self._sequencer.send(core_inputs.Poll(self._now()))
        self._wake.set()

    async def _timer_loop(self) -> None:
        while True:
            if self._poll_sent:
                # A poll is on its way through the sequencer (a shared log takes a moment):
                # until it is applied the core's next deadline has not moved, so wait for
                # it rather than spin on a deadline that is already due.
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = self._core.next_deadline_ms()
            timeout = None if deadline is None else max(0, deadline - self._now()) / 1000
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
            # lands as the event is set (every pump sets it), and stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            if not self._poll_sent:
                self._poll_sent = True
                self._sequencer.send(core_inputs.Poll(self._now()))
