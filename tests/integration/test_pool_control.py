"""Drain and reload of a pool of real llama.cpp engines (ORCH-2101, ORCH-2102, ORCH-3031).

One daemon launches a llama.cpp engine on a model from its catalog. The tests take the
pool out of service, move it to another model, and try two reloads that must roll back
(a checksum mismatch, ORCH-3037, and a model file llama.cpp cannot load), watching what a
client sees: the streams, the refusals, and the pool's health.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import (
    LONG_CTX,
    POOL_ID,
    Client,
    Daemon,
    child_pids,
    command_line,
    daemon_config,
    file_digest,
    long_task_body,
    new_id,
    running_daemon,
    task_body,
    tiny_pool_config,
    wait_until,
)
from tests.support import tiny_gguf

pytestmark = pytest.mark.integration

FIRST, SECOND, TAMPERED, BROKEN = "tiny-first", "tiny-second", "tiny-tampered", "tiny-broken"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("catalog")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny_gguf, "TRAIN_CTX", 65_536)
        first = tiny_gguf.write_tiny_gguf(where / "first.gguf", seed=1)
        second = tiny_gguf.write_tiny_gguf(where / "second.gguf", seed=2)
    broken = where / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    return {FIRST: first, SECOND: second, BROKEN: broken}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[Daemon]:
    pool = tiny_pool_config(models[FIRST], model=FIRST, slots=1, capacity=4, launch_model=False)
    config = daemon_config(pool)
    wrong = hashlib.sha256(b"not the model").hexdigest()
    config["models"] = [
        {"ref": FIRST, "path": str(models[FIRST])},
        {"ref": SECOND, "path": str(models[SECOND]), "sha256": file_digest(models[SECOND])[7:]},
        {"ref": TAMPERED, "path": str(models[SECOND]), "sha256": wrong},
        {"ref": BROKEN, "path": str(models[BROKEN])},
    ]
    with running_daemon(tmp_path_factory.mktemp("pool-control"), config) as daemon:
        yield daemon


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    client = daemon.client()
    yield client
    client.cancel_all()


def reload(client: Client, model_ref: str) -> dict[str, Any]:
    response = client.post(f"/v1/pools/{POOL_ID}/reload", json={"new_model_ref": model_ref})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert body == {"pool_id": POOL_ID, "action": "reload", "new_model_ref": model_ref}
    return body


def settled(client: Client) -> dict[str, Any] | None:
    """The pool's health once it is Ready and no reload is under way."""
    health = client.health()
    converged = health["desired_model_ref"] == health["applied_model_ref"]
    return health if health["ready"] and converged and not health["draining"] else None


def wait_settled(client: Client, timeout: float = 60.0) -> dict[str, Any]:
    health: dict[str, Any] = wait_until(
        lambda: settled(client), timeout=timeout, interval=0.1, what="the pool to settle"
    )
    return health


def replica_sets(client: Client) -> dict[str, str]:
    """The ids of the replica sets the pool is in, with their model references."""
    response = client.get("/v1/replicasets")
    assert response.status_code == 200, response.text
    return {
        s["id"]: s["model_ref"]
        for s in response.json()
        if any(p["pool_id"] == POOL_ID for p in s["pools"])
    }


def serves(client: Client, model_ref: str) -> dict[str, Any]:
    """Run one short task on ``model_ref``; its started frame."""
    transcript = client.run(task_body(model_ref=model_ref, max_tokens=4))
    assert transcript.terminal.event == "end", transcript.terminal
    assert transcript.started is not None
    return transcript.started


def test_orch_2101_drain_cancels_queued_lets_running_finish_then_cancels_at_deadline(
    client: Client, models: dict[str, Path]
) -> None:
    """ORCH-2101: queued work is canceled at once, the running task is canceled when the
    deadline passes, new work is refused while draining, and a reload brings it back."""
    wait_settled(client)
    running = long_task_body(model_ref=FIRST)
    queued = long_task_body(model_ref=FIRST)
    client.admit(running)
    with client.open_stream(running["task_id"]) as stream:
        stream.read_until(lambda f: f.event == "token")
        client.admit(queued)
        response = client.post(f"/v1/pools/{POOL_ID}/drain", json={"deadline_ms": 1500})
        assert response.status_code == 202, response.text
        assert response.json()["action"] == "drain"
        health = client.health()
        assert health["draining"] is True and health["ready"] is False
        refused = client.submit(task_body(model_ref=FIRST))
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "POOL_UNREADY"
        queued_end = client.transcript(queued["task_id"]).terminal
        assert (queued_end.event, queued_end.data["finish_reason"]) == ("end", "canceled")
        transcript = stream.read_all()
    assert transcript.terminal.event == "end"
    assert transcript.terminal.data["finish_reason"] == "canceled"
    assert len(transcript.tokens) > 1, "the running task went on during the drain window"
    assert client.health()["draining"] is True
    reload(client, FIRST)
    health = wait_settled(client)
    assert health["applied_model_ref"] == FIRST
    assert serves(client, FIRST)["model_digest"] == file_digest(models[FIRST])


