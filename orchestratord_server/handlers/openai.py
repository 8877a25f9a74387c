"""OpenAI-compatible handlers: completions, chat completions and the models.

Each completion request is checked against the leniency rules (`openai_compat.leniency`),
its model name resolved (`openai_compat.names`), mapped onto one OrchQueue task per choice
(`openai_compat.requests`) and submitted through the same runtime as `POST /v1/tasks`:
same admission, priority, queues, placement and metrics. When one choice's task is
refused, the ones already admitted are canceled and the refusal is the answer. The
transcripts keep typed events, which are rendered as OpenAI's answer or stream chunks
(`openai_compat.render`). A client that goes away before the tasks ended cancels them,
streaming or not, so no slot is held for nobody (ORCH-3017). Failures answer in OpenAI's
error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from connexion import context as connexion_context
from starlette.datastructures import Headers
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from orchestrator_core import Refused, not_served
from orchestratord_server.body_validation import validated_body
from orchestratord_server.generated.models import (
    ErrorKind,
    OpenAIEmbeddingRequest,
    TaskRequest,
    Workload,
)
from orchestratord_server.handlers.render import caller
from orchestratord_server.openai_compat import embeddings, errors
from orchestratord_server.openai_compat.leniency import (
    BadRequest,
    OpenAIRequest,
    UnknownFields,
    normalized,
)
from orchestratord_server.openai_compat.names import ModelNames
from orchestratord_server.openai_compat.render import ChunkWriter, Kind, Outcome
from orchestratord_server.openai_compat.requests import (
    Target,
    embedding_inputs,
    embedding_task,
    engine_options,
    priority,
    target,
    task_requests,
)
from orchestratord_server.runtime.tasks import NO_ENGINE_OPTIONS, EngineOptions
from orchestratord_server.state import ServerState
from orchestratord_server.transcripts import TaskEvent, Transcript

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PRIORITY_HEADER = "x-priority"
OWNER = "orchestratord"
_ROUTES = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}


def _bad_request(exc: BadRequest) -> Response:
    return errors.error_response(
        400, exc.message, code=ErrorKind.INVALID_PARAMS.value, param=exc.param
    )


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


class OpenAICompat:
    """Handlers for the OpenAI-compatible operations of data.yaml."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._created = int(time.time())
        self._names = ModelNames(state.config.pools)
        self._unknown = UnknownFields(strict=state.config.openai.strict)

    def _model(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self._created, "owned_by": OWNER}

    async def listModels(self) -> Response:
        """The models the pools serve now, by served name (ORCH-3007): after a reload of a
        pool without a served name, the new model."""
        listing = self._names.listing(self._state.runtime.all_routes())
        data = [self._model(name) for name in listing]
        body = json.dumps({"object": "list", "data": data}, ensure_ascii=False)
        return Response(body, media_type=errors.JSON)

    async def retrieveModel(self, model: str) -> Response:
        """One model by its served name, an alias or its reference."""
        if not self._names.routes(model, self._state.runtime.all_routes()):
            return errors.error_response(
                404, not_served(model), code=ErrorKind.NOT_FOUND.value, param="model"
            )
        body = json.dumps(self._model(model), ensure_ascii=False)
        return Response(body, media_type=errors.JSON)

    async def createCompletion(self) -> Response:
        """OpenAI completions as OrchQueue tasks (ORCH-2001, ORCH-2007, ORCH-3017)."""
        return await self._complete("completion")

    async def createChatCompletion(self) -> Response:
        """OpenAI chat completions as OrchQueue chat tasks (ORCH-2001, ORCH-2007,
        ORCH-3017)."""
        return await self._complete("chat")

    async def createEmbedding(self) -> Response:
        """OpenAI embeddings as one OrchQueue embedding task (ORCH-2001, ORCH-2007,
        ORCH-3017)."""
        request: OpenAIEmbeddingRequest = validated_body(connexion_context.scope)
        try:
            self._unknown.check("/v1/embeddings", (request.model_extra or {}).keys())
            inputs = embedding_inputs(request)
            where = self._where(request.model, Workload.EMBEDDING)
            if isinstance(where, Response):
                return where
            header = Headers(scope=connexion_context.scope).get(PRIORITY_HEADER)
            task = embedding_task(inputs, where, priority(request, header))
        except BadRequest as exc:
            return _bad_request(exc)
        admitted = await self._admit([task], NO_ENGINE_OPTIONS)
        if isinstance(admitted, Response):
            return admitted
        await self._until_ended([str(task.task_id)], admitted)
        return embeddings.response(
            admitted[0].events or (), request.model, request.encoding_format, request.dimensions
        )

    async def _admit(
        self, tasks: Sequence[TaskRequest], options: EngineOptions
    ) -> list[Transcript] | Response:
        """Submit every task; their transcripts, or, when one is refused, the refusal
        (the tasks already admitted are canceled: no choice runs for nobody)."""
        runtime = self._state.runtime
        transcripts: list[Transcript] = []
        for task in tasks:
            decision = await runtime.submit(task, caller(), options, keep_events=True)
            if isinstance(decision, Refused):
                for admitted in tasks[: len(transcripts)]:
                    runtime.client_gone(str(admitted.task_id))
                return errors.refusal(decision)
            transcript = runtime.transcript(str(task.task_id))
            assert transcript is not None, "an admitted task has a transcript"
            transcripts.append(transcript)
        return transcripts

    def _where(self, model: str, workload: Workload) -> Target | Response:
        """Where ``model`` runs ``workload``; else 404 for a model no pool serves, or 400
        for one whose pools serve another workload (a chat sent to an embedding model, or
        the other way round)."""
        routes = self._names.routes(model, self._state.runtime.all_routes())
        where = target(routes, workload)
        if where is not None:
            return where
        if routes:
            return errors.error_response(
                400,
                f"model {model!r} does not serve {workload.value} here: its pools serve "
                "another workload",
                code=ErrorKind.INVALID_PARAMS.value,
                param="model",
            )
        return errors.error_response(
            404, not_served(model), code=ErrorKind.NOT_FOUND.value, param="model"
        )

    async def _complete(self, kind: Kind) -> Response:
        created = int(time.time())
        request: OpenAIRequest = validated_body(connexion_context.scope)
        try:
            self._unknown.check(_ROUTES[kind], (request.model_extra or {}).keys())
            request = normalized(request)
            where = self._where(request.model, Workload.COMPLETION)
            if isinstance(where, Response):
                return where
            header = Headers(scope=connexion_context.scope).get(PRIORITY_HEADER)
            tasks = task_requests(request, where, priority(request, header))
        except BadRequest as exc:
            return _bad_request(exc)
        transcripts = await self._admit(tasks, engine_options(request))
        if isinstance(transcripts, Response):
            return transcripts
        ids = [str(task.task_id) for task in tasks]
        if request.stream:
            stream_options = request.stream_options
            writer = ChunkWriter(
                kind,
                ids[0],
                created,
                request.model,
                include_usage=bool(stream_options and stream_options.include_usage),
                choices=len(tasks),
            )
            return StreamingResponse(
                self._stream(ids, transcripts, writer),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
            )
        await self._until_ended(ids, transcripts)
        outcome = Outcome(len(tasks))
        for index, transcript in enumerate(transcripts):
            outcome.add(transcript.events or (), index)
        return outcome.response(kind, ids[0], created, request.model)

    async def _stream(
        self, ids: Sequence[str], transcripts: Sequence[Transcript], writer: ChunkWriter
    ) -> AsyncIterator[bytes]:
        """The chunks of every choice as their events arrive, until the writer closed the
        stream (`[DONE]`, or an error frame). Each choice is followed by a task of its own,
        which cancels its OrchQueue task when it stops following before the task ended
        (the client went away: the server cancels this generator, and awaiting inside
        its cleanup would be cancelled again)."""
        batches: asyncio.Queue[tuple[int, list[TaskEvent]]] = asyncio.Queue()

        async def follow(index: int, transcript: Transcript) -> None:
            try:
                async with contextlib.aclosing(transcript.follow_events()) as followed:
                    async for batch in followed:
                        await batches.put((index, list(batch)))
            finally:
                self._release([ids[index]], [transcript])

        followers = [
            asyncio.ensure_future(follow(index, transcript))
            for index, transcript in enumerate(transcripts)
        ]
        try:
            while not writer.closed:
                index, batch = await batches.get()
                frames = writer.render(batch, index)
                if frames:
                    yield frames
        finally:
            for follower in followers:
                follower.cancel()

    async def _until_ended(self, ids: Sequence[str], transcripts: Sequence[Transcript]) -> None:
        """Wait for every task's terminal event, following each as a subscriber; a client
        that leaves first cancels the tasks, which then end at once."""

        async def follow(transcript: Transcript) -> None:
            async with contextlib.aclosing(transcript.follow_events()) as batches:
                async for _ in batches:
                    pass

        followers = asyncio.gather(*(follow(transcript) for transcript in transcripts))
        watcher = asyncio.ensure_future(_disconnected(connexion_context.receive))
        try:
            await asyncio.wait((followers, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._stop([followers, watcher])
            self._release(ids, transcripts)

    @staticmethod
    async def _stop(waiting: Sequence[asyncio.Future[Any]]) -> None:
        for future in waiting:
            future.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

    def _release(self, ids: Sequence[str], transcripts: Sequence[Transcript]) -> None:
        """Cancel each task whose last follower left before it ended (no slot leaks)."""
        for task_id, transcript in zip(ids, transcripts, strict=True):
            if not transcript.closed and transcript.subscribers == 0:
                self._state.runtime.client_gone(task_id)
