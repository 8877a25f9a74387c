"""OpenAI-compatible handlers: completions, chat completions and the model list.

Each completion request is validated against the contract, mapped onto one OrchQueue task
(`openai_compat.requests`) and submitted through the same runtime as `POST /v1/tasks`:
same admission, priority, queues, placement and metrics. Its transcript keeps typed
events, which are rendered as OpenAI's answer or stream chunks (`openai_compat.render`).
A client that goes away before the task ended cancels it, streaming or not, so no slot
is held for nobody (ORCH-3017). Failures answer in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from connexion import context as connexion_context
from starlette.datastructures import Headers
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from orchestrator_core import Refused, not_served
from orchestratord_server.adapters.base import EngineError
from orchestratord_server.body_validation import validated_body
from orchestratord_server.generated.models import ErrorKind, OpenAIChatCompletionRequest
from orchestratord_server.handlers.render import caller
from orchestratord_server.openai_compat import errors
from orchestratord_server.openai_compat.render import ChunkWriter, Kind, Outcome
from orchestratord_server.openai_compat.requests import (
    BadRequest,
    OpenAIRequest,
    Target,
    chat_turns,
    completion_prompt,
    engine_options,
    plain_chat_prompt,
    priority,
    target,
    task_request,
)
from orchestratord_server.state import ServerState
from orchestratord_server.transcripts import Transcript

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PRIORITY_HEADER = "x-priority"
OWNER = "orchestratord"


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


class OpenAICompat:
    """Handlers for the OpenAI-compatible operations of data.yaml."""

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._created = int(time.time())

    async def listModels(self) -> Response:
        """The models the pools serve now (ORCH-3007): after a reload, the new one."""
        models = self._state.runtime.models()
        data = [
            {"id": model, "object": "model", "created": self._created, "owned_by": OWNER}
            for model in models
        ]
        body = json.dumps({"object": "list", "data": data}, ensure_ascii=False)
        return Response(body, media_type=errors.JSON)

    async def createCompletion(self) -> Response:
        """OpenAI completions as an OrchQueue task (ORCH-2001, ORCH-2007, ORCH-3017)."""
        return await self._complete("completion")

    async def createChatCompletion(self) -> Response:
        """OpenAI chat completions as an OrchQueue task (ORCH-2001, ORCH-2007, ORCH-3017)."""
        return await self._complete("chat")

    async def _complete(self, kind: Kind) -> Response:
        created = int(time.time())
        request: OpenAIRequest = validated_body(connexion_context.scope)
        runtime = self._state.runtime
        where = target(request.model, runtime.routes(request.model))
        if where is None:
            return errors.error_response(
                404, not_served(request.model), code=ErrorKind.NOT_FOUND.value, param="model"
            )
        try:
            chosen = priority(request, Headers(scope=connexion_context.scope).get(PRIORITY_HEADER))
            prompt = await self._prompt(request, where)
        except BadRequest as exc:
            return errors.error_response(
                400, exc.message, code=ErrorKind.INVALID_PARAMS.value, param=exc.param
            )
        except EngineError as exc:
            status = 400 if exc.kind == ErrorKind.INVALID_PARAMS.value else 502
            return errors.error_response(status, exc.message, code=exc.kind)
        task = task_request(request, where, prompt, chosen)
        decision = await runtime.submit(task, caller(), engine_options(request), keep_events=True)
        if isinstance(decision, Refused):
            return errors.refusal(decision)
        task_id = str(task.task_id)
        transcript = runtime.transcript(task_id)
        assert transcript is not None, "an admitted task has a transcript"
        if request.stream:
            options = request.stream_options
            writer = ChunkWriter(
                kind,
                task_id,
                created,
                request.model,
                include_usage=bool(options and options.include_usage),
            )
            return StreamingResponse(
                self._stream(task_id, transcript, writer),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
            )
        await self._until_ended(task_id, transcript)
        outcome = Outcome()
        outcome.add(transcript.events or ())
        return outcome.response(kind, task_id, created, request.model)

    async def _prompt(self, request: OpenAIRequest, where: Target) -> str:
        """The prompt text. A chat is rendered by the model's chat template on a Ready
        replica, or plainly when its engine has no template rendering. With no Ready
        replica there is nothing to ask: the plain rendering is returned and the core
        refuses the task (ORCH-3010) before anything uses it. Messages that render to no
        text at all cannot produce a result: BadRequest on `messages`."""
        if not isinstance(request, OpenAIChatCompletionRequest):
            return completion_prompt(request)
        turns = chat_turns(request.messages)
        rendered = await self._state.runtime.chat_prompt(where.engine, where.model_ref, turns)
        prompt = rendered if rendered is not None else plain_chat_prompt(turns)
        if not prompt:
            raise BadRequest("the messages render to an empty prompt", "messages")
        return prompt

    async def _stream(
        self, task_id: str, transcript: Transcript, writer: ChunkWriter
    ) -> AsyncIterator[bytes]:
        try:
            async with contextlib.aclosing(transcript.follow_events()) as batches:
                async for batch in batches:
                    frames = writer.render(batch)
                    if frames:
                        yield frames
        finally:
            self._release(task_id, transcript)

    async def _until_ended(self, task_id: str, transcript: Transcript) -> None:
        """Wait for the task's terminal event, following it as a subscriber; a client
        that leaves first cancels the task, which then ends at once."""

        async def follow() -> None:
            async with contextlib.aclosing(transcript.follow_events()) as batches:
                async for _ in batches:
                    pass

        follower = asyncio.ensure_future(follow())
        watcher = asyncio.ensure_future(_disconnected(connexion_context.receive))
        try:
            await asyncio.wait((follower, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (follower, watcher):
                waiting.cancel()
            await asyncio.gather(follower, watcher, return_exceptions=True)
            self._release(task_id, transcript)

    def _release(self, task_id: str, transcript: Transcript) -> None:
        """Cancel the task when its last follower left before it ended (no slot leaks)."""
        if not transcript.closed and transcript.subscribers == 0:
            self._state.runtime.client_gone(task_id)