def test_orch_2102_orch_3047_reload_moves_the_pool_to_another_model(
    client: Client, models: dict[str, Path]
) -> None:
    """ORCH-2102, ORCH-3037: the new model's checksum is verified, it is preloaded, the
    pool serves it (started frames carry its digest) and the old reference is gone.
    ORCH-3047: the pool leaves its old replica set: nothing deterministic carries over.
    ORCH-3033: going back is one action, a reload to the previous reference."""
    wait_settled(client)
    before = serves(client, FIRST)
    sets_before = replica_sets(client)
    reload(client, SECOND)
    health = client.health()
    assert health["desired_model_ref"] == SECOND
    health = wait_settled(client)
    assert health["applied_model_ref"] == SECOND
    assert health["model_digest"] == file_digest(models[SECOND])
    assert "last_error" not in health
    after = serves(client, SECOND)
    assert after["model_digest"] == file_digest(models[SECOND]) != before["model_digest"]
    gone = client.submit(task_body(model_ref=FIRST))
    assert gone.status_code == 400, gone.text
    sets_after = replica_sets(client)
    assert sets_after.keys().isdisjoint(sets_before.keys())
    assert set(sets_after.values()) == {SECOND}
    reload(client, FIRST)
    assert wait_settled(client)["applied_model_ref"] == FIRST
    assert replica_sets(client) == sets_before


def openai_models(client: Client) -> list[str]:
    response = client.get("/v1/models")
    assert response.status_code == 200, response.text
    return [model["id"] for model in response.json()["data"]]


