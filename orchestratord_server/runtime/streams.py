"""Relaying a dispatched task's tokens from its replica's engine, on the leader.

One asyncio task per running task. Each token goes to the `TokenSink` (the runtime), which
offers it to the core; the core records it only if it accepts it, so after a cancel no
token is ever emitted (ORCH-3026), and the relay stops as soon as it learns the task
ended. The engine's final chunk finishes the task; an engine failure fails it, and a
broken stream (WORKER_RESET) also tells the core its replica is lost, with the class of
the failure when an engine the daemon runs exited (ORCH-3038, ORCH-3053). Cancelling a
stream's asyncio task (an `Abort`) closes the upstream request, which frees the engine's
slot (ORCH-3017).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from orchestrator_core import Dispatch, ErrorKind, FailureClass, FinishReason
from orchestratord_server.adapters.base import EngineError, FinalChunk, StreamChunk
from orchestratord_server.generated.models import Determinism, Workload
from orchestratord_server.logs import log_event
from orchestratord_server.runtime.answers import ToolAnswerChunks, engine_request
from orchestratord_server.runtime.pool_manager import PoolManager
from orchestratord_server.runtime.replicas import PreloadFailed
from orchestratord_server.runtime.tasks import TaskContext, token_key


class TokenSink(Protocol):
    """Where a relay hands what its engine produced."""

    def token(
        self, task_id: str, text: str, now_ms: int, extra: dict[str, Any] | None = None
    ) -> bool:
        """The next token (``extra``: its tool-call parts and log-probabilities); False
        once the task is known to have ended (stop relaying)."""
        ...

    def finish(self, task_id: str, reason: FinishReason, tokens_in: int, now_ms: int) -> None:
        """The engine's final chunk."""
        ...

    def embedded(
        self, task_id: str, vectors: tuple[tuple[float, ...], ...], tokens_in: int, now_ms: int
    ) -> None:
        """An embedding task's vectors: its whole result, which also ends it."""
        ...

    def fail(
        self,
        task_id: str,
        kind: ErrorKind,
        message: str,
        now_ms: int,
        failure_class: FailureClass | None = None,
    ) -> None:
        """The engine failed the task."""
        ...


log = logging.getLogger("orchestratord.engine")


