"""No Ready pool: the OpenAI routes answer 503 in OpenAI's shape, with retry hints.

In-process app whose only pool never preloads (its engine address is closed), so every
request meets a pool that is not Ready (ORCH-3010).
"""

from __future__ import annotations

import uuid

import pytest

from orchestratord_server.config import parse_config
from tests.server.conftest import DATA_KEY, POOL_CONFIG, CheckedClient, make_client

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}
COMPLETION = {"model": "tiny", "prompt": "Hello", "max_tokens": 4}


@pytest.fixture
def unready() -> CheckedClient:
    config = parse_config({"auth": {"api_keys": [DATA_KEY]}, "pools": [POOL_CONFIG]})[0]
    return make_client(config)


@pytest.mark.parametrize(
    ("path", "body"), [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)]
)
def test_no_ready_pool_is_a_503_with_retry_hints(
    unready: CheckedClient, path: str, body: dict[str, object]
) -> None:
    """ORCH-3010, ORCH-3018, ORCH-2007: nothing is queued for a pool that is not Ready; the
    client gets the code OrchQueue gives and is told when to come back, in OpenAI's shape."""
    task = {
        "task_id": str(uuid.uuid4()),
        "session_id": str(uuid.uuid4()),
        "workload": "completion",
        "model_ref": "tiny",
        "engine": "llamacpp",
        "ctx": 2048,
        "priority": "interactive",
        "prompt": "Hello",
        "max_tokens": 4,
        "deadline_ms": 30000,
    }
    orchqueue = unready.post("/v1/tasks", json=task)
    assert orchqueue.status_code == 503
    for stream in (False, True):
        response = unready.post(path, json={**body, "stream": stream})
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["type"] == "server_error"
        assert error["code"] == orchqueue.json()["code"]
        assert int(response.headers["retry-after"]) >= 1
        assert int(response.headers["retry-after-ms"]) == int(response.headers["x-backoff-ms"])
    listed = unready.get("/v1/models").json()["data"]
    assert [model["id"] for model in listed] == ["tiny"]
