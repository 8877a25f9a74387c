"""The daemon's tool protocol: the JSON answer form, its schema, history, parsing, and how
a stream of protocol JSON becomes tool calls (issue 16)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from orchestratord_server.adapters import tool_calls
from orchestratord_server.adapters.base import FinalChunk, StreamChunk, TokenChunk
from orchestratord_server.generated.models import (
    ChatMessage,
    ChatTool,
    ChatToolChoice,
    TaskRequest,
)
from orchestratord_server.runtime.answers import ToolAnswerChunks

WEATHER = ChatTool.model_validate(
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
)
TIME = ChatTool.model_validate({"type": "function", "function": {"name": "get_time"}})
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


def _valid(schema: dict[str, Any], answer: object) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(answer)


def test_required_admits_only_calls_of_given_tools_with_valid_arguments() -> None:
    schema = tool_calls.answer_schema([WEATHER, TIME], ChatToolChoice("required"), None, None)
    assert _valid(schema, {"tool_calls": [CALL, {"name": "get_time", "arguments": {}}]})
    assert not _valid(schema, {"response": "it is sunny"})
    assert not _valid(schema, {"tool_calls": []})
    assert not _valid(schema, {"tool_calls": [{"name": "rm_rf", "arguments": {}}]})
    assert not _valid(schema, {"tool_calls": [{"name": "get_weather", "arguments": {}}]})
    assert not _valid(schema, {"tool_calls": [CALL], "response": "and some text"})


def test_a_named_choice_and_no_parallel_calls_narrow_the_answer() -> None:
    named = ChatToolChoice.model_validate({"type": "function", "function": {"name": "get_time"}})
    schema = tool_calls.answer_schema([WEATHER, TIME], named, False, None)
    assert _valid(schema, {"tool_calls": [{"name": "get_time", "arguments": {}}]})
    assert not _valid(schema, {"tool_calls": [CALL]})
    two = {"tool_calls": [{"name": "get_time", "arguments": {}}] * 2}
    assert not _valid(schema, two)
    assert "get_weather" not in tool_calls.instruction([WEATHER, TIME], named)


def test_auto_admits_a_call_or_a_response_of_the_response_format() -> None:
    person = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    schema = tool_calls.answer_schema([WEATHER], None, None, person)
    assert _valid(schema, {"tool_calls": [CALL]})
    assert _valid(schema, {"response": {"age": 3}})
    assert not _valid(schema, {"response": "three"})
    assert '{"response":' in tool_calls.instruction([WEATHER], None)


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        ('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}', "", 1),
        ('{"response": "Sunny."}', "Sunny.", 0),
        ('{"tool_calls": [{"name": "get_weather", "arguments": {"ci', None, 0),
    ],
    ids=["call", "response", "cut-short"],
)
def test_a_finished_answer_parses_into_calls_or_text(
    text: str, content: str | None, calls: int
) -> None:
    answer = tool_calls.parse(text, response_is_json=False)
    assert answer.content == (text if content is None else content)
    assert len(answer.calls) == calls
    for _, arguments in answer.calls:
        assert json.loads(arguments) == {"city": "Paris"}


def test_history_reads_as_the_protocol_and_results_name_their_call() -> None:
    history = tool_calls.history(
        [
            ChatMessage(role="user", content="Weather in Paris?"),
            ChatMessage.model_validate(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                }
            ),
            ChatMessage(role="tool", tool_call_id="call_9", content="Sunny, 22 C"),
        ]
    )
    assert [m.role for m in history] == ["user", "assistant", "user"]
    assert json.loads(str(history[1].content)) == {"tool_calls": [CALL]}
    assert "get_weather (call call_9)" in str(history[2].content)
    assert "Sunny, 22 C" in str(history[2].content)


def test_the_instruction_joins_an_existing_system_turn() -> None:
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Hi"),
    ]
    joined = tool_calls.with_instruction(messages, "TOOLS")
    assert [m.role for m in joined] == ["system", "user"]
    assert joined[0].content == "Be brief.\n\nTOOLS"
    alone = tool_calls.with_instruction(messages[1:], "TOOLS")
    assert [m.role for m in alone] == ["system", "user"]


TASK = TaskRequest.model_validate(
    {
        "task_id": "6f1c2e0a-3b7d-4c59-9a8e-1d2f3c4b5a69",
        "session_id": "a3d5e7f9-1b2c-4d3e-8f4a-5b6c7d8e9f01",
        "workload": "completion",
        "model_ref": "m",
        "engine": "llamacpp",
        "ctx": 2048,
        "priority": "interactive",
        "max_tokens": 64,
        "deadline_ms": 60000,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER.model_dump()],
    }
)


def _run(chunks: list[StreamChunk]) -> list[StreamChunk]:
    answers = ToolAnswerChunks(str(TASK.task_id), TASK)
    return [out for chunk in chunks for out in answers.feed(chunk)]


def test_a_streamed_tool_answer_keeps_every_token_and_ends_with_its_calls() -> None:
    """Each engine token stays a token (indexes and counts agree with the engine); no
    protocol JSON reaches the client; the last token carries the calls, with ids that are
    the same on a re-run."""
    text = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    final = FinalChunk("stop", 12, len(pieces), 1)
    out = _run([TokenChunk(p, logprobs=({"token": p},)) for p in pieces] + [final])
    tokens = [c for c in out if isinstance(c, TokenChunk)]
    assert len(tokens) == len(pieces) and out[-1] == final
    assert all(t.text == "" for t in tokens)
    assert [t.logprobs for t in tokens] == [({"token": p},) for p in pieces]
    (call,) = tokens[-1].tool_calls
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert call["index"] == 0 and call["type"] == "function"
    again = _run([TokenChunk(p) for p in pieces] + [final])
    assert again[-2].tool_calls[0]["id"] == call["id"]  # type: ignore[union-attr]


def test_a_streamed_response_answer_ends_with_its_text() -> None:
    out = _run([TokenChunk('{"response": '), TokenChunk('"Hi"}'), FinalChunk("stop", 1, 2, 1)])
    assert [c.text for c in out if isinstance(c, TokenChunk)] == ["", "Hi"]
