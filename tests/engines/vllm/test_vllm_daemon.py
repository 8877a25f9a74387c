"""A client's flow through orchestratord to a real vLLM pool (ORCH-3055, ORCH-3058).

The daemon runs a pool of engine ``vllm`` whose replica is this module's vLLM server,
reached by URL, named ``smollm2`` on the engine, with the converted SmolLM2 directory as
its local model (for the digest, ORCH-3032). Every response is checked against the
contracts by the integration ``Client``; the official ``openai`` package speaks to the
same daemon for tool calls. The last test kills vLLM mid-stream, so it must stay last in
the module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from orchestratord_server.adapters.digest import sha256_path
from tests.engines import client_flow as flow
from tests.integration.support import (
    DATA_KEY,
    Client,
    Daemon,
    daemon_config,
    running_daemon,
    task_body,
    wait_until,
)
from tests.support.vllm import MODEL_DIR, SERVED_MODEL, VLLM_VERSION, VllmServer

pytestmark = pytest.mark.integration

POOL = "vllm-pool"
MODEL_REF = "SmolLM2-135M-Instruct"
CTX = 1024
PROMPT = "Once upon a time"


def vllm_pool(url: str) -> dict[str, Any]:
    return flow.engine_pool(
        POOL,
        "vllm",
        MODEL_REF,
        CTX,
        [
            {
                "id": "v0",
                "url": url,
                "engine_model": SERVED_MODEL,
                "model_path": str(MODEL_DIR),
                "slots": 2,
            }
        ],
    )


def vllm_task(**overrides: Any) -> dict[str, Any]:
    return task_body(
        **{"engine": "vllm", "model_ref": MODEL_REF, "ctx": CTX, "prompt": PROMPT, **overrides}
    )


def engine_running(server: VllmServer) -> float:
    """``vllm:num_requests_running`` as the engine reports it now."""
    metrics = httpx.get(server.base_url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("vllm:num_requests_running{")
    )


@pytest.fixture(scope="module")
def daemon(vllm: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    config = daemon_config(vllm_pool(vllm.base_url))
    with running_daemon(tmp_path_factory.mktemp("vllm-daemon"), config) as started:
        yield started


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Client]:
    client = daemon.client()
    yield client
    client.cancel_all()
    wait_until(lambda: client.idle(POOL), timeout=30, interval=0.1, what="the pool to be idle")


def test_completion_streams_to_end(client: Client) -> None:
    """ORCH-3055, ORCH-3032: started names vLLM 0.32.0 and the model; real text to end."""
    began = time.monotonic()
    transcript = flow.streams_to_end(
        client, vllm_task(max_tokens=16, seed=7), engine="vllm", version=VLLM_VERSION,
        pool=POOL, replica="v0",
    )  # fmt: skip
    elapsed = time.monotonic() - began
    assert transcript.started is not None
    assert transcript.started["model_digest"] == sha256_path(MODEL_DIR)
    assert transcript.terminal.data["tokens_in"] == 4
    assert any(word.isalpha() for word in transcript.text.split()), transcript.text
    print(f"\ndaemon+vLLM: {transcript.terminal.data['tokens_out']} tokens in {elapsed:.2f} s")


def test_same_seed_gives_byte_identical_tokens(client: Client) -> None:
    """ORCH-3058: the same seed through the daemon gives the same token texts."""
    flow.same_seed_same_tokens(client, lambda seed: vllm_task(max_tokens=24, seed=seed))


def test_cancel_mid_stream_ends_canceled_and_frees_vllm(client: Client, vllm: VllmServer) -> None:
    """ORCH-3017: a canceled task ends `canceled` and vLLM stops generating."""
    flow.canceled_mid_stream(client, vllm_task(max_tokens=900, seed=3))
    wait_until(lambda: engine_running(vllm) == 0, timeout=15, what="vLLM to stop generating")


def test_kv_cache_usage_is_scraped_from_vllm(client: Client) -> None:
    """ORCH-3022, ORCH-3028: the daemon reads vLLM's KV-cache usage on its health probes
    and reports it in pool health and as kv_cache_usage_ratio."""
    assert client.run(vllm_task(max_tokens=4)).terminal.event == "end"

    def usage() -> float | None:
        value = client.health(POOL)["metrics"].get("kv_cache_usage_ratio")
        return None if value is None else float(value)

    wait_until(lambda: usage() is not None, timeout=10, what="the KV usage in health")
    ratio = usage()
    assert ratio is not None and 0.0 <= ratio <= 1.0
    samples = [
        s
        for s in client.metrics().samples
        if s.name == "kv_cache_usage_ratio" and s.labels.get("pool_id") == POOL
    ]
    assert [s.labels["replica_id"] for s in samples] == ["v0"]
    assert 0.0 <= samples[0].value <= 1.0


WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": WEATHER_PARAMETERS,
    },
}


def test_openai_sdk_required_tool_call_through_vllm(daemon: Daemon, client: Client) -> None:
    """A required tool call on vLLM: the answer is decoded under the tool protocol's
    schema, so the SDK gets a call of the tool whose arguments are JSON that fits it."""
    sdk = openai.OpenAI(base_url=daemon.base_url + "/v1", api_key=DATA_KEY, max_retries=0)
    began = time.monotonic()
    try:
        answer = sdk.chat.completions.create(
            model=MODEL_REF,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            max_tokens=256,
            seed=1,
        )
    finally:
        sdk.close()
    elapsed = time.monotonic() - began
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) >= 1
    call = calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_PARAMETERS)
    print(f"\ndaemon+vLLM tool call {arguments} in {elapsed:.2f} s")


def test_engine_killed_mid_stream_is_worker_reset(client: Client, vllm: VllmServer) -> None:
    """ORCH-3055: vLLM dying under a running task ends it with error WORKER_RESET.

    Kills this module's vLLM: keep this test last.
    """
    flow.failed_mid_stream(client, vllm_task(max_tokens=900, seed=4), vllm.kill, engine="vllm")
    client.cancel_all()
    wait_until(lambda: client.idle(POOL), timeout=30, interval=0.1, what="the pool to be idle")
