"""An OpenAI-compatible request as an OrchQueue task.

Each request becomes one `TaskRequest`: a fresh task and session id, the engine and
context of the pools serving `model` (a Ready one preferred), `max_tokens` (256, or the
context if smaller, when absent), a deadline, the seed, and the priority from
`metadata.priority` or else the `X-Priority` header (`interactive` when neither is sent).
Stop strings and sampling values travel beside it as `EngineOptions`. Chat messages are
reduced to (role, text) pairs for the engine's chat template; `plain_chat_prompt` is the
documented rendering for an engine that has none.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator_core import Route
from orchestratord_server.generated.models import (
    Engine,
    OpenAIChatCompletionRequest,
    OpenAIChatMessage,
    OpenAICompletionRequest,
    OpenAIStop,
    Priority,
    TaskRequest,
    Workload,
)
from orchestratord_server.runtime.tasks import EngineOptions

DEFAULT_MAX_TOKENS = 256
#: Time budget of an OpenAI-compatible task; the pool's watchdog applies as well.
DEADLINE_MS = 600_000
PRIORITY_KEY = "priority"

OpenAIRequest = OpenAICompletionRequest | OpenAIChatCompletionRequest


class BadRequest(Exception):
    """A request the schema allows but this surface cannot serve; `param` is at fault."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Target:
    """Where a model runs: the engine family and the context a task may use."""

    engine: Engine
    model_ref: str
    ctx: int


def target(model: str, routes: Sequence[Route]) -> Target | None:
    """Where ``model`` runs, from the pools that serve it now (`Runtime.routes`): the engine
    of a Ready pool first, and the smallest context of that engine's pools, so any of them
    can take the task; None when no pool serves it."""
    if not routes:
        return None
    ready = [route for route in routes if route.ready]
    engine = (ready or list(routes))[0].engine
    ctx = min(route.ctx_limit for route in routes if route.engine == engine)
    return Target(engine, model, ctx)


def priority(request: OpenAIRequest, header: str | None) -> Priority:
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


def chat_turns(messages: Sequence[OpenAIChatMessage]) -> list[dict[str, str]]:
    """Messages as (role, text) objects for a chat template; `developer` speaks as
    `system` and text parts are joined with newlines."""
    turns = []
    for message in messages:
        content = message.content
        text = content if isinstance(content, str) else "\n".join(p.text for p in content)
        role = "system" if message.role == "developer" else message.role
        turns.append({"role": role, "content": text})
    return turns


def plain_chat_prompt(turns: Sequence[dict[str, str]]) -> str:
    """The rendering used when the engine has no chat template: one `role: text` line
    per turn, then `assistant:` to prompt the reply."""
    lines = [f"{turn['role']}: {turn['content']}" for turn in turns]
    return "\n".join([*lines, "assistant:"])


def task_request(
    request: OpenAIRequest, where: Target, prompt: str, chosen: Priority
) -> TaskRequest:
    """The OrchQueue task of an OpenAI-compatible request."""
    return TaskRequest(
        task_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        workload=Workload.COMPLETION,
        model_ref=where.model_ref,
        engine=where.engine,
        ctx=where.ctx,
        priority=chosen,
        seed=request.seed,
        prompt=prompt,
        max_tokens=max_tokens(request, where.ctx),
        deadline_ms=DEADLINE_MS,
    )
