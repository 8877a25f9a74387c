"""The HTTP shell as a client sees it: routing, validation envelopes, auth, open routes.

Every response here is also checked against the contracts (see conftest.py).
"""

from __future__ import annotations

import re

import pytest

from orchestratord_server.generated.operations import OPERATIONS
from orchestratord_server.handlers import handler_table
from orchestratord_server.state import ServerState

from .conftest import CONTROL_KEY, DATA_KEY, CheckedClient, make_client

TASK = {
    "task_id": "8a2b8f7e-5c4d-4e3f-9a1b-2c3d4e5f6a7b",
    "session_id": "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b",
    "workload": "completion",
    "model_ref": "tiny",
    "engine": "llamacpp",
    "ctx": 1024,
    "priority": "interactive",
    "prompt": "Hello",
    "max_tokens": 8,
    "deadline_ms": 30000,
}
SOME_UUID = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
#: The operations that answer 503 while the pool has no live replica (ORCH-3018).
UNAVAILABLE_WITHOUT_ENGINE = {"createTask", "createCompletion", "createChatCompletion", "getReadyz"}


def _concrete(path: str) -> str:
    value = "pool-a" if path.startswith("/v1/pools") else SOME_UUID
    return re.sub(r"\{[^}]+\}", value, path)


def _body(operation_id: str) -> dict[str, object] | None:
    bodies = {
        "createTask": TASK,
        "drainPool": {"deadline_ms": 1000},
        "reloadPool": {"new_model_ref": "tiny-v2"},
        "createCompletion": {"model": "tiny", "prompt": "Hello"},
        "createChatCompletion": {
            "model": "tiny",
            "messages": [{"role": "user", "content": "Hello"}],
        },
    }
    return bodies.get(operation_id)


def test_every_contract_operation_has_a_handler(config) -> None:
    """ORCH-3044: each operationId of both contracts resolves to a handler."""
    table = handler_table(ServerState(config=config, key_rings=None))
    assert set(table) == set(OPERATIONS)


#: Operations this in-process check cannot call, and where they are reached instead.
#: Starlette's test client returns only once the app has finished answering.
ENDLESS = {
    "streamControlEvents": "tests/server/test_control_events.py follows it on a real daemon",
}


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS.keys() - ENDLESS.keys()))
def test_every_contract_operation_is_routed(client: CheckedClient, operation_id: str) -> None:
    """A valid request reaches the operation's handler: never the router's own 404/405.

    (A handler's 404 for an unknown task or session is a routed answer.)
    """
    operation = OPERATIONS[operation_id]
    key = CONTROL_KEY if operation.contract == "control" else DATA_KEY
    response = client.request(
        operation.method.upper(), _concrete(operation.path), key=key, json=_body(operation_id)
    )
    assert response.status_code != 405, response.text
    if response.status_code == 404:
        body = response.json()
        message = body["error"]["message"] if "error" in body else body["message"]
        assert message != "no such route"
    if response.status_code >= 500:
        # The in-process app's pool has no live engine: submissions and readiness say so.
        assert response.status_code == 503, response.text
        assert operation_id in UNAVAILABLE_WITHOUT_ENGINE, response.text


def test_livez_is_open(client: CheckedClient) -> None:
    response = client.get("/livez", key=None)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_503_until_a_pool_is_ready(client: CheckedClient) -> None:
    """ORCH-3002: no pool has preloaded, so the daemon is not ready."""
    response = client.get("/readyz", key=None)
    assert response.status_code == 503
    assert response.json() == {"ready": False, "pools": [{"pool_id": "pool-a", "ready": False}]}


def test_metrics_is_open_and_prometheus_text(client: CheckedClient) -> None:
    response = client.get("/metrics", key=None)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")


def test_api_page_and_both_contracts_are_served(client: CheckedClient) -> None:
    page = client.get("/docs/", key=None)
    assert page.status_code == 200
    assert "swagger" in page.text.lower()
    for plane in ("data", "control"):
        spec = client.get(f"/openapi/{plane}.json", key=None).json()
        assert spec["info"]["version"].startswith("1.")


def test_unknown_route_gets_the_envelope(client: CheckedClient) -> None:
    response = client.get("/nothing-here")
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


