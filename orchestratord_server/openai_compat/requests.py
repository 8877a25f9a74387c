"""An OpenAI-compatible request as OrchQueue tasks.

Each request becomes `n` `TaskRequest`s (one per choice): fresh task and session ids, the
engine and context of the pools serving `model` (a Ready one preferred), `max_tokens`
(256, or the context if smaller, when absent), a deadline, the seed (`seed + i` for
choice i when a seed is given; else each task's own derived seed), and the priority from
`metadata.priority` or else the `X-Priority` header (`interactive` when neither is sent).
A chat is a chat task: its messages, tools, tool choice, response format and
log-probability request travel in the TaskRequest itself, so the engine renders and parses
them as an OrchQueue chat task would be. Stop strings and sampling values travel beside it
as `EngineOptions`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator_core import Route
from orchestratord_server.generated.models import (
    Engine,
    OpenAIChatCompletionRequest,
    OpenAICompletionRequest,
    OpenAIEmbeddingRequest,
    OpenAIStop,
    Priority,
    TaskRequest,
    Workload,
)
from orchestratord_server.openai_compat.leniency import BadRequest, OpenAIRequest
from orchestratord_server.runtime.tasks import EngineOptions

DEFAULT_MAX_TOKENS = 256
#: Time budget of an OpenAI-compatible task; the pool's watchdog applies as well.
DEADLINE_MS = 600_000
PRIORITY_KEY = "priority"
#: The largest seed a TaskRequest carries (int64).
MAX_SEED = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Target:
    """Where a model runs: the engine family, the model reference the pools serve it
    under, and the context a task may use."""

    engine: Engine
    model_ref: str
    ctx: int


def target(routes: Sequence[Route], workload: Workload = Workload.COMPLETION) -> Target | None:
    """Where a model runs ``workload``, from the pools that serve it now: the engine and
    model of a Ready pool first, and the smallest context of the pools with that engine
    and model, so any of them can take the task; None when no pool serves it."""
    routes = [route for route in routes if route.workload == workload]
    if not routes:
        return None
    ready = [route for route in routes if route.ready]
    first = (ready or list(routes))[0]
    ctx = min(
        route.ctx_limit
        for route in routes
        if route.engine == first.engine and route.model_ref == first.model_ref
    )
    return Target(first.engine, first.model_ref, ctx)


def priority(request: OpenAIRequest | OpenAIEmbeddingRequest, header: str | None) -> Priority:
    """`metadata.priority`, else the `X-Priority` header, else interactive.

    Raises BadRequest for a `metadata.priority` that names no priority (the header is
    checked against the contract before the handler runs).
    """
    extra = request.metadata.model_extra if request.metadata is not None else None
    chosen = (extra or {}).get(PRIORITY_KEY) or header or Priority.INTERACTIVE.value
    try:
        return Priority(chosen)
    except ValueError:
        names = ", ".join(p.value for p in Priority)
        raise BadRequest(f"priority must be one of {names}", "metadata.priority") from None


def stop_strings(stop: OpenAIStop | None) -> tuple[str, ...]:
    """The stop strings of a request as a tuple."""
    if stop is None:
        return ()
    value = stop.root
    return (value,) if isinstance(value, str) else tuple(value)


def engine_options(request: OpenAIRequest) -> EngineOptions:
    """Stop strings and the sampling values the request sets."""
    return EngineOptions(
        stop=stop_strings(request.stop),
        temperature=request.temperature,
        top_p=request.top_p,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        top_k=request.top_k,
        min_p=request.min_p,
        repetition_penalty=request.repetition_penalty,
    )


def max_tokens(request: OpenAIRequest, ctx: int) -> int:
    """The request's token limit (`max_completion_tokens` wins for chat), else the default."""
    given = request.max_tokens
    if isinstance(request, OpenAIChatCompletionRequest) and request.max_completion_tokens:
        given = request.max_completion_tokens
    return given if given is not None else min(DEFAULT_MAX_TOKENS, ctx)


def completion_prompt(request: OpenAICompletionRequest) -> str:
    """The prompt text (a list holds exactly one string, as the contract says)."""
    prompt = request.prompt
    return prompt if isinstance(prompt, str) else prompt[0]


def _content_fields(request: OpenAIRequest) -> dict[str, Any]:
    """What a task carries of the request's input and answer form."""
    fields: dict[str, Any] = {"response_format": request.response_format}
    if isinstance(request, OpenAICompletionRequest):
        return fields | {"prompt": completion_prompt(request), "logprobs": request.logprobs}
    top = request.top_logprobs or 0
    return fields | {
        "messages": request.messages,
        "tools": request.tools,
        "tool_choice": request.tool_choice,
        "parallel_tool_calls": request.parallel_tool_calls,
        "logprobs": top if request.logprobs else None,
    }


def _new_task(where: Target, chosen: Priority, workload: Workload, **fields: Any) -> TaskRequest:
    """A task with fresh task and session ids on ``where``, with the OpenAI deadline;
    ``fields`` left None are left out."""
    return TaskRequest(
        task_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        workload=workload,
        model_ref=where.model_ref,
        engine=where.engine,
        ctx=where.ctx,
        priority=chosen,
        deadline_ms=DEADLINE_MS,
        **{name: value for name, value in fields.items() if value is not None},
    )


def task_requests(request: OpenAIRequest, where: Target, chosen: Priority) -> list[TaskRequest]:
    """The OrchQueue tasks of an OpenAI-compatible request, one per choice."""
    base = _new_task(
        where,
        chosen,
        Workload.COMPLETION,
        seed=request.seed,
        max_tokens=max_tokens(request, where.ctx),
        **_content_fields(request),
    )
    tasks = [base]
    for index in range(1, request.n or 1):
        seed = None if request.seed is None else (request.seed + index) % (MAX_SEED + 1)
        tasks.append(
            base.model_copy(
                update={"task_id": uuid.uuid4(), "session_id": uuid.uuid4(), "seed": seed}
            )
        )
    return tasks


def embedding_inputs(request: OpenAIEmbeddingRequest) -> list[str]:
    """The texts to embed; BadRequest for token-id input, which needs the model's own
    tokenizer on the client's side and is not served."""
    given = request.input
    if isinstance(given, str):
        return [given]
    if all(isinstance(item, str) for item in given):
        return [str(item) for item in given]
    raise BadRequest(
        "token-id input is not supported: send the text itself (LangChain's "
        "OpenAIEmbeddings: pass check_embedding_ctx_length=False)",
        "input",
    )


def embedding_task(inputs: list[str], where: Target, chosen: Priority) -> TaskRequest:
    """The OrchQueue embedding task of an embeddings request (`max_tokens` 1: an
    embedding generates nothing)."""
    return _new_task(where, chosen, Workload.EMBEDDING, inputs=inputs, max_tokens=1)
