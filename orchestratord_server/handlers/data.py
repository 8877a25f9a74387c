"""Data-plane handlers (OrchQueue v1): tasks, streams, cancel, sessions.

Handlers only translate: the validated request goes to the runtime, the core's decision
comes back rendered (202 with queue figures, or the refusal's envelope and backpressure
headers). A stream is the task's transcript as Server-Sent Events, from its first event or,
for a client that sends `Last-Event-ID`, from the event after that id; when the last open
stream of an unfinished task closes, the task is canceled unless a stream opens again within
`server.reconnect_grace_ms` (a client reconnecting resumes; one that left leaks no slot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from connexion import context as connexion_context
from starlette.datastructures import Headers
from starlette.responses import Response

from orchestrator_core import CancelStatus, Refused, Route, State
from orchestratord_server.body_validation import validated_body
from orchestratord_server.errors import error_response
from orchestratord_server.generated.models import (
    AdmissionResponse,
    ErrorKind,
    FieldError,
    MetricsEvent,
    SessionInfo,
    TaskRequest,
    TaskStatus,
    Workload,
)
from orchestratord_server.handlers.render import (
    caller,
    json_response,
    live_task_fields,
    not_found,
    path_uuid,
    refusal,
)
from orchestratord_server.sse_response import TranscriptResponse, raw_headers
from orchestratord_server.state import ServerState
from orchestratord_server.transcripts import Transcript

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_STREAM_HEADERS = raw_headers(SSE_HEADERS)
#: How often a stream asked for queue updates looks whether its task moved in the queue.
QUEUE_UPDATE_S = 1.0
#: The request header of a client resuming a stream: the id of the last event it has.
LAST_EVENT_ID = "Last-Event-ID"


def _input_error(request: TaskRequest) -> FieldError | None:
    """What is wrong with where a task carries its text (the contract's `oneOf`): exactly
    one of `prompt`, `messages` and `inputs`; a completion's `inputs` hold one text; an
    embedding or rerank takes `inputs`; `tools` and `tool_choice` need `messages`."""
    given = [
        name for name in ("prompt", "messages", "inputs") if getattr(request, name) is not None
    ]
    if len(given) > 1:
        message = f"give the text in one of `prompt`, `messages` and `inputs`, not {given}"
        return FieldError(loc=f"body.{given[1]}", msg=message, type="value_error")
    for name in ("tools", "tool_choice", "parallel_tool_calls"):
        if getattr(request, name) is not None and request.messages is None:
            message = f"`{name}` belongs to a chat: give the conversation in `messages`"
            return FieldError(loc=f"body.{name}", msg=message, type="value_error")
    if request.workload is Workload.COMPLETION:
        if not given:
            return FieldError(
                loc="body.prompt",
                msg="a completion needs a `prompt` (or a chat's `messages`)",
                type="missing",
            )
        if request.inputs is not None and len(request.inputs) != 1:
            message = "a completion's `inputs` hold exactly one text (its prompt)"
            return FieldError(loc="body.inputs", msg=message, type="value_error")
    elif request.inputs is None:
        message = f"a {request.workload.value} task needs `inputs`"
        return FieldError(loc="body.inputs", msg=message, type="missing")
    return None


#: Why no deployment serves rerank yet (docs/openai-compat.md).
RERANK_UNSERVED = (
    "workload 'rerank' is not served: no engine that runs here can score passages against "
    "a query (llama.cpp needs a reranker model, and none is installable on this host)"
)


def unserved_workload(workload: Workload, routes: Sequence[Route]) -> str | None:
    """Why no pool of this deployment serves ``workload``, or None when one does."""
    if workload is Workload.RERANK:
        return RERANK_UNSERVED
    if any(route.workload == workload for route in routes):
        return None
    return (
        f"workload {workload.value!r} is not served: no pool of this deployment runs it "
        f"(configure a pool with `workload: {workload.value}`)"
    )


def _as_completion(request: TaskRequest) -> TaskRequest:
    """The completion with its one text in `prompt`, however the client sent it."""
    if request.inputs is None or request.workload is not Workload.COMPLETION:
        return request
    return request.model_copy(update={"prompt": request.inputs[0], "inputs": None})


def _changed(read: Callable[[], bytes | None], shown: bytes) -> Callable[[], bytes | None]:
    """``read`` made to return only what differs from what it returned before (and from
    ``shown``); None otherwise."""

    def changed() -> bytes | None:
        nonlocal shown
        update = read()
        if update is None or update == shown:
            return None
        shown = update
        return update

    return changed


def _resume_at(transcript: Transcript) -> int | Response:
    """The index of the first frame to send: 0, or the one after `Last-Event-ID`.

    The contract has already checked that the header is a decimal number. An id past the
    terminal event of an ended task names no event of it: 400 naming the header. An id
    the transcript has not reached yet is waited for.
    """
    last = Headers(scope=connexion_context.scope).get(LAST_EVENT_ID)
    if last is None:
        return 0
    start = int(last) + 1
    recorded = len(transcript.frames)
    if transcript.closed and start > recorded:
        message = f"{LAST_EVENT_ID} {last} is past the stream's last event ({recorded - 1})"
        error = FieldError(loc=f"header.{LAST_EVENT_ID}", msg=message, type="value_error")
        return error_response(400, ErrorKind.INVALID_PARAMS, message, errors=[error])
    return start


class DataPlane:
    """Handlers for data.yaml's operations (ORCH-2001..2005)."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    async def createTask(self) -> Response:
        """Admit a task (ORCH-2001, ORCH-2007, ORCH-3014, ORCH-3015, ORCH-3024)."""
        request: TaskRequest = validated_body(connexion_context.scope)
        wrong = _input_error(request)
        if wrong is not None:
            return error_response(
                400,
                ErrorKind.INVALID_PARAMS,
                wrong.msg,
                engine=request.engine.value,
                errors=[wrong],
            )
        unserved = unserved_workload(request.workload, self._state.runtime.all_routes())
        if unserved is not None:
            return error_response(
                501, ErrorKind.NOT_IMPLEMENTED, unserved, engine=request.engine.value
            )
        request = _as_completion(request)
        decision = await self._state.runtime.submit(request, caller())
        if isinstance(decision, Refused):
            return refusal(decision)
        body = AdmissionResponse(
            task_id=request.task_id,
            queue_position=decision.queue_position,
            predicted_start_ms=decision.predicted_start_ms,
            backoff_ms=decision.backoff_ms,
        )
        return json_response(body, 202, decision.headers())

    async def streamTask(self, id: str, queue_updates: bool = False) -> Response:
        """The task's events as SSE, from the first or after `Last-Event-ID` (ORCH-2002);
        with `queue_updates`, id-less `metrics` events while it waits (ORCH-3029)."""
        task_id = path_uuid(id)
        if isinstance(task_id, Response):
            return task_id
        transcript = self._state.runtime.transcript(task_id)
        if transcript is None:
            return not_found("task")
        start = _resume_at(transcript)
        if isinstance(start, Response):
            return start
        if not transcript.closed:
            self._state.runtime.stream_opened(task_id)
        first = self._queue_update(task_id) if queue_updates else None
        return TranscriptResponse(
            transcript,
            start,
            _STREAM_HEADERS,
            on_end=lambda: self._stream_closed(task_id, transcript),
            first=first,
            idle=None if first is None else _changed(lambda: self._queue_update(task_id), first),
            idle_s=QUEUE_UPDATE_S,
        )

    def _stream_closed(self, task_id: str, transcript: Transcript) -> None:
        if not transcript.closed and transcript.subscribers == 0:
            self._state.runtime.stream_abandoned(task_id)

    def _queue_update(self, task_id: str) -> bytes | None:
        """A `metrics` frame without an id: where the task is in the queue now and when it
        is predicted to start; None once it has left the queue."""
        view = self._state.runtime.task_view(task_id)
        if view is None or view.state is not State.QUEUED:
            return None
        data = MetricsEvent(
            queue_position=view.queue_position, predicted_start_ms=view.predicted_start_ms
        ).model_dump_json(exclude_none=True)
        return f"event: metrics\ndata: {data}\n\n".encode()

    async def getTask(self, id: str) -> Response:
        """A task's state now; a queued one's position and predicted start as of now
        (ORCH-3029)."""
        task_id = path_uuid(id)
        if isinstance(task_id, Response):
            return task_id
        view = self._state.runtime.task_view(task_id)
        if view is None:
            return not_found("task")
        body = TaskStatus(**live_task_fields(view))
        return json_response(body)

    async def cancelTask(self, id: str) -> Response:
        """Cancel; idempotent, and no token follows the 204 (ORCH-2003, ORCH-3026)."""
        task_id = path_uuid(id)
        if isinstance(task_id, Response):
            return task_id
        if await self._state.runtime.cancel(task_id) is CancelStatus.UNKNOWN:
            return not_found("task")
        return Response(status_code=204)

    async def getSession(self, id: str) -> Response:
        """TTL, turns, KV bytes and warmth of a session (ORCH-2004)."""
        session_id = path_uuid(id)
        if isinstance(session_id, Response):
            return session_id
        info = self._state.runtime.session_info(session_id)
        if info is None:
            return not_found("session")
        body = SessionInfo(
            ttl_ms_remaining=info.ttl_ms_remaining,
            turns=info.turns,
            kv_bytes=info.kv_bytes,
            kv_warmth=info.kv_warmth,
        )
        return json_response(body)

    async def deleteSession(self, id: str) -> Response:
        """Forget a session and its KV accounting (ORCH-2005)."""
        session_id = path_uuid(id)
        if isinstance(session_id, Response):
            return session_id
        if not await self._state.runtime.delete_session(session_id):
            return not_found("session")
        return Response(status_code=204)
