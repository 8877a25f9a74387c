"""Preload as the pool manager runs it (ORCH-3002, ORCH-3003, ORCH-3001).

A replica that would not fit in free memory never starts its engine; a pool configured
with `preload: false` starts its engine only when the first task is routed to it; and
/readyz waits for the first preload of every pool that preloads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.integration.support import (
    ENGINE_MARKER,
    POOL_ID,
    child_pids,
    command_line,
    daemon_config,
    free_port,
    running_daemon,
    task_body,
    tiny_pool_config,
    wait_until,
)

pytestmark = pytest.mark.integration


def engines_of(pid: int) -> list[int]:
    return [p for p in child_pids(pid) if ENGINE_MARKER in command_line(p)]


def test_orch_3003_no_engine_starts_without_memory_headroom(
    tmp_path: Path, tiny_model: Path
) -> None:
    """ORCH-3003: needed bytes above what the host has free fail the preload at once with
    outcome insufficient_headroom, naming the figures; the engine is never started."""
    pool = tiny_pool_config(tiny_model, pool_ctx=1024, ctx_per_slot=1024)
    pool["memory_margin_bytes"] = 1 << 50
    with running_daemon(tmp_path, daemon_config(pool), wait_ready=False) as daemon:
        client = daemon.client()
        replica = wait_until(
            lambda: (
                (r := client.health()["metrics"]["replicas"][0]).get("last_preload_outcome") and r
            ),
            timeout=30,
            interval=0.05,
            what="the first preload attempt",
        )
        assert replica["last_preload_outcome"] == "insufficient_headroom"
        assert "host memory: needs" in replica["last_error"]
        assert not engines_of(daemon.pid)
        metrics = client.metrics()
        assert metrics.total("preload_outcomes_total", outcome="insufficient_headroom") >= 1
        assert client.get("/readyz", key=None).status_code == 503


def test_orch_3002_a_pool_without_preload_loads_on_its_first_task(
    tmp_path: Path, tiny_model: Path
) -> None:
    """ORCH-3002: with `preload: false` nothing loads at start; the first task routed to
    the pool is refused with a retriable 503 and starts the preload; then tasks run."""
    pool = tiny_pool_config(tiny_model, pool_ctx=1024, ctx_per_slot=1024)
    pool["preload"] = False
    with running_daemon(tmp_path, daemon_config(pool), wait_ready=False) as daemon:
        client = daemon.client()
        health = client.health()
        assert (health["live"], health["ready"]) == (False, False)
        assert not engines_of(daemon.pid)
        first = client.submit(task_body(ctx=1024, max_tokens=4))
        assert first.status_code == 503, first.text
        assert first.json()["retriable"] is True
        wait_until(lambda: client.health()["ready"], timeout=60, interval=0.1, what="Ready")
        daemon.engine_pids.extend(engines_of(daemon.pid))
        transcript = client.run(task_body(ctx=1024, max_tokens=4))
        assert transcript.terminal.event == "end"
        assert client.get("/readyz", key=None).status_code == 200


def test_orch_3001_orch_3012_a_command_engine_sees_only_its_pools_devices(tmp_path: Path) -> None:
    """ORCH-3001: an engine the daemon starts for a GPU pool sees only the pool's mask
    (CUDA_VISIBLE_DEVICES in mask order), whatever the daemon's own environment says; its
    command and environment keep their own braces."""
    port = free_port()
    seen = tmp_path / "seen.txt"
    probe = (
        "import os, sys; open(sys.argv[1], 'w').write("
        "os.environ.get('CUDA_VISIBLE_DEVICES', '') + '|' + os.environ['OPTS'] + '|' + sys.argv[2]"
        " + '|' + os.environ['SPLIT']); sys.exit(3)"
    )
    pool = tiny_pool_config(tmp_path, model="masked", pool_ctx=1024)
    pool.update(device_kind="gpu", devices=[3, 1], tensor_split=[0.75, 0.25])
    pool["replicas"] = [
        {
            "id": "g0",
            "url": f"http://127.0.0.1:{port}",
            "command": [sys.executable, "-c", probe, str(seen), '{"model": "{model_ref}"}'],
            "env": {"OPTS": '{"temperature": 0}', "SPLIT": "{tensor_split}"},
        }
    ]
    config = daemon_config(pool)
    config["allow_cpu_pools"] = False
    config["models"] = [{"ref": "masked", "path": str(tmp_path)}]
    with running_daemon(tmp_path / "daemon", config, wait_ready=False) as daemon:
        client = daemon.client()
        wait_until(seen.exists, timeout=30, what="the engine command to run")
        # The mask in order; JSON in arguments and environment passes through, with only
        # the model and split (ORCH-3012) placeholders filled in.
        assert seen.read_text() == '3,1|{"temperature": 0}|{"model": "masked"}|0.75,0.25'
        replica = wait_until(
            lambda: (r := client.health(POOL_ID)["metrics"]["replicas"][0]).get("last_error") and r,
            timeout=30,
            what="the failed start to show",
        )
        assert replica["last_preload_outcome"] == "engine_start_failed"