def test_an_unknown_v1_route_answers_in_openais_shape(client: CheckedClient) -> None:
    """An OpenAI client calling a route this server lacks (`/v1/responses`,
    `/v1/audio/...`) reads a 404 it understands; OrchQueue paths keep the envelope."""
    response = client.post("/v1/responses", json={"model": "m", "input": "hi"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
    assert response.json()["error"]["type"] == "invalid_request_error"
    orchqueue = client.get("/v1/tasks/not-a-route/at-all")
    assert orchqueue.status_code == 404
    assert orchqueue.json()["code"] == "NOT_FOUND"


def test_wrong_method_gets_the_envelope(client: CheckedClient) -> None:
    response = client.request("PUT", "/v1/tasks", json=TASK)
    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize("path", sorted({op.path for op in OPERATIONS.values()}))
def test_orch_2006_a_405_allows_every_method_the_contracts_give_the_path(
    client: CheckedClient, path: str
) -> None:
    """The `Allow` of a 405 once named only the first route's method (`DELETE` for
    `/v1/sessions/{id}`, which also has GET)."""
    declared = {op.method.upper() for op in OPERATIONS.values() if op.path == path}
    response = client.request("PATCH", _concrete(path), key=DATA_KEY)
    assert response.status_code == 405, response.text
    assert set(response.headers["allow"].split(", ")) == declared


def test_malformed_json_gets_invalid_params(client: CheckedClient) -> None:
    """ORCH-2006: broken JSON is a 400 envelope, not a framework page."""
    response = client.post(
        "/v1/tasks", content=b'{"task_id": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "INVALID_PARAMS"
    assert body["retriable"] is False
    assert body["errors"]


def test_every_bad_field_is_named_in_one_400(client: CheckedClient) -> None:
    """ORCH-2006: all invalid fields at once, uuid format included."""
    bad = {**TASK, "task_id": "not-a-uuid", "ctx": "big", "priority": "urgent"}
    del bad["max_tokens"]
    bad["surprise"] = 1
    response = client.post("/v1/tasks", json=bad)
    assert response.status_code == 400
    locations = {error["loc"] for error in response.json()["errors"]}
    assert locations == {
        "body.task_id",
        "body.ctx",
        "body.priority",
        "body.max_tokens",
        "body.surprise",
    }


def test_empty_body_is_invalid_params(client: CheckedClient) -> None:
    response = client.post("/v1/tasks", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["loc"] == "body"


def test_wrong_content_type_gets_the_envelope(client: CheckedClient) -> None:
    response = client.post("/v1/tasks", content=b"hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    body = response.json()
    assert body["code"] == "INVALID_PARAMS"
    assert [e["loc"] for e in body["errors"]] == ["header.Content-Type"]


def test_oversized_body_is_refused(config) -> None:
    small = config.model_copy(
        update={"server": config.server.model_copy(update={"max_body_bytes": 1024})}
    )
    client = make_client(small)
    response = client.post("/v1/tasks", json={**TASK, "prompt": "x" * 4096})
    assert response.status_code == 413
    assert response.json()["code"] == "INVALID_PARAMS"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"X-API-Key": DATA_KEY}, 503),
        ({"Authorization": f"Bearer {DATA_KEY}"}, 503),
    ],
)
def test_data_plane_requires_a_data_key(client: CheckedClient, headers, status) -> None:
    """ORCH-3035: no key or a wrong key is refused with 401 before any handler runs.

    With a right key the handler answers; no engine runs here, so the pool is unavailable.
    """
    response = client.post("/v1/tasks", json=TASK, headers=headers, key=None)
    assert response.status_code == status
    if status == 401:
        assert response.json()["code"] == "UNAUTHORIZED"
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_planes_have_their_own_keys(client: CheckedClient) -> None:
    """ORCH-3035: the data key does not open the control plane, nor the reverse: a key
    of the other plane is a known caller without that right (403)."""
    forbidden = client.get("/v1/replicasets", key=DATA_KEY)
    assert forbidden.status_code == 403
    assert forbidden.json()["code"] == "FORBIDDEN"
    assert client.get("/v1/replicasets", key=CONTROL_KEY).status_code == 200
    assert client.post(f"/v1/tasks/{SOME_UUID}/cancel", key=CONTROL_KEY).status_code == 403


def test_a_route_can_be_closed_by_config(config) -> None:
    """ORCH-3035: /metrics requires a key when the config removes it from open_routes."""
    closed = config.model_copy(
        update={"auth": config.auth.model_copy(update={"open_routes": ("/livez",)})}
    )
    client = make_client(closed)
    assert client.get("/metrics", key=None).status_code == 401
    assert client.get("/metrics", key=CONTROL_KEY).status_code == 200
    assert client.get("/livez", key=None).status_code == 200


def test_auth_can_be_disabled(config) -> None:
    open_config = config.model_copy(
        update={"auth": config.auth.model_copy(update={"enabled": False})}
    )
    client = make_client(open_config, key=None)
    assert client.post("/v1/tasks", json=TASK).status_code == 503
