"""connexion's layers prepared once per operation still check every request alike.

The prepared layers (orchestratord_server/prepared_layers.py) build validators and wrap
handlers once; these tests drive the same operation many times and check that each
request is still judged on its own, and that no request pays for a signature read.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from .conftest import CheckedClient
from .test_app import TASK


def test_an_unknown_query_parameter_is_refused_on_an_operation_without_parameters(
    client: CheckedClient,
) -> None:
    """ORCH-2006: strict validation still names a stray query parameter of createTask,
    which declares none, after good requests have gone through."""
    for _ in range(3):
        assert client.post("/v1/tasks", json=TASK).status_code in (202, 503)
    response = client.post("/v1/tasks?surprise=1", json=TASK)
    assert response.status_code == 400
    assert [e["loc"] for e in response.json()["errors"]] == ["query.surprise"]


def test_each_request_gets_its_own_content_type_and_parameter_checks(
    client: CheckedClient,
) -> None:
    """Alternating good and bad requests to one operation: each answered on its merits."""
    for _ in range(3):
        bad_type = client.post(
            "/v1/tasks", content=b"hello", headers={"Content-Type": "text/plain"}
        )
        assert bad_type.status_code == 415
        assert client.get("/v1/tasks/not-a-uuid/stream").status_code == 400
        good = client.get(f"/v1/tasks/{TASK['task_id']}/stream?queue_updates=true")
        assert good.status_code == 404


def test_requests_read_no_handler_or_verifier_signature(
    client: CheckedClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """connexion read signatures three times per request; prepared, a request reads none."""
    client.post("/v1/tasks", json=TASK)  # each operation prepares itself on first use
    client.get(f"/v1/tasks/{TASK['task_id']}/stream")
    reads: list[Any] = []
    real = inspect.signature

    def counting(obj: Any, *args: Any, **kwargs: Any) -> inspect.Signature:
        reads.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting)
    for _ in range(5):
        client.post("/v1/tasks", json=TASK)
        client.get(f"/v1/tasks/{TASK['task_id']}/stream")
    assert reads == []
