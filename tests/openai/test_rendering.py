"""OpenAI rendering of task events that the engine tests cannot easily provoke.

A task that fails mid-stream, a whole answer whose task failed or was canceled, typed
events followed from a transcript, and per-request sampling values over a pinned profile.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from orchestratord_server.adapters.base import SAMPLER_PROFILE_V1
from orchestratord_server.generated.models import OpenAIChatCompletionChunk, OpenAIError
from orchestratord_server.openai_compat.render import ChunkWriter, Outcome
from orchestratord_server.runtime.tasks import EngineOptions
from orchestratord_server.transcripts import TaskEvent, Transcript
from tests.openai.support import data_frames

TASK_ID = "6f1c2e0a-3b7d-4c59-9a8e-1d2f3c4b5a69"
STARTED = TaskEvent("started", {"engine_version": "b4242"})
TOKENS = [TaskEvent("token", {"t": text, "i": i}) for i, text in enumerate(["Pa", "ris"])]
TIMEOUT = TaskEvent(
    "error", {"code": "DECODE_TIMEOUT", "message": "no token for 5000 ms", "retriable": False}
)
RESET = TaskEvent(
    "error", {"code": "WORKER_RESET", "message": "the engine went away", "retriable": True}
)
CANCELED = TaskEvent("end", {"tokens_out": 2, "decode_ms": 9, "finish_reason": "canceled"})


def test_a_stream_that_fails_after_it_began_ends_with_an_error_frame() -> None:
    """ORCH-3016: chunks so far, then OpenAI's error object, and no `[DONE]`."""
    writer = ChunkWriter("chat", TASK_ID, 1735689600, "m", include_usage=True)
    payloads = data_frames(writer.render([STARTED, *TOKENS]) + writer.render([TIMEOUT]))
    *chunk_payloads, last = payloads
    chunks = [OpenAIChatCompletionChunk.model_validate_json(p) for p in chunk_payloads]
    assert [c.choices[0].delta.content for c in chunks] == ["", "Pa", "ris"]
    assert {c.system_fingerprint for c in chunks} == {"b4242"}
    error = OpenAIError.model_validate_json(last).error
    assert (error.type, error.code) == ("server_error", "DECODE_TIMEOUT")


@pytest.mark.parametrize(
    ("terminal", "status", "code", "retry"),
    [
        (TIMEOUT, 504, "DECODE_TIMEOUT", False),
        (RESET, 502, "WORKER_RESET", True),
        (CANCELED, 503, None, True),
    ],
)
def test_a_whole_answer_of_a_task_that_did_not_finish_is_an_error(
    terminal: TaskEvent, status: int, code: str | None, retry: bool
) -> None:
    """ORCH-3025: the status says what happened; only retriable failures carry hints."""
    outcome = Outcome()
    outcome.add([STARTED, *TOKENS, terminal])
    response = outcome.response("completion", TASK_ID, 1735689600, "m")
    assert response.status_code == status
    error = OpenAIError.model_validate_json(bytes(response.body)).error
    assert error.code == code
    assert ("retry-after" in response.headers) is retry


def test_typed_events_are_followed_from_the_first() -> None:
    """ORCH-2002: a follower that comes late gets every event, then the new ones, in order."""

    async def scenario() -> list[str]:
        transcript = Transcript(keep_events=True)
        transcript.append(b"started", STARTED)
        seen: list[str] = []

        async def follow() -> None:
            async for batch in transcript.follow_events():
                seen.extend(event.name for event in batch)

        follower = asyncio.ensure_future(follow())
        await asyncio.sleep(0)
        assert transcript.subscribers == 1
        transcript.append(b"token", TOKENS[0])
        transcript.close(b"end", CANCELED)
        await follower
        assert transcript.subscribers == 0
        return seen

    assert asyncio.run(scenario()) == ["started", "token", "end"]


def test_a_transcript_without_typed_events_cannot_be_followed_that_way() -> None:
    transcript = Transcript()
    transcript.append(b"started", STARTED)
    assert transcript.events is None

    async def follow() -> None:
        async for _ in transcript.follow_events():
            pass

    with pytest.raises(ValueError):
        asyncio.run(follow())