def openai_completion(client: Client, model: str) -> Any:
    return client.post("/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 4})


def test_orch_2102_after_a_reload_every_surface_serves_the_new_model_only(
    client: Client,
) -> None:
    """ORCH-2102, ORCH-2001, ORCH-3007: one routing answer. After a reload to another model,
    OrchQueue admission, the OpenAI routes, the model list, replica sets and health all
    serve the new model, and the old one is refused everywhere as not served: 400 naming
    `model_ref` on OrchQueue, 404 in OpenAI's error shape on the OpenAI routes."""
    wait_settled(client)
    assert openai_models(client) == [FIRST]
    reload(client, SECOND)
    health = wait_settled(client)
    assert (health["phase"], health["applied_model_ref"]) == ("ready", SECOND)
    assert openai_models(client) == [SECOND]
    assert set(replica_sets(client).values()) == {SECOND}
    served = openai_completion(client, SECOND)
    assert served.status_code == 200, served.text
    assert served.json()["model"] == SECOND and served.json()["choices"][0]["text"]
    assert serves(client, SECOND)["pool_id"] == POOL_ID
    old = openai_completion(client, FIRST)
    assert old.status_code == 404, old.text
    assert old.json() == {
        "error": {
            "message": f"model {FIRST!r} is not served",
            "type": "invalid_request_error",
            "param": "model",
            "code": "NOT_FOUND",
        }
    }
    refused = client.submit(task_body(model_ref=FIRST))
    assert refused.status_code == 400, refused.text
    envelope = refused.json()
    assert envelope["code"] == "INVALID_PARAMS"
    assert envelope["message"] == f"model {FIRST!r} is not served by any llamacpp pool"
    assert [e["loc"] for e in envelope["errors"]] == ["body.model_ref"]
    reload(client, FIRST)
    assert wait_settled(client)["applied_model_ref"] == FIRST
    assert openai_models(client) == [FIRST]
    assert openai_completion(client, SECOND).status_code == 404
    assert openai_completion(client, FIRST).status_code == 200


def test_orch_2102_reload_waits_for_running_work(client: Client) -> None:
    """ORCH-3031: the drain before a swap lets running tasks finish (within the watchdog
    limit), so a reload does not cut a task that could still end normally."""
    wait_settled(client)
    body = task_body(model_ref=FIRST, max_tokens=400, ctx=LONG_CTX)
    client.admit(body)
    with client.open_stream(body["task_id"]) as stream:
        stream.read_until(lambda f: f.event == "token")
        reload(client, FIRST)
        transcript = stream.read_all()
    assert transcript.terminal.event == "end"
    assert transcript.terminal.data["finish_reason"] in ("length", "stop")
    wait_settled(client)


@pytest.mark.parametrize(
    ("target", "reason"),
    [(TAMPERED, "checksum_mismatch: "), (BROKEN, "engine_start_failed: ")],
    ids=["checksum-mismatch", "unloadable-file"],
)
def test_orch_3031_a_failing_reload_rolls_back(
    client: Client, models: dict[str, Path], target: str, reason: str
) -> None:
    """ORCH-3031, ORCH-3037: when the new model cannot be verified or loaded, the previous
    one is loaded again, the pool serves it, and last_error says what went wrong."""
    wait_settled(client)
    reload(client, target)
    health = wait_until(
        lambda: (h := client.health()).get("last_error") and settled(client) and h,
        timeout=60,
        interval=0.1,
        what="the rollback",
    )
    assert health["applied_model_ref"] == health["desired_model_ref"] == FIRST
    assert health["last_error"].startswith(f"reload to {target} rolled back")
    assert reason in health["last_error"]
    assert serves(client, FIRST)["model_digest"] == file_digest(models[FIRST])


def test_orch_2103_health_reports_each_replica_supervision(client: Client) -> None:
    """ORCH-2103, ORCH-3053: per replica, health carries restarts and the breaker state."""
    wait_settled(client)
    replica = client.health()["metrics"]["replicas"][0]
    assert replica["replica_id"] == "r0"
    assert replica["breaker"] == "closed"
    assert replica["restarts"] == 0
    assert replica["last_preload_outcome"] == "success"
    assert client.get(f"/v1/pools/{new_id()}/health").status_code == 404


def test_orch_3037_a_model_that_fails_its_checksum_is_never_loaded(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    """ORCH-3037: a pool whose model file does not have the digest its reference names
    stays Unready, says why, and no engine is started on the file."""
    wrong = "sha256:" + hashlib.sha256(b"another model").hexdigest()
    pool = tiny_pool_config(models[FIRST], model=wrong, slots=1)
    with running_daemon(tmp_path, daemon_config(pool), wait_ready=False) as daemon:
        client = daemon.client()
        health = wait_until(
            lambda: (h := client.health(POOL_ID)).get("last_error") and h,
            timeout=30,
            interval=0.05,
            what="the checksum failure to show",
        )
        assert "checksum mismatch" in health["last_error"]
        assert health["ready"] is False
        assert health["metrics"]["replicas"][0]["restarts"] == 0
        assert not [p for p in child_pids(daemon.pid) if "xllamacpp_runner" in command_line(p)]
        assert client.get("/readyz", key=None).status_code == 503


def reloads_done(daemon: Daemon) -> int:
    """How many reloads have finished (one `pool.reload` record with an outcome each)."""
    return sum(1 for r in daemon.log_records() if r["event"] == "pool.reload" and "outcome" in r)


def test_orch_2101_a_drain_during_a_reload_is_kept(client: Client, daemon: Daemon) -> None:
    """ORCH-2101, ORCH-2102: an operator who drains a pool while it reloads finds it
    drained afterwards; the reload does not put it back into service."""
    wait_settled(client)
    before = reloads_done(daemon)
    body = task_body(model_ref=FIRST, max_tokens=400, ctx=LONG_CTX)
    client.admit(body)
    with client.open_stream(body["task_id"]) as stream:
        stream.read_until(lambda f: f.event == "token")
        reload(client, FIRST)  # waits for the running task: the reload is under way
        drained = client.post(f"/v1/pools/{POOL_ID}/drain", json={"deadline_ms": 60_000})
        assert drained.status_code == 202, drained.text
        stream.read_all()
    wait_until(lambda: reloads_done(daemon) > before, timeout=60, what="the reload to end")
    health = client.health()
    assert health["metrics"]["replicas"][0]["ready"] is True, "the new engine is loaded"
    assert health["draining"] is True and health["ready"] is False
    reload(client, FIRST)  # the way back into service
    wait_settled(client)
