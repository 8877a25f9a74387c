"""The engine tier's client flow against a real llama.cpp pool (ORCH-3054, ORCH-3032).

The daemon launches llama.cpp on SmolLM2-135M itself (the embedded default's engine);
the flow is the one every engine module runs (`tests.engines.client_flow`). The engine
is killed in the last test; the supervisor brings it back for the daemon's shutdown.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from orchestratord_server.adapters.digest import sha256_file
from orchestratord_server.config import EMBEDDED_MODEL_REF
from orchestratord_server.engines.models import smollm2_gguf_path
from tests.engines import client_flow as flow
from tests.integration.support import (
    ENGINE_MARKER,
    Client,
    Daemon,
    child_pids,
    command_line,
    daemon_config,
    running_daemon,
    task_body,
    tiny_pool_config,
    wait_until,
)

pytestmark = pytest.mark.integration

POOL = "tiny"  # the pool id tiny_pool_config gives


def smollm2_task(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"model_ref": EMBEDDED_MODEL_REF, "ctx": 2048, "max_tokens": 16}
    return task_body(**(fields | overrides))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    pool = tiny_pool_config(
        smollm2_gguf_path(),
        model=EMBEDDED_MODEL_REF,
        pool_ctx=2048,
        slots=1,
        ctx_per_slot=2048,
        launch_model=False,
    )
    with running_daemon(tmp_path_factory.mktemp("llamacpp-flow"), daemon_config(pool)) as daemon:
        yield daemon


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    client = daemon.client()
    yield client
    client.cancel_all()


def test_completion_streams_to_end(client: Client) -> None:
    """ORCH-3054, ORCH-3032: started names llama.cpp, its build and the GGUF's digest."""
    started = client.run(smollm2_task()).started
    assert started is not None
    version = started["engine_version"]
    transcript = flow.streams_to_end(
        client, smollm2_task(), engine="llamacpp", version=version, pool=POOL, replica="r0"
    )
    assert transcript.started is not None
    assert transcript.started["model_digest"] == sha256_file(smollm2_gguf_path())
    assert any(word.isalpha() for word in transcript.text.split()), transcript.text


def test_same_seed_gives_identical_tokens(client: Client) -> None:
    """ORCH-3058: the same seed through the daemon gives the same token texts."""
    flow.same_seed_same_tokens(client, lambda seed: smollm2_task(max_tokens=24, seed=seed))


def test_cancel_mid_stream_ends_canceled(client: Client) -> None:
    """ORCH-3017: a canceled task ends `canceled`, and the slot is free for the next."""
    flow.canceled_mid_stream(client, smollm2_task(max_tokens=1500, seed=3))
    wait_until(lambda: client.idle(POOL), timeout=15, interval=0.1, what="the slot to be free")
    assert client.run(smollm2_task(max_tokens=4)).terminal.event == "end"


def test_engine_killed_mid_stream_is_worker_reset(client: Client, daemon: Daemon) -> None:
    """ORCH-3054, ORCH-3038: llama.cpp dying under a running task ends it with error
    WORKER_RESET, and the supervisor makes the pool Ready again."""
    [pid] = daemon.live_engines()

    def kill() -> None:
        os.kill(pid, signal.SIGKILL)

    flow.failed_mid_stream(client, smollm2_task(max_tokens=1500, seed=4), kill, engine="llamacpp")
    wait_until(lambda: client.health()["ready"], timeout=60, interval=0.1, what="Ready again")
    restarted = [p for p in child_pids(daemon.pid) if ENGINE_MARKER in command_line(p)]
    daemon.engine_pids.extend(restarted)  # checked for exit when the daemon stops
    assert restarted and pid not in restarted
    assert client.run(smollm2_task(max_tokens=4)).terminal.event == "end"
