"""Rendering helpers shared by handlers: refusals, path ids, JSON bodies, the caller."""

from __future__ import annotations

import uuid
from typing import Any

from connexion.context import context
from pydantic import BaseModel
from starlette.responses import Response

from orchestrator_core import Refused, State, TaskView
from orchestratord_server.errors import error_response
from orchestratord_server.generated.models import ErrorKind, FieldError

JSON = "application/json"
ANONYMOUS = "anonymous"


def json_response(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A model as a JSON response; absent optional fields are left out, as the contract asks."""
    body = model.model_dump_json(by_alias=True, exclude_none=True)
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def refusal(decision: Refused) -> Response:
    """The ErrorEnvelope of an admission refusal, with its backpressure headers (ORCH-2007)."""
    errors = None
    if decision.field is not None:
        errors = [
            FieldError(loc=f"body.{decision.field}", msg=decision.message, type="value_error")
        ]
    extra: dict[str, object] = {}
    if decision.policy is not None:
        extra["policy"] = decision.policy.value
    if decision.retriable:
        extra["retry_after_ms"] = decision.backoff_ms
    return error_response(
        decision.status,
        decision.kind,
        decision.message,
        engine=decision.engine,
        errors=errors,
        headers=decision.headers(),
        extra=extra,
    )


def path_uuid(value: str) -> str | Response:
    """The canonical form of a uuid path id, or the 400 envelope naming `path.id`."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        error = FieldError(loc="path.id", msg="must be a UUID", type="uuid_parsing")
        return error_response(400, ErrorKind.INVALID_PARAMS, "invalid request", errors=[error])


def not_found(what: str) -> Response:
    """404 with an envelope."""
    return error_response(404, ErrorKind.NOT_FOUND, f"no such {what}")


def caller() -> str:
    """Who is calling: the key fingerprint the auth layer recorded, else anonymous."""
    user = context.get("user") if context else None
    return str(user) if user else ANONYMOUS


def live_task_fields(view: TaskView) -> dict[str, Any]:
    """A queued or running task's fields as the task read (TaskStatus) and the control
    plane (TaskSummary) both show them: a queued one's position and predicted start."""
    queued = view.state is State.QUEUED
    return {
        "task_id": view.task_id,
        "pool_id": view.pool_id,
        "replica_id": view.replica_id,
        "priority": view.priority,
        "state": view.state,
        "tokens_out": view.tokens,
        "queue_position": view.queue_position if queued else None,
        "predicted_start_ms": view.predicted_start_ms if queued else None,
        "queue_time_ms": view.queue_time_ms,
        "first_token_ms": view.time_to_first_token_ms,
    }
