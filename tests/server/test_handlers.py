"""Data- and control-plane handlers without an engine: what a client sees before any
replica is Ready, and every refusal that needs no engine (contract-checked responses)."""

from __future__ import annotations

import time

import pytest

from orchestratord_server.config import Config, OpenAIConfig

from .conftest import CONTROL_KEY, CheckedClient, make_client
from .test_app import TASK

SOME_UUID = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"


def test_no_live_replica_is_pool_unavailable_with_retry_hints(client: CheckedClient) -> None:
    """ORCH-3018, ORCH-2007: fail fast with 503 and backoff headers, never a fallback."""
    response = client.post("/v1/tasks", json=TASK)
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "POOL_UNAVAILABLE"
    assert body["retriable"] is True
    assert body["engine"] == "llamacpp"
    assert int(response.headers["Retry-After"]) >= 1
    assert int(response.headers["X-Backoff-Ms"]) == body["retry_after_ms"] >= 1


def test_unknown_model_is_invalid_params(client: CheckedClient) -> None:
    response = client.post("/v1/tasks", json={**TASK, "model_ref": "no-such-model"})
    assert response.status_code == 400
    assert [e["loc"] for e in response.json()["errors"]] == ["body.model_ref"]


def test_ctx_above_the_model_limit_is_invalid_params(client: CheckedClient) -> None:
    """ORCH-3014: refused before enqueue, naming ctx."""
    response = client.post("/v1/tasks", json={**TASK, "ctx": 4096})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "INVALID_PARAMS"
    assert [e["loc"] for e in body["errors"]] == ["body.ctx"]
    assert "Retry-After" not in response.headers


def test_token_budget_over_ctx_is_invalid_params(client: CheckedClient) -> None:
    """ORCH-3015: prompt tokens + max_tokens must fit ctx."""
    response = client.post("/v1/tasks", json={**TASK, "ctx": 64, "max_tokens": 63})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_PARAMS"


