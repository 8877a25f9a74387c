"""Replicas the daemon starts from a command line (ORCH-3038, ORCH-3053, ORCH-3031).

A `command` replica is any engine server the pool manager runs itself, reached at the
replica's `url`. Here the command is llama.cpp's server runner on the tiny models, with
`{model_path}` in its arguments, so the same pool can be reloaded onto another catalog
model; its engine is killed to see it restarted; and a command that crashes at once
shows the restart backoff and the circuit breaker in the pool's health.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.support import (
    POOL_ID,
    Client,
    Daemon,
    child_pids,
    command_line,
    daemon_config,
    file_digest,
    free_port,
    running_daemon,
    task_body,
    tiny_pool_config,
    wait_until,
)
from tests.support import tiny_gguf

pytestmark = pytest.mark.integration

FIRST, SECOND = "cmd-first", "cmd-second"
RUNNER = "orchestratord_server.engines.xllamacpp_runner"


def engine_command(port: int) -> list[str]:
    return [
        sys.executable, "-m", RUNNER, "--model", "{model_path}", "--host", "127.0.0.1",
        "--port", str(port), "--ctx", "4096", "--parallel", "1", "--threads", "1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("command-models")
    return {
        FIRST: tiny_gguf.write_tiny_gguf(where / "first.gguf", seed=11),
        SECOND: tiny_gguf.write_tiny_gguf(where / "second.gguf", seed=12),
    }


def command_pool(url: str, command: list[str], **extra: Any) -> dict[str, Any]:
    pool = tiny_pool_config(Path("/unused"), model=FIRST, pool_ctx=4096, slots=1)
    pool["replicas"] = [{"id": "c0", "url": url, "command": command}]
    pool.update(extra)
    return pool


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[Daemon]:
    port = free_port()
    config = daemon_config(command_pool(f"http://127.0.0.1:{port}", engine_command(port)))
    config["models"] = [{"ref": ref, "path": str(path)} for ref, path in models.items()]
    config["server"]["health_interval_ms"] = 200
    with running_daemon(tmp_path_factory.mktemp("command-daemon"), config) as daemon:
        yield daemon


def engine_pid(daemon: Daemon) -> int:
    pids: list[int] = wait_until(
        lambda: [p for p in child_pids(daemon.pid) if RUNNER in command_line(p)],
        timeout=30,
        what="the command's engine process",
    )
    assert len(pids) == 1, pids
    daemon.engine_pids.extend(pids)
    return pids[0]


def ready(client: Client, model_ref: str) -> dict[str, Any]:
    health: dict[str, Any] = wait_until(
        lambda: (h := client.health())["ready"] and h["applied_model_ref"] == model_ref and h,
        timeout=60,
        interval=0.1,
        what=f"the pool to serve {model_ref}",
    )
    return health


def test_orch_3038_a_command_engine_serves_and_is_restarted_when_killed(
    daemon: Daemon, models: dict[str, Path]
) -> None:
    """ORCH-3038: the daemon runs the command, preloads it, serves through it, and when
    the engine dies it is started again; health counts the restart."""
    client = daemon.client()
    ready(client, FIRST)
    first = client.run(task_body(model_ref=FIRST, max_tokens=4))
    assert first.started is not None
    assert first.started["model_digest"] == file_digest(models[FIRST])
    restarts = client.metrics().total("orchestratord_replica_restarts_total", replica_id="c0")
    pid = engine_pid(daemon)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not client.health()["ready"], timeout=10, what="the pool to go down")
    health = ready(client, FIRST)
    replica = health["metrics"]["replicas"][0]
    assert replica["restarts"] >= 1
    assert replica["breaker"] == "closed"
    metrics = client.metrics()
    assert metrics.total("orchestratord_replica_restarts_total", replica_id="c0") == restarts + 1
    info = "orchestratord_replica_info"
    assert metrics.total(info, replica_id="c0", model_digest=file_digest(models[FIRST])) == 1
    assert engine_pid(daemon) != pid
    assert client.run(task_body(model_ref=FIRST, max_tokens=4)).terminal.event == "end"


def test_orch_3031_a_command_replica_reloads_onto_another_model(
    daemon: Daemon, models: dict[str, Path]
) -> None:
    """ORCH-3031: `{model_path}` in the command is the model being loaded, so a reload
    restarts the engine on the new file."""
    client = daemon.client()
    ready(client, FIRST)
    response = client.post(f"/v1/pools/{POOL_ID}/reload", json={"new_model_ref": SECOND})
    assert response.status_code == 202, response.text
    health = ready(client, SECOND)
    assert health["model_digest"] == file_digest(models[SECOND])
    started = client.run(task_body(model_ref=SECOND, max_tokens=4)).started
    assert started is not None and started["model_digest"] == file_digest(models[SECOND])
    assert str(models[SECOND]) in command_line(engine_pid(daemon))


def test_orch_3053_a_crashing_command_is_bounded_by_the_breaker(tmp_path: Path) -> None:
    """ORCH-3053: an engine that exits at once is retried with growing delays until the
    circuit breaker opens; health shows the state, the restarts and why."""
    port = free_port()
    crash = [sys.executable, "-c", "import sys; print('no GPU here'); sys.exit(3)"]
    restart = {
        "base_ms": 50,
        "max_ms": 200,
        "trip_failures": 4,
        "window_ms": 60_000,
        "open_ms": 600_000,
    }
    pool = command_pool(f"http://127.0.0.1:{port}", crash, restart=restart)
    config = daemon_config(pool)
    config["models"] = [{"ref": FIRST, "path": str(tmp_path)}]
    with running_daemon(tmp_path / "daemon", config, wait_ready=False) as daemon:
        client = daemon.client()
        replica = wait_until(
            lambda: (r := client.health()["metrics"]["replicas"][0])["breaker"] == "open" and r,
            timeout=30,
            interval=0.05,
            what="the breaker to open",
        )
        assert "exited with status 3" in replica["last_error"]
        assert "no GPU here" in replica["last_error"]
        assert replica["retry_in_ms"] > 500_000
        health = client.health()
        assert health["ready"] is False and health["last_error"] == replica["last_error"]
        failures = client.metrics().total("preload_outcomes_total", outcome="engine_start_failed")
        assert failures == 4
        assert replica["last_preload_outcome"] == "engine_start_failed"
        metrics = client.metrics()
        c0 = {"pool_id": POOL_ID, "replica_id": "c0"}
        breaker = "orchestratord_replica_breaker_state"
        assert metrics.total(breaker, state="open", **c0) == 1
        assert metrics.total(breaker, **c0) == 1  # one series per state, 1 for the current
        assert metrics.total("orchestratord_replica_state", state="breaker_open", **c0) == 1
        assert metrics.total("orchestratord_pool_ready", pool_id=POOL_ID) == 0
        # Failed preloads are not restarts of a replica that served.
        assert metrics.total("orchestratord_replica_restarts_total", **c0) == 0


#: An engine wrapper that dies the way a GPU whose driver reset does: on SIGUSR1 it writes
#: the driver's message and exits; its llama.cpp child follows it (parent-death signal).
FAULTY_ENGINE = """
import os, signal, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
def reset(*_):
    print("NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.", flush=True)
    os._exit(1)
