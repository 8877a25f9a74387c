"""Every 4xx of the data plane against the running daemon, and authentication (ORCH-2006).

Each refusal is an ErrorEnvelope with a code from the closed ErrorKind set; a 400 names
every bad field in `errors`. All responses are checked against the contracts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.support import (
    DATA_KEY,
    POOL_ID,
    Client,
    daemon_config,
    new_id,
    orchestratord_command,
    running_daemon,
    task_body,
    tiny_pool_config,
    wait_until,
)
from tests.support.llamacpp import llamacpp_server

pytestmark = pytest.mark.integration


def locs(response: httpx.Response) -> set[str]:
    return {error["loc"] for error in response.json().get("errors", [])}


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    envelope: dict[str, Any] = response.json()
    assert envelope["code"] == code, envelope
    assert envelope["message"]
    return envelope


def test_malformed_json_is_400_on_body(client: Client) -> None:
    """ORCH-2006: JSON that does not parse is INVALID_PARAMS located at `body`."""
    response = client.post(
        "/v1/tasks", content=b'{"task_id": ', headers={"Content-Type": "application/json"}
    )
    envelope = assert_envelope(response, 400, "INVALID_PARAMS")
    assert envelope["retriable"] is False
    assert locs(response) == {"body"}


def test_every_bad_field_is_named(client: Client) -> None:
    """ORCH-2006: one 400 lists every invalid field of the body."""
    body = task_body(
        task_id="not-a-uuid",
        workload="speech",
        ctx="big",
        priority="urgent",
        max_tokens=0,
        colour="blue",
    )
    del body["session_id"]
    response = client.submit(body)
    assert_envelope(response, 400, "INVALID_PARAMS")
    assert locs(response) >= {
        "body.task_id",
        "body.session_id",
        "body.workload",
        "body.ctx",
        "body.priority",
        "body.max_tokens",
        "body.colour",
    }


def test_ctx_above_the_pool_limit_is_400_on_ctx(client: Client, main_daemon: Any) -> None:
    """ORCH-3014: ctx above the model's limit is refused before admission."""
    limit = main_daemon.config["pools"][0]["ctx"]
    response = client.submit(task_body(ctx=limit + 1, max_tokens=8))
    envelope = assert_envelope(response, 400, "INVALID_PARAMS")
    assert envelope["engine"] == "llamacpp"
    assert locs(response) == {"body.ctx"}


def test_prompt_plus_max_tokens_above_ctx_is_400(client: Client) -> None:
    """ORCH-3015: prompt tokens + max_tokens must fit ctx (100 'x' are 100 tokens)."""
    response = client.submit(task_body(prompt="x" * 100, ctx=64, max_tokens=10))
    assert_envelope(response, 400, "INVALID_PARAMS")
    assert locs(response) == {"body.max_tokens"}
    response = client.submit(task_body(prompt="hi", ctx=64, max_tokens=64))
    assert_envelope(response, 400, "INVALID_PARAMS")
    assert locs(response) == {"body.max_tokens"}


def test_unknown_model_ref_is_400_on_model_ref(client: Client) -> None:
    """ORCH-2001: no configured pool serves the model."""
    response = client.submit(task_body(model_ref="no-such-model"))
    assert_envelope(response, 400, "INVALID_PARAMS")
    assert locs(response) == {"body.model_ref"}


def test_unknown_sampler_profile_is_400(client: Client) -> None:
    """ORCH-2001: no pool of the model runs the requested sampler profile."""
    response = client.submit(task_body(sampler_profile_version="v999"))
    assert_envelope(response, 400, "INVALID_PARAMS")
    assert locs(response) == {"body.sampler_profile_version"}


def test_duplicate_task_id_is_409(client: Client) -> None:
    """ORCH-3024: a task_id in use is refused; the first task is unaffected."""
    body = task_body(max_tokens=8)
    client.admit(body)
    again = client.submit(body)
    envelope = assert_envelope(again, 409, "DUPLICATE_TASK")
    assert envelope["retriable"] is False
    transcript = client.transcript(body["task_id"])
    assert transcript.terminal.data["finish_reason"] == "length"
    # Still a duplicate once the task has ended.
    assert_envelope(client.submit(body), 409, "DUPLICATE_TASK")


SOME_ID = "6f1c2e0a-3b7d-4c59-9a8e-1d2f3c4b5a69"
PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/tasks", {}),
    ("GET", f"/v1/tasks/{SOME_ID}/stream", None),
    ("POST", f"/v1/tasks/{SOME_ID}/cancel", None),
    ("GET", f"/v1/sessions/{SOME_ID}", None),
    ("DELETE", f"/v1/sessions/{SOME_ID}", None),
    ("GET", f"/v1/pools/{POOL_ID}/health", None),
    ("GET", "/v1/replicasets", None),
]


@pytest.mark.parametrize(
    "credentials",
    [{}, {"Authorization": "Bearer wrong-key"}, {"X-API-Key": "wrong-key"}],
    ids=["no-key", "wrong-bearer", "wrong-api-key"],
)
def test_data_and_control_routes_need_a_valid_key(
    client: Client, credentials: dict[str, str]
) -> None:
    """ORCH-3035: no key or a wrong key is 401 on both planes, before any handler runs."""
    body = task_body()
    for method, path, payload in PROTECTED:
        json_body = body if payload is not None else None
        response = client.request(method, path, key=None, headers=credentials, json=json_body)
        assert_envelope(response, 401, "UNAUTHORIZED")
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    # The refused submission did not take the task id.
    assert client.submit(body).status_code == 202


