"""A client's flow through orchestratord to a real Triton pool (ORCH-3057, ORCH-3058, 3032).

The daemon runs a pool of engine ``triton`` whose replica is this module's Triton model
server, reached by URL, with ``smollm2`` as the Triton model name and the SmolLM2 GGUF as
its local model (for the digest). Slots and context come from the model's config. Every
response is checked against the contracts by the integration ``Client``. The last test
kills Triton mid-stream, so it must stay last in the module.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from orchestratord_server.adapters.digest import sha256_file
from orchestratord_server.engines.models import smollm2_gguf_path
from tests.engines import client_flow as flow
from tests.integration.support import (
    Client,
    Daemon,
    daemon_config,
    running_daemon,
    task_body,
    wait_until,
)
from tests.support.triton import MODEL_NAME, TRITON_VERSION, TritonServer, triton_server

pytestmark = pytest.mark.integration

POOL = "triton-pool"
MODEL_REF = "SmolLM2-135M-Instruct"
CTX = 1024
PROMPT = "Once upon a time"


def triton_pool(url: str) -> dict[str, Any]:
    return flow.engine_pool(
        POOL,
        "triton",
        MODEL_REF,
        CTX,
        [
            {
                "id": "t0",
                "url": url,
                "engine_model": MODEL_NAME,
                "model_path": str(smollm2_gguf_path()),
            }
        ],
    )


def triton_task(**overrides: Any) -> dict[str, Any]:
    return task_body(
        **{"engine": "triton", "model_ref": MODEL_REF, "ctx": CTX, "prompt": PROMPT, **overrides}
    )


def llama_idle(server: TritonServer) -> bool:
    """Every generation llama.cpp started inside the model server has released its slot."""
    log = server.log_path.read_text(encoding="utf-8", errors="replace")
    return len(re.findall(r"processing task", log)) == len(re.findall(r"stop processing", log))


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with triton_server(tmp_path_factory.mktemp("triton")) as server:
        print(f"\nTriton ready after {server.startup_s:.1f} s")
        yield server


@pytest.fixture(scope="module")
def daemon(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    config = daemon_config(triton_pool(triton.base_url))
    with running_daemon(tmp_path_factory.mktemp("triton-daemon"), config) as started:
        yield started


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    client = daemon.client()
    yield client
    client.cancel_all()
    wait_until(lambda: client.idle(POOL), timeout=30, interval=0.1, what="the pool to be idle")


def test_completion_streams_to_end(client: Client) -> None:
    """ORCH-3057, ORCH-3032: started names Triton 2.51.0 and the model; real text to end."""
    transcript = flow.streams_to_end(
        client, triton_task(max_tokens=16, seed=7), engine="triton", version=TRITON_VERSION,
        pool=POOL, replica="t0",
    )  # fmt: skip
    assert transcript.started is not None
    assert transcript.started["model_digest"] == sha256_file(smollm2_gguf_path())
    assert transcript.terminal.data["tokens_in"] == 4
    assert any(word.isalpha() for word in transcript.text.split()), transcript.text
    assert client.health(POOL)["metrics"]["slots_total"] == 2


def test_same_seed_gives_identical_tokens(client: Client) -> None:
    """ORCH-3058: the same seed through the daemon gives the same token texts."""
    flow.same_seed_same_tokens(client, lambda seed: triton_task(max_tokens=24, seed=seed))


def test_cancel_mid_stream_ends_canceled(client: Client, triton: TritonServer) -> None:
    """ORCH-3017: a canceled task ends `canceled`; the engine's slot comes free.

    pytriton 0.7.0 does not pass Triton's cancellation on to the model, so llama.cpp
    finishes the request's ``max_tokens`` before its slot is free: keep them few.
    """
    flow.canceled_mid_stream(client, triton_task(max_tokens=96, seed=3))
    wait_until(lambda: llama_idle(triton), timeout=60, what="llama.cpp to free the slot")


def test_engine_killed_mid_stream_is_worker_reset(client: Client, triton: TritonServer) -> None:
    """ORCH-3057: Triton dying under a running task ends it with error WORKER_RESET.

    Kills this module's Triton (the whole process group): keep this test last.
    """
    body = triton_task(max_tokens=600, seed=4)
    flow.failed_mid_stream(client, body, triton.kill, engine="triton")