signal.signal(signal.SIGUSR1, reset)
sys.exit(child.wait())
"""


def test_orch_3053_a_driver_reset_is_reported_as_such(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    """ORCH-3053: an engine that dies with a driver-reset message fails its running task
    with WORKER_RESET naming the class, is logged as replica.driver_reset, and health
    shows the class; the replica is restarted."""
    port = free_port()
    command = [sys.executable, "-c", FAULTY_ENGINE, *engine_command(port)]
    config = daemon_config(command_pool(f"http://127.0.0.1:{port}", command))
    config["models"] = [{"ref": FIRST, "path": str(models[FIRST])}]
    with running_daemon(tmp_path, config) as daemon:
        client = daemon.client()
        wrapper = next(p for p in child_pids(daemon.pid) if "NVRM" in command_line(p))
        body = task_body(model_ref=FIRST, ctx=4096, max_tokens=3000)
        client.admit(body)
        with client.open_stream(body["task_id"]) as stream:
            stream.read_until(lambda frame: frame.event == "token")
            os.kill(wrapper, signal.SIGUSR1)
            transcript = stream.read_all()
        error = transcript.terminal.data
        assert (transcript.terminal.event, error["code"]) == ("error", "WORKER_RESET")
        assert "driver_reset" in error["message"]
        record = wait_until(
            lambda: next(
                (r for r in daemon.log_records() if r["event"] == "replica.driver_reset"), None
            ),
            timeout=30,
            what="the replica.driver_reset record",
        )
        assert record["failure_class"] == "driver_reset"
        ended = next(
            r
            for r in daemon.log_records()
            if r.get("job_id") == body["task_id"] and r["event"] == "task.failed"
        )
        assert ended["driver_reset_events"] == 1
        health = wait_until(
            lambda: (h := client.health())["ready"] and h, timeout=60, what="Ready again"
        )
        assert health["metrics"]["replicas"][0]["failure_class"] == "driver_reset"
        daemon.engine_pids.extend(p for p in child_pids(daemon.pid) if RUNNER in command_line(p))
