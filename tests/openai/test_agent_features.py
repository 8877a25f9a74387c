"""What agent frameworks need, through real clients against a real model (issue 16).

One daemon runs SmolLM2-135M-Instruct on llama.cpp twice: a completion pool served as
`smollm2` (alias `gpt-4o-mini`) and an embedding pool served as `smollm2-embed`. The
official `openai` SDK and LangChain's `langchain-openai` call it unmodified. Tool calls
and JSON answers are decoded under a JSON Schema on the engine, so they parse whatever
the (tiny) model would have liked to say; the tests check the shapes a client relies on,
for many seeds where a property must always hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

from orchestratord_server.config import EMBEDDED_MODEL_REF
from tests.integration.support import (
    DATA_KEY,
    Client,
    Daemon,
    check_transcript,
    free_port,
    new_id,
    running_daemon,
)
from tests.openai.support import task_id_of

pytestmark = pytest.mark.integration

CHAT_MODEL = "smollm2"
ALIAS = "gpt-4o-mini"
EMBED_MODEL = "smollm2-embed"
ORIGIN = "https://chat.example.org"
#: SmolLM2-135M's hidden size: the length of its embeddings.
DIMENSION = 576
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather of a city",
            "parameters": WEATHER_PARAMETERS,
        },
    }
]
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


class Person(BaseModel):
    name: str
    age: int


def _pool(pool_id: str, slots: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": pool_id,
        "engine": "llamacpp",
        "model": EMBEDDED_MODEL_REF,
        "ctx": 2048,
        "device_kind": "cpu",
        "devices": [0],
        "queue": {"capacity": 1, "full_policy": "reject"},
        "timeouts": {"wall_ms": 180_000, "idle_ms": 60_000},
        "replicas": [{"id": "r0", "launch": {"slots": slots, "ctx_per_slot": 2048, "threads": 1}}],
        **fields,
    }


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    config = {
        "allow_cpu_pools": True,
        "server": {
            "port": free_port(),
            "log_format": "json",
            "log_level": "info",
            "cors_origins": [ORIGIN],
        },
        "auth": {"api_keys": [DATA_KEY]},
        "pools": [
            _pool("chat", 2, served_name=CHAT_MODEL, aliases=[ALIAS]),
            _pool("vectors", 1, workload="embedding", served_name=EMBED_MODEL),
        ],
    }
    with running_daemon(tmp_path_factory.mktemp("agent-features"), config) as running:
        yield running


@pytest.fixture
def orch(daemon: Daemon) -> Iterator[Client]:
    client = daemon.client()
    yield client
    client.cancel_all()


@pytest.fixture
def sdk(daemon: Daemon, orch: Client) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=daemon.base_url + "/v1", api_key=DATA_KEY, max_retries=0)
    yield client
    client.close()


def _arguments(call: Any) -> dict[str, Any]:
    parsed = json.loads(call.function.arguments)
    assert isinstance(parsed, dict)
    return parsed


# -- tools --------------------------------------------------------------------------------


def test_a_required_tool_call_parses_whole_and_streamed(sdk: openai.OpenAI) -> None:
    """`tool_choice: required`: the answer is a call of a given tool whose arguments are
    JSON satisfying its parameters, whole or streamed as `tool_calls` deltas."""
    for seed in range(3):
        answer = sdk.chat.completions.create(
            model=CHAT_MODEL,
            messages=QUESTION,  # type: ignore[arg-type]
            tools=TOOLS,
            tool_choice="required",
            max_tokens=96,
            seed=seed,
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls", choice
        assert choice.message.tool_calls, choice.message
        for call in choice.message.tool_calls:
            assert call.type == "function" and call.id
            assert call.function.name == "get_weather"  # type: ignore[union-attr]
            jsonschema.validate(_arguments(call), WEATHER_PARAMETERS)
    stream = sdk.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,
        tool_choice="required",
        max_tokens=96,
        seed=0,
        stream=True,
    )
    parts: dict[int, list[Any]] = {}
    reasons = []
    for chunk in stream:
        for choice in chunk.choices:
            reasons.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or ():
                parts.setdefault(delta.index, []).append(delta)
    assert reasons[-1] == "tool_calls"
    assert parts
    for deltas in parts.values():
        assert deltas[0].id and deltas[0].function.name == "get_weather"
        arguments = "".join(d.function.arguments or "" for d in deltas)
        jsonschema.validate(json.loads(arguments), WEATHER_PARAMETERS)


def test_a_tool_round_trip_replays_history_with_calls_and_results(sdk: openai.OpenAI) -> None:
    """An agent loop: the model calls the tool, the client runs it and sends back the
    history with the assistant's `tool_calls` and a `tool` message; the daemon accepts it
    and answers again (text or another call), naming the same tool."""
    first = sdk.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=96,
        seed=4,
    )
    message = first.choices[0].message
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    history: list[Any] = [
        *QUESTION,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 22 degrees"},
    ]
    second = sdk.chat.completions.create(
        model=CHAT_MODEL, messages=history, tools=TOOLS, max_tokens=96, seed=4
    )
    reply = second.choices[0]
    assert reply.finish_reason in ("stop", "tool_calls", "length")
    if reply.message.tool_calls:
        assert reply.message.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    else:
        assert reply.message.content
    assert second.usage is not None and first.usage is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens  # the history is in


# -- structured output --------------------------------------------------------------------


def test_parse_with_a_pydantic_model_returns_an_instance(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.parse(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format=Person,
        max_tokens=96,
        seed=1,
    )
    assert isinstance(answer.choices[0].message.parsed, Person)


def test_json_schema_answers_validate_for_every_seed(sdk: openai.OpenAI) -> None:
    """The engine decodes under the schema: every finished answer validates."""
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
    }
    finished = 0
    for seed in range(10):
        answer = sdk.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "Invent a person."}],
            response_format=response_format,
            max_tokens=96,
            seed=seed,
        )
        choice = answer.choices[0]
        if choice.finish_reason == "stop":
            finished += 1
            jsonschema.validate(json.loads(choice.message.content or ""), PERSON_SCHEMA)
    assert finished >= 8, finished
    plain = sdk.completions.create(
        model=CHAT_MODEL,
        prompt="A person as JSON:",
        max_tokens=96,
        seed=2,
        extra_body={"response_format": {"type": "json_object"}},
    )
    assert isinstance(json.loads(plain.choices[0].text), dict)


# -- logprobs and n -----------------------------------------------------------------------


def test_logprobs_come_per_token_in_each_apis_shape(sdk: openai.OpenAI) -> None:
    chat = sdk.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=8,
        seed=3,
        logprobs=True,
        top_logprobs=2,
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and chat.usage is not None
    assert len(content) == chat.usage.completion_tokens
    assert "".join(entry.token for entry in content) == chat.choices[0].message.content
    assert all(entry.logprob <= 0 and len(entry.top_logprobs) == 2 for entry in content)
    completion = sdk.completions.create(
        model=CHAT_MODEL, prompt="The capital of France is", max_tokens=6, seed=3, logprobs=1
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens is not None
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert len(logprobs.token_logprobs or ()) == len(logprobs.tokens)
    assert [len(top) for top in logprobs.top_logprobs or ()] == [1] * len(logprobs.tokens)


def test_n_choices_run_as_n_tasks_and_repeat_with_a_seed(sdk: openai.OpenAI, orch: Client) -> None:
    def ask() -> Any:
        return sdk.chat.completions.create(
            model=ALIAS,
            messages=QUESTION,  # type: ignore[arg-type]
            max_tokens=8,
            n=3,
            seed=11,
        )

    first, again = ask(), ask()
    assert [c.index for c in first.choices] == [0, 1, 2]
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in again.choices]
    assert len(set(texts)) > 1, texts  # derived seeds differ per choice
    transcript = orch.transcript(task_id_of(first.id))
    assert transcript.started is not None and transcript.started["seed"] == 11


# -- lenient requests, names, CORS ----------------------------------------------------------


def test_the_no_op_defaults_of_clients_are_accepted(daemon: Daemon, orch: Client) -> None:
    body = {
        "model": CHAT_MODEL,
        "messages": QUESTION,
        "max_tokens": 4,
        "logprobs": False,
        "response_format": {"type": "text"},
        "tool_choice": "none",
        "tools": [],
        "logit_bias": {},
        "parallel_tool_calls": True,
        "n": 1,
        "store": False,
        "vendor_knob": {"x": 1},
    }
    for _ in range(2):
        answer = orch.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
    warned = [r for r in daemon.log_records() if r.get("event") == "openai.field_ignored"]
    assert sorted(r["field"] for r in warned) == ["store", "vendor_knob"]


def test_models_are_listed_by_served_name_and_found_by_alias(sdk: openai.OpenAI) -> None:
    assert [m.id for m in sdk.models.list()] == [CHAT_MODEL, EMBED_MODEL]
    assert sdk.models.retrieve(ALIAS).id == ALIAS
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("gpt-5")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=EMBED_MODEL, messages=QUESTION, max_tokens=2)  # type: ignore[arg-type]
    assert caught.value.body["param"] == "model"  # type: ignore[index]


def test_a_browser_origin_in_cors_origins_may_call(daemon: Daemon) -> None:
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    preflight = httpx.options(daemon.base_url + "/v1/chat/completions", headers=headers)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(
        daemon.base_url + "/v1/chat/completions", headers={**headers, "Origin": "https://x.y"}
    )
    assert "access-control-allow-origin" not in other.headers
    listed = httpx.get(
        daemon.base_url + "/v1/models",
        headers={"Origin": ORIGIN, "Authorization": f"Bearer {DATA_KEY}"},
    )
    assert listed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-backoff-ms" in listed.headers["access-control-expose-headers"].lower()


# -- OrchQueue chat and embedding tasks ------------------------------------------------------


def _chat_task(**fields: Any) -> dict[str, Any]:
    return {
        "task_id": new_id(),
        "session_id": new_id(),
        "workload": "completion",
        "model_ref": EMBEDDED_MODEL_REF,
        "engine": "llamacpp",
        "ctx": 2048,
        "priority": "interactive",
        "max_tokens": 96,
        "deadline_ms": 120_000,
        "messages": QUESTION,
        **fields,
    }


def test_an_orchqueue_chat_task_streams_its_tool_calls(orch: Client) -> None:
    transcript = orch.run(_chat_task(tools=TOOLS, tool_choice="required", seed=5))
    assert transcript.terminal.event == "end"
    calls = [call for token in transcript.tokens for call in token.get("tool_calls", ())]
    assert calls and calls[0]["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), WEATHER_PARAMETERS)
    assert transcript.text == ""  # the protocol's JSON never reaches the client


def test_an_orchqueue_embedding_task_streams_its_vectors(orch: Client) -> None:
    body = _chat_task(workload="embedding", inputs=["first passage", "second"], max_tokens=1)
    del body["messages"]
    transcript = orch.run(body)
    vectors = [f.data for f in transcript.frames if f.event == "embedding"]
    assert [v["index"] for v in vectors] == [0, 1]
    assert {len(v["embedding"]) for v in vectors} == {DIMENSION}
    assert transcript.terminal.event == "end"
    rerank = orch.submit({**body, "task_id": new_id(), "workload": "rerank"}, check=False)
    assert rerank.status_code == 501
    assert "rerank" in rerank.json()["message"]


def test_chat_tasks_are_cancelled_and_backpressured_like_completions(
    sdk: openai.OpenAI, orch: Client
) -> None:
    """Two running chat tasks and one queued fill the pool: the next chat request is a
    RateLimitError with retry hints; a cancel ends a running chat task at once."""
    long = {"max_tokens": 1500, "messages": [{"role": "user", "content": "Tell a long story."}]}
    ids = [orch.admit(_chat_task(**long))["task_id"] for _ in range(3)]
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, max_tokens=2)  # type: ignore[arg-type]
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert orch.cancel(ids[0]).status_code == 204
    transcript = orch.transcript(ids[0])
    assert transcript.terminal.data["finish_reason"] == "canceled"
    check_transcript(transcript.frames, task_id=ids[0])


# -- embeddings ---------------------------------------------------------------------------


def test_embeddings_of_a_batch_are_ordered_sized_and_deterministic(sdk: openai.OpenAI) -> None:
    texts = ["the weather in Paris", "a queue of tasks", "the weather in Paris"]
    first = sdk.embeddings.create(model=EMBED_MODEL, input=texts)  # base64 on the wire
    floats = sdk.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float")
    assert [d.index for d in first.data] == [0, 1, 2]
    assert {len(d.embedding) for d in first.data} == {DIMENSION}
    assert first.data[0].embedding == first.data[2].embedding
    assert first.data[0].embedding != first.data[1].embedding
    for packed, plain in zip(first.data, floats.data, strict=True):
        assert packed.embedding == pytest.approx(plain.embedding, rel=1e-6)
    assert first.usage.prompt_tokens > 0
    same = sdk.embeddings.create(model=EMBED_MODEL, input=texts[0], dimensions=DIMENSION)
    assert same.data[0].embedding == first.data[0].embedding
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model=EMBED_MODEL, input="x", dimensions=64)
    assert caught.value.body["param"] == "dimensions"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as tokens:
        sdk.embeddings.create(model=EMBED_MODEL, input=[[1, 2, 3]])
    assert tokens.value.body["param"] == "input"  # type: ignore[index]


# -- LangChain ------------------------------------------------------------------------------


@tool
def get_weather(city: str) -> str:
    """The current weather of a city."""
    return f"Sunny in {city}"


def _langchain(daemon: Daemon, **fields: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=daemon.base_url + "/v1",
        api_key=DATA_KEY,  # type: ignore[arg-type]
        model=CHAT_MODEL,
        max_retries=0,
        **fields,
    )


def test_langchain_chat_invokes_streams_calls_tools_and_structures(daemon: Daemon) -> None:
    chat = _langchain(daemon, max_tokens=24, seed=7)
    whole = chat.invoke("What is the capital of France?")
    assert isinstance(whole, AIMessage) and isinstance(whole.content, str) and whole.content
    streamed = "".join(str(c.content) for c in chat.stream("What is the capital of France?"))
    assert streamed == whole.content
    tools = _langchain(daemon, max_tokens=96, seed=7).bind_tools(
        [get_weather], tool_choice="required"
    )
    called = tools.invoke("What is the weather in Paris?")
    assert isinstance(called, AIMessage) and called.tool_calls
    assert called.tool_calls[0]["name"] == "get_weather"
    assert isinstance(called.tool_calls[0]["args"].get("city"), str)
    structured = _langchain(daemon, max_tokens=96, seed=7).with_structured_output(Person)
    assert isinstance(structured.invoke("Invent a person."), Person)


def test_langchain_embeddings_embed_documents_and_queries(daemon: Daemon) -> None:
    embeddings = OpenAIEmbeddings(
        base_url=daemon.base_url + "/v1",
        api_key=DATA_KEY,  # type: ignore[arg-type]
        model=EMBED_MODEL,
        check_embedding_ctx_length=False,  # send text, not tiktoken ids
        max_retries=0,
    )
    documents = embeddings.embed_documents(["first passage", "second passage"])
    assert len(documents) == 2 and {len(v) for v in documents} == {DIMENSION}
    assert embeddings.embed_query("first passage") == pytest.approx(documents[0], rel=1e-6)
