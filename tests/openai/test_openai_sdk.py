"""The official `openai` package, unmodified, against a real daemon and engine (issue 9).

Completions and chat completions, whole and streamed, are OrchQueue tasks underneath: the
same text is read back from `GET /v1/tasks/{id}/stream`, the same counters move, the
same queue refuses them. Errors reach the SDK as its own exception classes. Every raw
answer is checked against data.yaml, every stream chunk against its generated model.
"""

from __future__ import annotations

import openai
import pytest

from orchestratord_server.generated.models import (
    OpenAIChatCompletion,
    OpenAIChatCompletionChunk,
    OpenAICompletion,
    OpenAICompletionChunk,
)
from tests.integration.support import (
    LONG_MAX_TOKENS,
    MODEL_REF,
    Client,
    Daemon,
    long_task_body,
    wait_engine_idle,
    wait_until,
)
from tests.openai.support import chunks, stream_raw, task_id_of

pytestmark = pytest.mark.integration

PROMPT = "Once upon a time"
CHAT = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Tell me a story."},
]


def _text_of_chunks(items: list[dict[str, object]], key: str) -> str:
    text = ""
    for chunk in items:
        for choice in chunk["choices"]:
            text += choice[key] if key == "text" else choice["delta"].get("content", "")
    return text


def test_models_list_names_the_replica_sets_models(sdk: openai.OpenAI, orch: Client) -> None:
    """ORCH-3007, ORCH-3035: `GET /v1/models` lists the configured model, for the SDK too."""
    assert [model.id for model in sdk.models.list().data] == [MODEL_REF]
    raw = orch.get("/v1/models")
    assert raw.status_code == 200
    assert raw.json()["data"][0]["owned_by"] == "orchestratord"


def test_a_completion_is_an_orchqueue_task(sdk: openai.OpenAI, orch: Client) -> None:
    """ORCH-2001, ORCH-3045: the SDK's completion is the text of an OrchQueue task, and
    the same seed gives the same text again."""
    answer = sdk.completions.create(model=MODEL_REF, prompt=PROMPT, max_tokens=12, seed=11)
    choice = answer.choices[0]
    assert answer.object == "text_completion"
    assert choice.finish_reason in ("stop", "length")
    transcript = orch.transcript(task_id_of(answer.id))
    assert transcript.text == choice.text != ""
    assert answer.usage is not None
    assert answer.usage.completion_tokens == len(transcript.tokens)
    assert answer.usage.prompt_tokens == transcript.terminal.data["tokens_in"]
    assert answer.system_fingerprint == transcript.started["engine_version"]
    again = sdk.completions.create(model=MODEL_REF, prompt=PROMPT, max_tokens=12, seed=11)
    assert again.choices[0].text == choice.text
    raw = orch.post(
        "/v1/completions",
        json={"model": MODEL_REF, "prompt": [PROMPT], "max_tokens": 12, "seed": 11},
    )
    assert raw.status_code == 200
    assert OpenAICompletion.model_validate_json(raw.content).choices[0].text == choice.text


def test_sampling_values_and_stop_strings_reach_the_engine(sdk: openai.OpenAI) -> None:
    """ORCH-3045: temperature 0 is greedy whatever the seed; a stop string ends the text
    where it first occurs and is not part of it."""
    greedy = [
        sdk.completions.create(
            model=MODEL_REF, prompt=PROMPT, max_tokens=16, seed=seed, temperature=0
        ).choices[0]
        for seed in (1, 2)
    ]
    assert greedy[0].text == greedy[1].text
    text = greedy[0].text
    stop = text[4:6]
    assert len(stop) == 2, f"the greedy text is too short to pick a stop string: {text!r}"
    stopped = sdk.completions.create(
        model=MODEL_REF, prompt=PROMPT, max_tokens=16, seed=1, temperature=0, stop=[stop]
    ).choices[0]
    assert stopped.text == text[: text.index(stop)]
    assert stopped.finish_reason == "stop"