@pytest.mark.parametrize("workload", ["embedding", "rerank"])
def test_orch_2001_a_workload_no_engine_serves_is_not_implemented(
    client: CheckedClient, workload: str
) -> None:
    body = {k: v for k, v in TASK.items() if k != "prompt"}
    response = client.post("/v1/tasks", json={**body, "workload": workload, "inputs": ["a"]})
    assert response.status_code == 501
    assert response.json()["code"] == "NOT_IMPLEMENTED"
    assert response.json()["retriable"] is False


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": None}, "body.prompt"),
        ({"inputs": ["a"]}, "body.inputs"),
        ({"prompt": None, "inputs": ["a", "b"]}, "body.inputs"),
        ({"prompt": None, "workload": "embedding"}, "body.inputs"),
        ({"prompt": ""}, "body.prompt"),
        ({"prompt": None, "inputs": [""]}, "body.inputs[0]"),
        ({"prompt": None, "inputs": []}, "body.inputs"),
    ],
    ids=[
        "no-text",
        "prompt-and-inputs",
        "completion-with-two-inputs",
        "embedding-without-inputs",
        "empty-prompt",
        "empty-input",
        "no-inputs",
    ],
)
def test_orch_2001_a_task_without_usable_text_is_refused_naming_the_field(
    client: CheckedClient, change: dict[str, object], field: str
) -> None:
    """Every input that cannot produce a result is refused at admission (400 naming the
    field), never admitted to fail later."""
    body = {k: v for k, v in {**TASK, **change}.items() if v is not None}
    response = client.post("/v1/tasks", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_PARAMS"
    assert [e["loc"] for e in response.json()["errors"]] == [field]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/tasks/not-a-uuid/stream"),
        ("POST", "/v1/tasks/not-a-uuid/cancel"),
        ("GET", "/v1/sessions/not-a-uuid"),
        ("DELETE", "/v1/sessions/not-a-uuid"),
    ],
)
def test_bad_uuid_in_path_names_path_id(client: CheckedClient, method: str, path: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 400
    assert [e["loc"] for e in response.json()["errors"]] == ["path.id"]


@pytest.mark.parametrize("value", ["abc", "-1", "+1", "1e3", "", "9" * 19])
def test_orch_2002_a_last_event_id_that_is_not_a_decimal_number_is_400_naming_the_header(
    client: CheckedClient, value: str
) -> None:
    """Refused before the task is even looked up, as every malformed parameter is."""
    headers = {"Last-Event-ID": value}
    response = client.get(f"/v1/tasks/{SOME_UUID}/stream", headers=headers)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "INVALID_PARAMS"
    assert [e["loc"] for e in body["errors"]] == ["header.Last-Event-ID"]


@pytest.mark.parametrize(
    ("method", "path", "what"),
    [
        ("GET", f"/v1/tasks/{SOME_UUID}/stream", "task"),
        ("POST", f"/v1/tasks/{SOME_UUID}/cancel", "task"),
        ("GET", f"/v1/sessions/{SOME_UUID}", "session"),
        ("DELETE", f"/v1/sessions/{SOME_UUID}", "session"),
    ],
)
def test_unknown_ids_are_not_found(
    client: CheckedClient, method: str, path: str, what: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 404
    assert response.json() == {
        "code": "NOT_FOUND",
        "message": f"no such {what}",
        "retriable": False,
    }


def test_pool_health_before_preload(client: CheckedClient) -> None:
    """ORCH-2103: a pool that has not preloaded is neither live nor ready."""
    response = client.get("/v1/pools/pool-a/health", key=CONTROL_KEY)
    assert response.status_code == 200
    body = response.json()
    assert (body["live"], body["ready"], body["draining"]) == (False, False, False)
    assert body["pool_id"] == "pool-a"
    assert body["metrics"]["queue_depth"] == 0


def test_unknown_pool_health_is_not_found(client: CheckedClient) -> None:
    assert client.get("/v1/pools/nope/health", key=CONTROL_KEY).status_code == 404


def test_replica_sets_list_the_configured_model(client: CheckedClient) -> None:
    """ORCH-2104, ORCH-3007: one set per {engine, model, ...}, with its member pools."""
    response = client.get("/v1/replicasets", key=CONTROL_KEY)
    assert response.status_code == 200
    (replica_set,) = response.json()
    assert replica_set["engine"] == "llamacpp"
    assert replica_set["model_ref"] == "tiny"
    assert replica_set["pools"] == [{"pool_id": "pool-a", "ready": False, "draining": False}]


def test_orch_3025_during_a_shutdown_submissions_get_503_shutting_down_with_retry_hints(
    config: Config,
) -> None:
    """Once SIGTERM began the shutdown, every submission, OrchQueue or OpenAI, is refused
    503 SHUTTING_DOWN, retriable, with `Retry-After`, and readiness says not ready."""
    client = make_client(config)
    with client.running():
        runtime = client.app_state.runtime
        runtime.request_shutdown()
        deadline = time.monotonic() + 5
        while not runtime.shutting_down and time.monotonic() < deadline:
            time.sleep(0.01)
        answer = client.post("/v1/tasks", json=TASK)
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert (body["code"], body["retriable"], body["retry_after_ms"]) == (
            "SHUTTING_DOWN",
            True,
            1000,
        )
        assert (answer.headers["retry-after"], answer.headers["x-backoff-ms"]) == ("1", "1000")
        openai = client.post("/v1/completions", json={"model": "tiny", "prompt": "Hello"})
        assert openai.status_code == 503, openai.text
        assert openai.json()["error"]["code"] == "SHUTTING_DOWN"
        assert openai.headers["retry-after"] == "1"
        assert client.get("/readyz", key=None).status_code == 503


CHAT = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f"}}]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"messages": CHAT}, "body.messages"),
        ({"prompt": None, "messages": CHAT, "inputs": ["a"]}, "body.inputs"),
        ({"tools": TOOLS}, "body.tools"),
        ({"tool_choice": "auto"}, "body.tool_choice"),
        ({"prompt": None, "messages": [{"role": "assistant", "content": ""}]}, "messages"),
    ],
    ids=[
        "prompt-and-messages",
        "messages-and-inputs",
        "tools-without-chat",
        "tool-choice-without-chat",
        "chat-without-text",
    ],
)
def test_orch_2001_a_chat_task_carries_its_text_in_messages_only(
    client: CheckedClient, change: dict[str, object], field: str
) -> None:
    """A chat task's conversation is its only text; tools belong to a chat; a chat with no
    text at all is refused before admission, naming `messages`."""
    body = {k: v for k, v in {**TASK, **change}.items() if v is not None}
    response = client.post("/v1/tasks", json=body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == "INVALID_PARAMS"
    located = [e["loc"] for e in answer.get("errors") or ()]
    assert located == [field] or field in answer["message"], answer


@pytest.mark.parametrize("engine", ["tgi", "triton"])
@pytest.mark.parametrize(
    "asked",
    [{"tools": TOOLS}, {"response_format": {"type": "json_object"}}, {"logprobs": 2}],
    ids=["tools", "response_format", "logprobs"],
)
def test_a_feature_the_tasks_engine_lacks_is_refused_naming_the_engine(
    client: CheckedClient, engine: str, asked: dict[str, object]
) -> None:
    body = {k: v for k, v in TASK.items() if k != "prompt"}
    response = client.post("/v1/tasks", json={**body, "engine": engine, "messages": CHAT, **asked})
    assert response.status_code == 400, response.text
    assert f"engine {engine} does not support" in response.json()["message"]


def test_openai_strict_refuses_unknown_fields_that_lenient_mode_ignores(
    config: Config,
) -> None:
    body = {"model": TASK["model_ref"], "messages": CHAT, "max_tokens": 2, "store": True}
    lenient = make_client(config).post("/v1/chat/completions", json=body)
    assert lenient.status_code != 400, lenient.text  # past validation: no engine here
    strict = make_client(config.model_copy(update={"openai": OpenAIConfig(strict=True)}))
    refused = strict.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "store"
