"""Chat tasks as engines take them, and what each engine can honour.

A chat task (a TaskRequest with `messages`) reaches its engine as a prompt rendered by the
model's own chat template, asked of the engine (`EngineAdapter.apply_template`: llama.cpp's
`/apply-template`, vLLM's tokenizer routes), or plainly (`plain_prompt`) when the engine
cannot render. Tools travel as the daemon's tool protocol (`tool_calls`): an instruction
in the system turn and a JSON answer form. A JSON answer (a `response_format`, or tools)
is decoded under a JSON Schema (`answer_schema`), which the engine enforces.

`Feature` names what a task may ask beyond text generation; an adapter class lists the
ones its engine honours in `features`, and a task asking another engine for one is
refused before admission with a message naming the engine (`missing_feature`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from orchestratord_server.adapters import tool_calls
from orchestratord_server.generated.models import ChatMessage, TaskRequest


class Feature(enum.StrEnum):
    """What a task may ask of an engine beyond text generation."""

    #: Decoding under a JSON Schema: `response_format` json_object / json_schema, and
    #: tools (their answers are JSON of the tool protocol).
    STRUCTURED_OUTPUT = "response_format"
    #: Per-token log-probabilities and alternatives.
    LOGPROBS = "logprobs"
    #: Embedding tasks, on replicas started for them.
    EMBEDDINGS = "embeddings"


def response_schema(request: TaskRequest) -> dict[str, Any] | None:
    """The JSON Schema of a task's `response_format`; None for free text."""
    given = request.response_format
    if given is None or given.type == "text":
        return None
    if given.type == "json_object" or given.json_schema is None:
        return dict(tool_calls.ANY_OBJECT)
    return dict(given.json_schema.schema_ or {})


def answer_schema(request: TaskRequest) -> dict[str, Any] | None:
    """The JSON Schema the task's answer is decoded under, or None for free text."""
    if request.tools:
        return tool_calls.answer_schema(
            request.tools,
            request.tool_choice,
            request.parallel_tool_calls,
            response_schema(request),
        )
    return response_schema(request)


def asked(request: TaskRequest) -> list[tuple[str, Feature]]:
    """The fields the task sets that need more than text generation, with the feature
    each needs."""
    fields = []
    if request.tools:
        fields.append(("tools", Feature.STRUCTURED_OUTPUT))
    if response_schema(request) is not None:
        fields.append(("response_format", Feature.STRUCTURED_OUTPUT))
    if request.logprobs is not None:
        fields.append(("logprobs", Feature.LOGPROBS))
    return fields


def unservable(request: TaskRequest, honoured: frozenset[Feature]) -> tuple[str, str] | None:
    """(field, why) when the task's engine cannot run it as asked: a feature the engine
    lacks, or a chat whose messages hold no text at all; None when it can."""
    for name, feature in asked(request):
        if feature not in honoured:
            return name, (
                f"engine {request.engine.value} does not support `{name}`; serve this model "
                "on an engine that does (docs/openai-compat.md)"
            )
    messages = request.messages
    if messages is not None and not any(
        message_text(message) or message.tool_calls for message in messages
    ):
        return "messages", "the messages hold no text, so there is nothing to answer"
    return None


def prompt_messages(request: TaskRequest) -> list[ChatMessage]:
    """The messages a chat task's prompt is rendered from: earlier tool calls and results
    in the tool protocol's words, and with tools its instruction."""
    assert request.messages is not None, "only a chat has messages"
    messages = tool_calls.history(request.messages)
    if not request.tools:
        return messages
    text = tool_calls.instruction(request.tools, request.tool_choice)
    return tool_calls.with_instruction(messages, text)


def message_text(message: ChatMessage) -> str:
    """A message's text: its content, text parts joined with newlines."""
    content = message.content
    if content is None:
        return ""
    return content if isinstance(content, str) else "\n".join(p.text for p in content)


def _role(message: ChatMessage) -> str:
    return "system" if message.role == "developer" else message.role


def turns(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Messages as (role, text) objects for a template route; `developer` speaks as
    `system`."""
    return [{"role": _role(message), "content": message_text(message)} for message in messages]


def plain_prompt(messages: Sequence[ChatMessage]) -> str:
    """The rendering used when the engine has no chat template: one `role: text` line
    per turn, then `assistant:` to prompt the reply."""
    lines = [f"{_role(message)}: {message_text(message)}" for message in messages]
    return "\n".join([*lines, "assistant:"])


#: Tokens allowed per message for a chat template's role markers and separators.
TEMPLATE_TOKENS_PER_MESSAGE = 16
#: Tokens allowed for what a template adds once (a default system text).
TEMPLATE_TOKENS_ONCE = 64


def chat_prompt_bound(request: TaskRequest) -> int:
    """A generous estimate of a chat's prompt tokens, without asking the engine: the
    bytes of all it renders (byte-level tokenizers never exceed one token per byte) and
    allowances for the template's own text."""
    messages = prompt_messages(request)
    size = sum(len(message_text(message).encode()) for message in messages)
    per_message = TEMPLATE_TOKENS_PER_MESSAGE * len(messages)
    return size + per_message + TEMPLATE_TOKENS_ONCE
