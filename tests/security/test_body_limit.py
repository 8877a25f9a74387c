"""Request bodies above `server.max_body_bytes` are refused, and nothing else is (ORCH-2006).

The daemon of this tier takes bodies of at most 4096 bytes. A larger one gets a 413
envelope naming the limit, whether it announces its length or streams it chunked, on
the data and the control plane; a body of exactly the limit is read as usual. A refused
body costs the daemon nothing lasting: it goes on admitting and streaming tasks.
Authentication comes first: an oversized body without a key is a 401, never read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.support import Client, task_body
from tests.security.conftest import MAX_BODY_BYTES, Secured

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON, padded with trailing spaces to exactly ``size`` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    envelope = response.json()
    assert envelope["code"] == "INVALID_PARAMS"
    assert envelope["retriable"] is False
    (error,) = envelope["errors"]
    assert (error["loc"], error["type"]) == ("body", "too_large")
    assert str(MAX_BODY_BYTES) in error["msg"]


@pytest.fixture
def client(secured: Secured) -> Iterator[Client]:
    """A data-plane client; the pool is idle again after each test."""
    yield secured.daemon.client()
    secured.daemon.client(secured.control_key).wait_idle()


def test_a_body_of_exactly_the_limit_is_accepted(client: Client) -> None:
    """ORCH-2006: 4096 bytes (a valid task padded with whitespace) are admitted."""
    body = task_body(max_tokens=4)
    response = client.post("/v1/tasks", content=padded(body, MAX_BODY_BYTES), headers=JSON)
    assert response.status_code == 202, response.text
    assert client.transcript(body["task_id"]).terminal.data["finish_reason"] == "length"


def test_one_byte_over_the_limit_is_413(client: Client) -> None:
    """ORCH-2006: 4097 bytes with a Content-Length are refused with a 413 envelope, and
    the task id stays free."""
    body = task_body(max_tokens=4)
    response = client.post("/v1/tasks", content=padded(body, MAX_BODY_BYTES + 1), headers=JSON)
    assert_too_large(response)
    assert client.submit(body).status_code == 202


def test_a_chunked_body_over_the_limit_is_413(client: Client) -> None:
    """ORCH-2006: a body streamed without a length is cut off at the limit as well."""
    body = task_body(prompt="x" * (2 * MAX_BODY_BYTES))
    raw = json.dumps(body).encode()
    response = client.post("/v1/tasks", content=chunks(raw), headers=JSON)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert_too_large(response)


def test_control_plane_bodies_have_the_same_limit(secured: Secured, client: Client) -> None:
    """ORCH-2006, ORCH-3035: an oversized drain request with the control key is 413."""
    raw = padded({"deadline_ms": 1000}, MAX_BODY_BYTES + 100)
    response = client.post(
        "/v1/pools/tiny/drain", key=secured.control_key, content=raw, headers=JSON
    )
    assert_too_large(response)


def test_an_oversized_body_without_a_key_is_401(client: Client) -> None:
    """ORCH-3035: authentication is checked before any body is read."""
    raw = padded(task_body(), 4 * MAX_BODY_BYTES)
    response = client.post("/v1/tasks", key=None, content=raw, headers=JSON)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "UNAUTHORIZED"


def test_the_daemon_keeps_serving_after_a_burst_of_oversized_bodies(client: Client) -> None:
    """ORCH-2006: 50 oversized bodies in a row leave the daemon live and admitting."""
    raw = padded(task_body(), MAX_BODY_BYTES * 16)
    for _ in range(50):
        assert_too_large(client.post("/v1/tasks", content=raw, headers=JSON))
    assert client.get("/livez", key=None).status_code == 200
    transcript = client.run(task_body(max_tokens=4))
    assert transcript.terminal.data["finish_reason"] == "length"