def test_a_completion_streams(sdk: openai.OpenAI, orch: Client) -> None:
    """ORCH-2001: streamed chunks carry the task's text, one finish reason, then usage."""
    body = {"model": MODEL_REF, "prompt": PROMPT, "max_tokens": 12, "seed": 5}
    stream = sdk.completions.create(**body, stream=True, stream_options={"include_usage": True})
    pieces = list(stream)
    texts = [c.choices[0].text for c in pieces if c.choices]
    finishes = [c.choices[0].finish_reason for c in pieces if c.choices]
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    assert finishes[-1] in ("stop", "length")
    assert pieces[-1].choices == [] and pieces[-1].usage is not None
    transcript = orch.transcript(task_id_of(pieces[0].id))
    assert "".join(texts) == transcript.text != ""
    assert pieces[-1].usage.completion_tokens == len(transcript.tokens)
    response, data = stream_raw(orch, "/v1/completions", {**body, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert _text_of_chunks(chunks(data, OpenAICompletionChunk), "text") == transcript.text


def test_a_chat_completion_and_its_stream(sdk: openai.OpenAI, orch: Client) -> None:
    """ORCH-2001: a chat completion, whole and streamed, with the same seed, same text."""
    answer = sdk.chat.completions.create(model=MODEL_REF, messages=CHAT, max_tokens=10, seed=3)
    message = answer.choices[0].message
    assert answer.object == "chat.completion" and message.role == "assistant"
    transcript = orch.transcript(task_id_of(answer.id))
    assert message.content == transcript.text != ""
    stream = sdk.chat.completions.create(
        model=MODEL_REF, messages=CHAT, max_tokens=10, seed=3, stream=True
    )
    pieces = list(stream)
    assert pieces[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in pieces) == message.content
    assert pieces[-1].choices[0].finish_reason == answer.choices[0].finish_reason
    body = {"model": MODEL_REF, "messages": CHAT, "max_tokens": 10, "seed": 3}
    raw = orch.post("/v1/chat/completions", json=body)
    assert OpenAIChatCompletion.model_validate_json(raw.content).choices[0].message.content == (
        message.content
    )
    _, data = stream_raw(orch, "/v1/chat/completions", {**body, "stream": True})
    assert _text_of_chunks(chunks(data, OpenAIChatCompletionChunk), "delta") == message.content


def test_wrong_or_missing_keys_are_authentication_errors(
    openai_daemon: Daemon, orch: Client
) -> None:
    """ORCH-3035: the SDK raises AuthenticationError; OrchQueue routes keep their envelope."""
    stranger = openai.OpenAI(
        base_url=openai_daemon.base_url + "/v1", api_key="not-a-key", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        stranger.chat.completions.create(model=MODEL_REF, messages=CHAT, max_tokens=2)
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "authentication_error"
    stranger.close()
    for key in ("not-a-key", None):
        raw = orch.post("/v1/completions", key=key, json={"model": MODEL_REF, "prompt": "x"})
        assert raw.status_code == 401
        assert raw.json()["error"]["type"] == "authentication_error"
        assert raw.headers["www-authenticate"].startswith("Bearer")
    assert orch.get("/v1/models", key=None).status_code == 401
    assert orch.submit(long_task_body(), key="not-a-key").json()["code"] == "UNAUTHORIZED"


def test_unsupported_requests_are_bad_request_errors(sdk: openai.OpenAI, orch: Client) -> None:
    """ORCH-2001, ORCH-3015: values that ask for what no engine here does (a logit bias,
    more than 8 choices, a required tool call without tools), non-text parts, a budget
    overrun and an unknown model are refused in OpenAI's shape, naming the parameter."""
    refusals = {
        "logit_bias": dict(logit_bias={"42": -100}),
        "tool_choice": dict(tool_choice="required"),
        "n": dict(n=9),
        "messages[0].content": dict(
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
        ),
        "max_tokens": dict(max_tokens=LONG_MAX_TOKENS * 2),
    }
    for param, change in refusals.items():
        arguments = {"model": MODEL_REF, "messages": CHAT, "max_tokens": 2, **change}
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(**arguments)
        assert caught.value.body["param"].startswith(param), caught.value.body
        assert orch.post("/v1/chat/completions", json=arguments).status_code == 400
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.completions.create(model="no-such-model", prompt=PROMPT)
    assert missing.value.body["param"] == "model"


@pytest.mark.parametrize("prompt", ["", [""], []], ids=["empty", "list-of-empty", "empty-list"])
def test_orch_2001_an_empty_prompt_is_a_bad_request_naming_prompt(
    sdk: openai.OpenAI, orch: Client, prompt: object
) -> None:
    """A prompt that cannot produce a result is refused at admission (400, `param`
    `prompt`), never admitted to fail on the engine or answered with a 500."""
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model=MODEL_REF, prompt=prompt, max_tokens=2)  # type: ignore[arg-type]
    assert caught.value.body["param"].startswith("prompt"), caught.value.body
    answer = orch.post("/v1/completions", json={"model": MODEL_REF, "prompt": prompt})
    assert answer.status_code == 400, answer.text


def test_orch_2001_messages_that_render_to_no_text_are_a_bad_request(
    sdk: openai.OpenAI, orch: Client
) -> None:
    """Schemathesis found a 500: one empty assistant message renders to an empty prompt,
    which the daemon then failed to build a task from. It is a 400 on `messages`."""
    messages = [{"role": "assistant", "content": ""}]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=MODEL_REF, messages=messages, max_tokens=2)  # type: ignore[arg-type]
    assert caught.value.body["param"] == "messages", caught.value.body


def test_a_full_queue_is_a_rate_limit_error_with_retry_after(
    sdk: openai.OpenAI, orch: Client
) -> None:
    """ORCH-3005, ORCH-2007, ORCH-3028: behind two running tasks and one queued, the pool
    refuses: the SDK raises RateLimitError, the answer carries the retry hints, and the
    refusal is counted like an OrchQueue one."""
    for _ in range(3):
        orch.admit(long_task_body())
    before = orch.metrics().total("tasks_rejected_total", reason="ADMISSION_REJECT")
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.completions.create(model=MODEL_REF, prompt=PROMPT, max_tokens=4)
    response = caught.value.response
    assert int(response.headers["retry-after"]) >= 1
    assert int(response.headers["x-backoff-ms"]) >= 1
    assert caught.value.body["type"] == "rate_limit_error"
    assert caught.value.body["code"] == "ADMISSION_REJECT"
    raw = orch.post("/v1/chat/completions", json={"model": MODEL_REF, "messages": CHAT})
    assert raw.status_code == 429
    after = orch.metrics().total("tasks_rejected_total", reason="ADMISSION_REJECT")
    assert after == before + 2


def test_priority_comes_from_the_header_or_metadata(sdk: openai.OpenAI, orch: Client) -> None:
    """ORCH-3028: OpenAI requests are enqueued and started like OrchQueue tasks, in the
    class `X-Priority` or `metadata.priority` picked (interactive otherwise)."""
    before = orch.metrics()
    sdk.completions.create(
        model=MODEL_REF, prompt=PROMPT, max_tokens=2, extra_headers={"X-Priority": "batch"}
    )
    sdk.chat.completions.create(
        model=MODEL_REF, messages=CHAT, max_tokens=2, metadata={"priority": "batch"}
    )
    sdk.completions.create(model=MODEL_REF, prompt=PROMPT, max_tokens=2)
    after = orch.metrics()
    for name in ("tasks_enqueued_total", "tasks_started_total"):
        for priority, added in (("batch", 2), ("interactive", 1)):
            grown = after.total(name, priority=priority) - before.total(name, priority=priority)
            assert grown == added, (name, priority)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(
            model=MODEL_REF, prompt=PROMPT, extra_body={"metadata": {"priority": "urgent"}}
        )
    assert caught.value.body["param"] == "metadata.priority"


def test_closing_a_stream_cancels_its_task(
    sdk: openai.OpenAI, orch: Client, openai_daemon: Daemon
) -> None:
    """ORCH-3017: a client that stops reading a stream cancels the task and frees its slot."""
    before = orch.metrics().total("tasks_canceled_total", reason="disconnect")
    stream = sdk.completions.create(
        model=MODEL_REF, prompt=PROMPT, max_tokens=LONG_MAX_TOKENS, stream=True
    )
    first = next(iter(stream))
    stream.close()
    wait_until(
        lambda: orch.metrics().total("tasks_canceled_total", reason="disconnect") == before + 1,
        timeout=30,
        what="the abandoned stream's task to be canceled",
    )
    orch.wait_idle(timeout=30)
    wait_engine_idle(openai_daemon)
    transcript = orch.transcript(task_id_of(first.id))
    assert transcript.terminal.data["finish_reason"] == "canceled"
    assert len(transcript.tokens) < LONG_MAX_TOKENS


def test_a_client_that_gives_up_waiting_cancels_its_task(
    openai_daemon: Daemon, orch: Client
) -> None:
    """ORCH-3017: without streaming too, a client that goes away cancels its task."""
    before = orch.metrics().total("tasks_canceled_total", reason="disconnect")
    impatient = openai.OpenAI(
        base_url=openai_daemon.base_url + "/v1",
        api_key=orch.key,
        max_retries=0,
        timeout=2.0,
    )
    with pytest.raises(openai.APITimeoutError):
        impatient.completions.create(model=MODEL_REF, prompt=PROMPT, max_tokens=LONG_MAX_TOKENS)
    impatient.close()
    wait_until(
        lambda: orch.metrics().total("tasks_canceled_total", reason="disconnect") == before + 1,
        timeout=30,
        what="the abandoned request's task to be canceled",
    )
    orch.wait_idle(timeout=30)
    wait_engine_idle(openai_daemon)
