"""Data- and control-plane handlers without an engine: what a client sees before any
replica is Ready, and every refusal that needs no engine (contract-checked responses)."""

from __future__ import annotations

import pytest

from .conftest import CONTROL_KEY, CheckedClient
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


def test_other_workloads_are_not_implemented(client: CheckedClient) -> None:
    body = {k: v for k, v in TASK.items() if k != "prompt"}
    response = client.post("/v1/tasks", json={**body, "workload": "embedding", "inputs": ["a"]})
    assert response.status_code == 501
    assert response.json()["code"] == "NOT_IMPLEMENTED"


@pytest.mark.parametrize(
    "change", [{"prompt": None}, {"inputs": ["a", "b"]}], ids=["no-prompt", "inputs"]
)
def test_a_completion_takes_a_prompt(client: CheckedClient, change: dict[str, object]) -> None:
    body = {k: v for k, v in {**TASK, **change}.items() if v is not None}
    response = client.post("/v1/tasks", json=body)
    assert response.status_code == 400
    assert [e["loc"] for e in response.json()["errors"]] == ["body.prompt"]


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