class TaskStreams:
    """The engine streams of the running tasks."""

    def __init__(self, manager: PoolManager, sink: TokenSink, clock: Callable[[], int]) -> None:
        self._manager = manager
        self._sink = sink
        self._clock = clock
        self._streams: dict[str, asyncio.Task[None]] = {}

    def start(self, task: TaskContext, dispatch: Dispatch) -> None:
        """Start relaying a task the core dispatched (an embedding task: computing it)."""
        if task.request.workload is Workload.EMBEDDING:
            self._run(dispatch.task_id, self._embed(task, dispatch))
        else:
            self._run(dispatch.task_id, self._stream(task, dispatch))

    def resume(self, task: TaskContext, dispatch: Dispatch, published: tuple[str, ...]) -> None:
        """Continue a running task whose relay died with the scheduler that ran it: re-run
        it on the same replica with the same seed, check the tokens already `published`
        against the re-run's and skip them, then relay the rest. Where that cannot be
        exact (a `best_effort` task, another engine build or model on the replica, a
        token that differs, a re-run that ends sooner) the task fails MIGRATION_FAILED,
        naming the cause. An embedding task has published nothing: it is computed again."""
        if task.request.workload is Workload.EMBEDDING:
            self._run(dispatch.task_id, self._embed(task, dispatch))
        else:
            self._run(dispatch.task_id, self._resume(task, dispatch, published))

    def _run(self, task_id: str, relay: Coroutine[Any, Any, None]) -> None:
        stream = asyncio.get_running_loop().create_task(relay, name=task_id)
        self._streams[task_id] = stream
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

    async def _resume(
        self, task: TaskContext, dispatch: Dispatch, published: tuple[str, ...]
    ) -> None:
        task_id, key = dispatch.task_id, (dispatch.pool_id, dispatch.replica_id)
        cause = None
        if task.request.determinism is Determinism.BEST_EFFORT:
            cause = (
                "a best_effort task reuses the engine's prompt cache and cannot be re-run exactly"
            )
        else:
            try:
                props = await self._manager.handles[key].engine().props()
            except (EngineError, PreloadFailed) as exc:
                cause = f"replica {dispatch.replica_id} does not answer ({exc})"
            else:
                digest = dispatch.model_digest
                if props.engine_version != dispatch.engine_version or (
                    digest is not None and props.model_digest != digest
                ):
                    cause = (
                        f"replica {dispatch.replica_id} now runs {props.engine_version} with "
                        f"model {props.model_digest}, not the build and model the task started on"
                    )
        if cause is not None:
            self._sink.fail(task_id, ErrorKind.MIGRATION_FAILED, _migration(cause), self._clock())
            return
        log_event(
            log,
            logging.INFO,
            "task.migrating",
            f"task {task_id}: re-running it to continue after token {len(published)}",
            task_id=task_id,
            pool_id=dispatch.pool_id,
            replica_id=dispatch.replica_id,
        )
        await self._stream(task, dispatch, published)

    async def _stream(
        self, task: TaskContext, dispatch: Dispatch, published: tuple[str, ...] = ()
    ) -> None:
        task_id, sink, clock = dispatch.task_id, self._sink, self._clock
        key = (dispatch.pool_id, dispatch.replica_id)
        tool_answer = ToolAnswerChunks(task_id, task.request) if task.request.tools else None
        relay = _Relay(task_id, sink, clock, published)
        take = relay.take if tool_answer is None else _through(tool_answer, relay.take)
        try:
            engine = self._manager.handles[key].engine()
            await engine.relay(await engine_request(engine, task, dispatch.seed), take)
        except EngineError as exc:
            await self._failed(task_id, key, exc)
        except PreloadFailed as exc:
            sink.fail(task_id, ErrorKind.WORKER_RESET, str(exc), clock())

    async def _embed(self, task: TaskContext, dispatch: Dispatch) -> None:
        key = (dispatch.pool_id, dispatch.replica_id)
        try:
            result = await self._manager.handles[key].engine().embed(task.request.inputs or ())
        except EngineError as exc:
            await self._failed(dispatch.task_id, key, exc)
        except PreloadFailed as exc:
            self._sink.fail(dispatch.task_id, ErrorKind.WORKER_RESET, str(exc), self._clock())
        else:
            self._sink.embedded(dispatch.task_id, result.vectors, result.tokens_in, self._clock())

    async def _failed(self, task_id: str, key: tuple[str, str], exc: EngineError) -> None:
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
        self._sink.fail(task_id, ErrorKind(exc.kind), message, self._clock(), failure)

    async def close(self, timeout_s: float) -> list[asyncio.Task[None]]:
        """Cancel every stream; the ones that ignored it within ``timeout_s``."""
        running = self.running()
        for stream in running:
            stream.cancel()
        if not running:
            return []
        _, stuck = await asyncio.wait(running, timeout=timeout_s)
        return list(stuck)


class _Relay:
    """Hands one task's chunks to the sink: a re-run's first chunks are checked against
    the tokens already `published` and skipped, the rest are tokens until the final
    chunk finishes the task."""

    def __init__(
        self,
        task_id: str,
        sink: TokenSink,
        clock: Callable[[], int],
        published: tuple[str, ...],
    ) -> None:
        self._task_id, self._sink, self._clock = task_id, sink, clock
        self._published = published
        self._skip = len(published)

    def take(self, chunk: StreamChunk) -> bool:
        """Relay ``chunk``; False once the task ended (or its re-run diverged)."""
        task_id, sink, clock = self._task_id, self._sink, self._clock
        if self._skip:
            index = len(self._published) - self._skip
            if isinstance(chunk, FinalChunk) or (
                token_key(chunk.text, chunk.extra()) != self._published[index]
            ):
                cause = f"the re-run differs from the published stream at token {index}"
                sink.fail(task_id, ErrorKind.MIGRATION_FAILED, _migration(cause), clock())
                return False
            self._skip -= 1
            return True
        if isinstance(chunk, FinalChunk):
            sink.finish(task_id, FinishReason(chunk.finish_reason), chunk.tokens_in, clock())
            return False
        return sink.token(task_id, chunk.text, clock(), chunk.extra())


def _through(
    tool_answer: ToolAnswerChunks, take: Callable[[StreamChunk], bool]
) -> Callable[[StreamChunk], bool]:
    """``take`` behind the tool-call parser: the chunks it makes of each received one."""
    feed = tool_answer.feed

    def take_parsed(received: StreamChunk) -> bool:
        return all(take(chunk) for chunk in feed(received))

    return take_parsed


def _migration(cause: str) -> str:
    return f"the scheduler relaying this task stopped and it could not be continued: {cause}"
