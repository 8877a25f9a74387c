"""Streaming a dispatched task from its replica's engine into its transcript, through the core.

One asyncio task per running task. Each token is offered to the core first (`on_token`)
and recorded only if the core accepts it, so after a cancel no token is ever emitted
(ORCH-3026). The engine's final chunk ends the task (`on_finish`); an engine failure fails
it (`on_failure`), and a broken stream (WORKER_RESET) also tells the core its replica is
lost, with the class of the failure when an engine the daemon runs exited (ORCH-3038,
ORCH-3053). What the core decides then goes to `settle`, which the runtime carries out.
A `metrics` event follows the first token and then comes at most once a second.
Cancelling a stream's asyncio task (an `Abort`) closes the upstream request, which frees
the engine's slot (ORCH-3017).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from orchestrator_core import (
    Action,
    Dispatch,
    ErrorKind,
    FinishReason,
    Orchestrator,
)
from orchestratord_server.adapters.base import (
    CompletionRequest,
    EngineError,
    FinalChunk,
    sampler_profile,
)
from orchestratord_server.generated.models import Determinism
from orchestratord_server.logs import log_event
from orchestratord_server.runtime.clock import now_ms
from orchestratord_server.runtime.pool_manager import PoolManager
from orchestratord_server.runtime.replicas import PreloadFailed
from orchestratord_server.runtime.tasks import TaskContext
from orchestratord_server.transcripts import TaskEvent, emit, token_frame

Settle = Callable[[list[Action]], None]

#: A running task's stream gets a `metrics` event after its first token, then at most
#: once per this many milliseconds (ORCH-2002).
METRICS_INTERVAL_MS = 1_000

log = logging.getLogger("orchestratord.engine")


class TaskStreams:
    """The engine streams of the running tasks."""

    def __init__(self, core: Orchestrator, manager: PoolManager, settle: Settle) -> None:
        self._core = core
        self._manager = manager
        self._settle = settle
        self._streams: dict[str, asyncio.Task[None]] = {}

    def start(self, task: TaskContext, dispatch: Dispatch) -> None:
        """Start streaming a task the core just dispatched."""
        stream = asyncio.get_running_loop().create_task(
            self._stream(task, dispatch), name=dispatch.task_id
        )
        self._streams[dispatch.task_id] = stream
        stream.add_done_callback(self._forget)

    def abort(self, task_id: str) -> None:
        """Close a task's upstream request (it ended otherwise)."""
        stream = self._streams.get(task_id)
        if stream is not None:
            stream.cancel()

    def _forget(self, stream: asyncio.Task[None]) -> None:
        self._streams.pop(stream.get_name(), None)

    def running(self) -> list[asyncio.Task[None]]:
        """The stream tasks still running (for shutdown)."""
        return list(self._streams.values())

    async def _stream(self, task: TaskContext, dispatch: Dispatch) -> None:
        task_id, core = dispatch.task_id, self._core
        request = task.request
        key = (dispatch.pool_id, dispatch.replica_id)
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
        outcome: list[Action] = []
        started_ms = metrics_due_ms = now_ms()
        try:
            chunks = self._manager.handles[key].engine().stream(completion)
            try:
                async for chunk in chunks:
                    now = now_ms()
                    if isinstance(chunk, FinalChunk):
                        ended = core.on_finish(
                            task_id, FinishReason(chunk.finish_reason), chunk.tokens_in, now
                        )
                        outcome = [ended] if ended is not None else []
                        break
                    accepted = core.on_token(task_id, now)
                    if accepted is None:
                        break
                    frame = token_frame(chunk.text, accepted.index)
                    if events is None:
                        transcript.append(frame)
                    else:
                        token = {"t": chunk.text, "i": accepted.index}
                        transcript.append(frame, TaskEvent("token", token))
                    if now >= metrics_due_ms:
                        metrics_due_ms = now + METRICS_INTERVAL_MS
                        self._progress(task, dispatch, accepted.index + 1, now - started_ms)
            finally:
                await chunks.aclose()
        except EngineError as exc:
            outcome = await self._failed(task_id, key, exc)
        except PreloadFailed as exc:
            failed = core.on_failure(task_id, ErrorKind.WORKER_RESET, str(exc), now_ms())
            outcome = [failed] if failed is not None else []
        self._settle(outcome)

    def _progress(self, task: TaskContext, dispatch: Dispatch, tokens: int, decode_ms: int) -> None:
        """The periodic `metrics` event of a running task (ORCH-2002)."""
        depth = self._core.pool_view(dispatch.pool_id, now_ms()).queue_depth
        metrics = {
            "tokens_out": tokens,
            "decode_ms": decode_ms,
            "queue_depth": depth,
            "kv_warmth": dispatch.kv_warmth,
        }
        emit(task.transcript, "metrics", metrics)

    async def _failed(self, task_id: str, key: tuple[str, str], exc: EngineError) -> list[Action]:
        """The engine failed the task; a broken stream also loses its replica. The client
        sees the error's message; its detail (exception text, the engine's raw frame) goes
        to the log only."""
        if exc.detail is not None:
            pool_id, replica_id = key
            message = f"engine error of task {task_id}: {exc.message}"
            fields = {"task_id": task_id, "pool_id": pool_id, "replica_id": replica_id}
            log_event(log, logging.WARNING, "engine.error", message, detail=exc.detail, **fields)
        failure = None
        message = exc.message
        if exc.kind == ErrorKind.WORKER_RESET:
            failure = await self._manager.reset_class(key)
            if failure is not None:
                message = f"{message} (engine exited: {failure})"
        failed = self._core.on_failure(task_id, ErrorKind(exc.kind), message, now_ms(), failure)
        return [failed] if failed is not None else []

    async def close(self, timeout_s: float) -> list[asyncio.Task[None]]:
        """Cancel every stream; the ones that ignored it within ``timeout_s``."""
        running = self.running()
        for stream in running:
            stream.cancel()
        if not running:
            return []
        _, stuck = await asyncio.wait(running, timeout=timeout_s)
        return list(stuck)