def test_x_api_key_and_open_routes(client: Client) -> None:
    """ORCH-3035: X-API-Key is accepted; /livez, /readyz and /metrics are open by default."""
    response = client.get("/v1/replicasets", key=None, headers={"X-API-Key": DATA_KEY})
    assert response.status_code == 200, response.text
    for path in ("/livez", "/readyz", "/metrics"):
        assert client.get(path, key=None).status_code == 200


def test_unknown_ids_are_404(client: Client) -> None:
    """ORCH-2002, ORCH-2003, ORCH-2004, ORCH-2005, ORCH-2103: unknown ids get NOT_FOUND."""
    unknown = new_id()
    for method, path in [
        ("GET", f"/v1/tasks/{unknown}/stream"),
        ("POST", f"/v1/tasks/{unknown}/cancel"),
        ("GET", f"/v1/sessions/{unknown}"),
        ("DELETE", f"/v1/sessions/{unknown}"),
        ("GET", "/v1/pools/no-such-pool/health"),
    ]:
        assert_envelope(client.request(method, path), 404, "NOT_FOUND")


def test_bad_uuid_in_path_is_400_on_path_id(client: Client) -> None:
    """ORCH-2006: a path id that is not a UUID is INVALID_PARAMS located at `path.id`."""
    for method, path in [
        ("GET", "/v1/tasks/not-a-uuid/stream"),
        ("POST", "/v1/tasks/not-a-uuid/cancel"),
        ("GET", "/v1/sessions/not-a-uuid"),
        ("DELETE", "/v1/sessions/not-a-uuid"),
    ]:
        response = client.request(method, path)
        assert_envelope(response, 400, "INVALID_PARAMS")
        assert locs(response) == {"path.id"}, (method, path, response.text)


def test_orch_2001_embedding_workload_is_501(client: Client) -> None:
    """Engines here run completions; an embedding is NOT_IMPLEMENTED, not retriable."""
    body = task_body(workload="embedding", prompt=None, inputs=["a", "b"], max_tokens=1)
    envelope = assert_envelope(client.submit(body), 501, "NOT_IMPLEMENTED")
    assert envelope["retriable"] is False


@pytest.mark.parametrize(
    ("change", "field"),
    [({"prompt": ""}, "body.prompt"), ({"prompt": None, "inputs": []}, "body.inputs")],
    ids=["empty-prompt", "empty-inputs"],
)
def test_orch_2001_a_task_without_text_is_refused_at_admission(
    client: Client, change: dict[str, Any], field: str
) -> None:
    """On a real engine an empty prompt was admitted and then failed as a non-retriable
    INTERNAL error; it is a 400 naming the field, and the engine never sees it."""
    envelope = assert_envelope(client.submit(task_body(**change)), 400, "INVALID_PARAMS")
    assert [error["loc"] for error in envelope["errors"]] == [field]


def test_orch_2001_a_completion_may_carry_its_prompt_as_one_input(client: Client) -> None:
    """The contract lets a completion give its text as `inputs` with one element."""
    body = task_body(prompt=None, inputs=["The capital of France is"], max_tokens=4)
    transcript = client.run(body)
    assert transcript.terminal.event == "end", transcript.frames
    assert transcript.tokens


def test_a_pool_ctx_larger_than_launched_slots_is_refused_at_config_load(
    tmp_path: Path, tiny_model: Path
) -> None:
    """ORCH-3014, ORCH-3030: `ctx: 2048` over slots of 1024 tokens would admit tasks no
    slot can run; the config is refused up front, naming both numbers."""
    pool = tiny_pool_config(tiny_model, pool_ctx=2048, slots=2, ctx_per_slot=1024)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(daemon_config(pool)), encoding="utf-8")
    checked = subprocess.run(
        [*orchestratord_command(), "--check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 2
    assert "pools[0]" in checked.stderr
    assert "1024" in checked.stderr and "2048" in checked.stderr


def test_an_engine_with_smaller_slots_than_the_pool_ctx_never_becomes_ready(
    tmp_path: Path, tiny_model: Path
) -> None:
    """ORCH-3014, ORCH-3002: a running engine whose slots hold fewer tokens than the
    pool's ctx fails preload (logged, naming both sizes); the pool stays unready and tasks
    get 503 with retry hints instead of being cut short."""
    with llamacpp_server(tiny_model, slots=1, ctx_per_slot=1024) as engine:
        pool = tiny_pool_config(tiny_model, pool_ctx=2048)
        pool["replicas"] = [{"id": "r0", "url": engine.base_url}]
        with running_daemon(tmp_path, daemon_config(pool), wait_ready=False) as daemon:
            wait_until(
                lambda: any(
                    r.get("event") == "pool.preload" and "1024" in r.get("message", "")
                    for r in daemon.log_records()
                ),
                timeout=30,
                what="a preload failure naming the slot size",
            )
            client = daemon.client()
            assert client.get("/readyz", key=None).status_code == 503
            envelope = assert_envelope(
                client.submit(task_body(ctx=2048, max_tokens=1500, prompt="hi")),
                503,
                "POOL_UNREADY",
            )
            assert envelope["retriable"] is True