def test_request_sampling_values_replace_only_their_own_profile_fields() -> None:
    """ORCH-3058: the rest of the pinned profile, its version included, stays as it is."""
    profile = EngineOptions(temperature=0.0, top_p=0.5).sampler(SAMPLER_PROFILE_V1)
    assert (profile.temperature, profile.top_p) == (0.0, 0.5)
    unchanged = {"version", "top_k", "min_p", "presence_penalty", "frequency_penalty"}
    for name in unchanged:
        assert getattr(profile, name) == getattr(SAMPLER_PROFILE_V1, name)
    assert EngineOptions().sampler(SAMPLER_PROFILE_V1) == SAMPLER_PROFILE_V1


END = TaskEvent("end", {"tokens_out": 2, "tokens_in": 5, "decode_ms": 9, "finish_reason": "stop"})
CALL = {
    "index": 0,
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
LOGPROB = {"token": "Pa", "logprob": -0.5, "bytes": [80, 97], "top_logprobs": []}


def test_choices_of_n_tasks_stream_under_their_index_and_close_once() -> None:
    """`n`: each task's chunks carry its choice index; usage and `[DONE]` come once, after
    the last choice ended, with the completion tokens of all choices."""
    writer = ChunkWriter("chat", TASK_ID, 1735689600, "m", include_usage=True, choices=2)
    first = data_frames(writer.render([STARTED, *TOKENS, END], 0))
    assert not writer.closed and "[DONE]" not in first
    second = data_frames(writer.render([STARTED, *TOKENS, END], 1))
    assert writer.closed and second[-1] == "[DONE]"
    chunks = [OpenAIChatCompletionChunk.model_validate_json(p) for p in first + second[:-1]]
    indexes = {c.choices[0].index for c in chunks if c.choices}
    assert indexes == {0, 1}
    (usage,) = [c.usage for c in chunks if c.usage is not None]
    assert (usage.prompt_tokens, usage.completion_tokens) == (5, 4)


def test_tool_calls_and_logprobs_stream_as_openai_deltas() -> None:
    writer = ChunkWriter("chat", TASK_ID, 1735689600, "m", include_usage=False)
    token = TaskEvent("token", {"t": "", "i": 0, "tool_calls": [CALL], "logprobs": [LOGPROB]})
    payloads = data_frames(writer.render([STARTED, token, END]))
    chunks = [OpenAIChatCompletionChunk.model_validate_json(p) for p in payloads[:-1]]
    delta = chunks[1].choices[0]
    assert delta.delta.tool_calls is not None
    assert delta.delta.tool_calls[0].function is not None
    assert delta.delta.tool_calls[0].function.name == "get_weather"
    assert delta.logprobs is not None and delta.logprobs.content is not None
    assert delta.logprobs.content[0].token == "Pa"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_whole_answer_joins_tool_calls_and_reports_logprobs_per_kind() -> None:
    parts = [
        TaskEvent(
            "token",
            {
                "t": "",
                "i": 0,
                "tool_calls": [
                    {**CALL, "function": {"name": "get_weather", "arguments": '{"city": '}}
                ],
            },
        ),
        TaskEvent(
            "token",
            {"t": "", "i": 1, "tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        ),
    ]
    outcome = Outcome()
    outcome.add([STARTED, *parts, END])
    body = json.loads(bytes(outcome.response("chat", TASK_ID, 1, "m").body))
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    scored = [
        TaskEvent("token", {"t": t, "i": i, "logprobs": [{**LOGPROB, "token": t}]})
        for i, t in enumerate(["Pa", "ris"])
    ]
    outcome = Outcome()
    outcome.add([STARTED, *scored, END])
    body = json.loads(bytes(outcome.response("completion", TASK_ID, 1, "m").body))
    logprobs = body["choices"][0]["logprobs"]
    assert logprobs["tokens"] == ["Pa", "ris"] and logprobs["text_offset"] == [0, 2]
