"""Build a completion `TaskRequest` in one call, with fresh ids and working defaults."""

from __future__ import annotations

import uuid
from typing import Any

from orchestratord_client.generated.models import Engine, Priority, TaskRequest, Workload

DEFAULT_MAX_TOKENS = 128
DEFAULT_CTX = 1024
DEFAULT_DEADLINE_MS = 60_000


def completion(
    prompt: str,
    *,
    model_ref: str,
    engine: Engine | str = Engine.LLAMACPP,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    ctx: int = DEFAULT_CTX,
    priority: Priority | str = Priority.INTERACTIVE,
    deadline_ms: int = DEFAULT_DEADLINE_MS,
    session_id: uuid.UUID | str | None = None,
    task_id: uuid.UUID | str | None = None,
    **fields: Any,
) -> TaskRequest:
    """A completion task; a new task id and session id unless given.

    Any other TaskRequest field (`seed`, `determinism`, `kv_hint`, ...) passes through
    `fields` and is validated by the generated model.
    """
    return TaskRequest.model_validate(
        {
            "task_id": task_id or uuid.uuid4(),
            "session_id": session_id or uuid.uuid4(),
            "workload": Workload.COMPLETION,
            "model_ref": model_ref,
            "engine": engine,
            "ctx": ctx,
            "priority": priority,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "deadline_ms": deadline_ms,
            **fields,
        }
    )
