"""orchestratord starts and stops the Triton model server itself (ORCH-3057, ORCH-3038).

The replica carries the model server's ``command`` (with ``{model_path}`` for the model)
and ``env``; the daemon runs it in its own process group, waits until the adapter reports
the model ready, serves a task through it, and on shutdown leaves no Triton process
(``tritonserver`` and its Python backend stubs are children of the model server).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestratord_server.engines.models import smollm2_gguf_path
from tests.engines.triton.test_triton_daemon import MODEL_REF, POOL, triton_pool, triton_task
from tests.integration.support import daemon_config, running_daemon, wait_until
from tests.support.triton import (
    MODEL_NAME,
    TRITON_VERSION,
    free_port_block,
    require_triton,
    triton_command,
)

pytestmark = pytest.mark.integration


def processes_mentioning(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def test_daemon_runs_triton_from_a_command(tmp_path: Path) -> None:
    """A command replica: started, preloaded, serving, and gone with the daemon."""
    require_triton()
    port = free_port_block()
    argv, env = triton_command(port, model_path=Path("{model_path}"))
    pool = triton_pool(f"http://127.0.0.1:{port}")
    pool["replicas"][0].update({"command": argv, "env": env})
    assert pool["replicas"][0]["model_path"] == str(smollm2_gguf_path())
    marker = f"--http-port {port}"
    config = daemon_config(pool)
    # A managed replica loads its model from the catalog: {model_path} is this entry's path.
    config["models"] = [
        {"ref": MODEL_REF, "path": str(smollm2_gguf_path()), "engine_model": MODEL_NAME}
    ]
    with running_daemon(tmp_path, config) as daemon:
        client = daemon.client()
        transcript = client.run(triton_task(max_tokens=8, seed=1))
        assert transcript.started is not None
        assert transcript.started["engine_version"] == TRITON_VERSION
        assert transcript.terminal.event == "end", transcript.terminal.data
        assert client.health(POOL)["metrics"]["slots_total"] == 2
        servers = processes_mentioning(marker)
        # Backend stubs name their shared memory after the model server's pid.
        markers = [marker, *(f"pytrtion{pid}-" for pid in servers)]
        assert servers and any(processes_mentioning(m) for m in markers[1:])
    wait_until(
        lambda: not any(processes_mentioning(m) for m in markers),
        timeout=10,
        what="every Triton process to be gone",
    )
