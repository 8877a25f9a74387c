"""Tool calling as a JSON answer that the engine's grammar enforces.

Measured on the llama.cpp build here: a chat template without tool support (SmolLM2's)
makes llama.cpp ignore `tools` silently, and even with a tool-capable template its
`tool_choice: "required"` does not force a call (0 of 10). So the daemon does what vLLM
does for `required` and named choices, for every choice: the answer is one JSON object
whose form a JSON Schema fixes, and the engine decodes under that schema (llama.cpp's
`json_schema`), so a finished answer always parses and every call names a given tool with
arguments that satisfy its parameters.

- `instruction` tells the model the tools and the answer form, as a system message the
  model's own chat template renders.
- `answer_schema`: `{"tool_calls": [{"name", "arguments"}, ...]}` for `required` or a
  named function (one call unless `parallel_tool_calls`); for `auto` either that or
  `{"response": ...}`, whose value follows `response_format` when one is given.
- `history` turns earlier tool calls and results into the text of that same protocol, so
  a replayed conversation reads the way the model answered.
- `parse` turns a finished answer back into text or tool calls; an answer cut short
  (`max_tokens`) is returned as text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestratord_server.generated.models import (
    ChatMessage,
    ChatNamedToolChoice,
    ChatTool,
    ChatToolChoice,
)

ANY_OBJECT: Mapping[str, Any] = {"type": "object"}


@dataclass(frozen=True, slots=True)
class ToolAnswer:
    """A parsed answer: its text, or its tool calls (name and arguments JSON text)."""

    content: str
    calls: tuple[tuple[str, str], ...] = ()


def _choice(tool_choice: ChatToolChoice | None) -> str | ChatNamedToolChoice:
    return "auto" if tool_choice is None else tool_choice.root


def _named(tools: Sequence[ChatTool], tool_choice: ChatToolChoice | None) -> list[ChatTool]:
    choice = _choice(tool_choice)
    if isinstance(choice, ChatNamedToolChoice):
        return [tool for tool in tools if tool.function.name == choice.function.name]
    return list(tools)


def instruction(tools: Sequence[ChatTool], tool_choice: ChatToolChoice | None) -> str:
    """The system text that describes the tools and the answer form."""
    listed = [
        {
            "name": tool.function.name,
            "description": tool.function.description or "",
            "parameters": tool.function.parameters or ANY_OBJECT,
        }
        for tool in _named(tools, tool_choice)
    ]
    call = '{"tool_calls": [{"name": <tool name>, "arguments": {<arguments>}}]}'
    lines = [
        "You can call these tools (JSON Schema of each tool's arguments):",
        json.dumps(listed, ensure_ascii=False),
        f"To call tools, answer with only this JSON: {call}",
    ]
    if _choice(tool_choice) == "auto":
        lines.append('To answer without a tool, answer with only this JSON: {"response": <answer>}')
    return "\n".join(lines)


def closed(parameters: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A tool's parameters as the arguments' schema: an object schema that lists its
    properties and says nothing of others takes no others (as OpenAI's strict mode
    requires), so a model cannot spend its tokens inventing arguments."""
    if not parameters:
        return ANY_OBJECT
    if "properties" in parameters and "additionalProperties" not in parameters:
        return {**parameters, "additionalProperties": False}
    return parameters


def answer_schema(
    tools: Sequence[ChatTool],
    tool_choice: ChatToolChoice | None,
    parallel: bool | None,
    response: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The JSON Schema the answer is decoded under (see the module's docstring)."""
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.function.name},
                "arguments": closed(tool.function.parameters),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in _named(tools, tool_choice)
    ]
    items = calls[0] if len(calls) == 1 else {"anyOf": calls}
    array: dict[str, Any] = {"type": "array", "items": items, "minItems": 1}
    if parallel is False:
        array["maxItems"] = 1
    with_calls = {
        "type": "object",
        "properties": {"tool_calls": array},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }
    if _choice(tool_choice) != "auto":
        return with_calls
    text = {
        "type": "object",
        "properties": {"response": response or {"type": "string"}},
        "required": ["response"],
        "additionalProperties": False,
    }
    return {"anyOf": [with_calls, text]}


def history(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The conversation with earlier tool calls written as protocol JSON and tool results
    as user turns that name the call they answer."""
    names: dict[str, str] = {}
    turned: list[ChatMessage] = []
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            calls = []
            for call in message.tool_calls:
                names[call.id] = call.function.name
                try:
                    arguments = json.loads(call.function.arguments)
                except ValueError:
                    arguments = call.function.arguments
                calls.append({"name": call.function.name, "arguments": arguments})
            text = json.dumps({"tool_calls": calls}, ensure_ascii=False)
            turned.append(ChatMessage(role="assistant", content=text))
        elif message.role == "tool":
            call_id = message.tool_call_id or ""
            label = f"{names.get(call_id, 'tool')} (call {call_id})" if call_id else "a tool"
            content = message.content if isinstance(message.content, str) else ""
            if isinstance(message.content, list):
                content = "\n".join(part.text for part in message.content)
            turned.append(ChatMessage(role="user", content=f"Result of {label}:\n{content}"))
        else:
            turned.append(message)
    return turned


def with_instruction(messages: Sequence[ChatMessage], text: str) -> list[ChatMessage]:
    """``text`` added to the first system message, or as a system message of its own
    first (some templates take one system message only)."""
    if messages and messages[0].role in ("system", "developer"):
        first = messages[0]
        merged = f"{first.content}\n\n{text}" if isinstance(first.content, str) else text
        return [ChatMessage(role="system", content=merged), *messages[1:]]
    return [ChatMessage(role="system", content=text), *messages]


def parse(text: str, response_is_json: bool) -> ToolAnswer:
    """A finished answer as text or tool calls; text that is not the protocol's JSON (an
    answer cut short) is returned as it is."""
    try:
        answer = json.loads(text)
    except ValueError:
        return ToolAnswer(text)
    if isinstance(answer, dict) and isinstance(answer.get("tool_calls"), list):
        calls = tuple(
            (str(call.get("name", "")), json.dumps(call.get("arguments", {}), ensure_ascii=False))
            for call in answer["tool_calls"]
            if isinstance(call, dict)
        )
        return ToolAnswer("", calls)
    if isinstance(answer, dict) and "response" in answer:
        response = answer["response"]
        if response_is_json or not isinstance(response, str):
            return ToolAnswer(json.dumps(response, ensure_ascii=False))
        return ToolAnswer(response)
    return ToolAnswer(text)
