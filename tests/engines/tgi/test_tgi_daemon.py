"""A TGI pool through orchestratord, against the fake TGI v3.3.7 (ORCH-3056, ORCH-3032).

The client flow of a real deployment: the daemon reaches a TGI replica by URL, preloads
it through the TGI adapter, and clients submit, stream and cancel tasks over the
contract-checked :class:`Client`. The engine is :mod:`tests.support.fake_tgi` (TGI itself
cannot run here); one fake and one daemon serve the whole module.

The pool uses sampler profile portable-v1, which TGI can honour exactly (ORCH-3058):
profile v1 filters with min_p, which TGI has not got, so the adapter refuses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from orchestratord_server.adapters.base import SAMPLER_PROFILE_PORTABLE_V1
from tests.engines import client_flow as flow
from tests.integration.support import (
    Client,
    Daemon,
    daemon_config,
    running_daemon,
    task_body,
    wait_until,
)
from tests.support.fake_tgi import GIT_SHA, VERSION, Behaviour, FakeTgi, fake_tgi

pytestmark = pytest.mark.integration

POOL_ID = "tgi-pool"
MODEL = "smollm2-tgi"
SLOTS = 4
#: Prompts longer than this many tokens are refused by the fake's validation.
MAX_INPUT_TOKENS = 256


def tgi_task(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "engine": "tgi",
        "model_ref": MODEL,
        "ctx": 1024,
        "max_tokens": 12,
        "seed": 99,
    }
    fields.update(overrides)
    return task_body(**fields)


@pytest.fixture(scope="module")
def engine() -> Iterator[FakeTgi]:
    with fake_tgi(max_input_tokens=MAX_INPUT_TOKENS, max_total_tokens=2048) as server:
        yield server


@pytest.fixture(scope="module")
def daemon(engine: FakeTgi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    pool = flow.engine_pool(
        POOL_ID,
        "tgi",
        MODEL,
        1024,
        [{"id": "t0", "url": engine.base_url, "engine_model": engine.model_id, "slots": SLOTS}],
        sampler_profile_version=SAMPLER_PROFILE_PORTABLE_V1.version,
        queue={"capacity": 8, "full_policy": "reject"},
        timeouts={"wall_ms": 60_000, "idle_ms": 30_000},
    )
    with running_daemon(tmp_path_factory.mktemp("tgi-daemon"), daemon_config(pool)) as daemon:
        yield daemon


@pytest.fixture
def client(daemon: Daemon, engine: FakeTgi) -> Iterator[Client]:
    client = daemon.client()
    yield client
    client.cancel_all()
    engine.behaviour = Behaviour()
    wait_until(lambda: client.health(POOL_ID)["ready"], timeout=20, what="the TGI pool ready")


def test_orch_3056_orch_3032_a_task_streams_to_its_end_on_tgi(
    client: Client, engine: FakeTgi
) -> None:
    """ORCH-3056, ORCH-3032: started names the engine and the version TGI reports."""
    transcript = flow.streams_to_end(
        client, tgi_task(), engine="tgi", version=f"{VERSION}+{GIT_SHA}", pool=POOL_ID,
        replica="t0",
    )  # fmt: skip
    assert transcript.terminal.data["finish_reason"] == "length"
    assert len(transcript.tokens) == 12
    sent = engine.stats.bodies[-1]["parameters"]
    assert sent["seed"] == 99
    assert sent["max_new_tokens"] == 12


def test_same_seed_same_text_on_tgi(client: Client) -> None:
    """ORCH-3045: two tasks with one prompt and seed stream identical text; another seed
    streams other text."""

    def village(seed: int) -> dict[str, Any]:
        return tgi_task(prompt="In a quiet village", seed=seed)

    flow.same_seed_same_tokens(client, village)
    assert flow.token_texts(client, village(424243)) != flow.token_texts(client, village(424242))


def test_cancel_mid_stream_closes_the_tgi_request(client: Client, engine: FakeTgi) -> None:
    """ORCH-3017: cancel ends the task as canceled and TGI sees the client go away."""
    engine.behaviour = Behaviour(mode="stall", after=4)
    before = engine.stats.disconnected
    flow.canceled_mid_stream(client, tgi_task(max_tokens=200))
    wait_until(
        lambda: engine.stats.disconnected == before + 1,
        timeout=10,
        what="the fake TGI to see the disconnect",
    )
    assert engine.stats.active == 0


def test_an_engine_error_mid_stream_is_an_error_event(client: Client, engine: FakeTgi) -> None:
    """A TGI generation error after the third token reaches the client as WORKER_RESET."""
    engine.behaviour = Behaviour(mode="error", after=3)
    error = flow.failed_mid_stream(client, tgi_task(), lambda: None, engine="tgi")
    assert error.data["retriable"] is True


def test_a_request_tgi_refuses_is_invalid_params(client: Client) -> None:
    """A prompt over TGI's max_input_tokens (within the pool's ctx) is refused by TGI."""
    transcript = client.run(tgi_task(prompt="word " * (MAX_INPUT_TOKENS + 10)))
    error = transcript.terminal.data
    assert transcript.terminal.event == "error"
    assert error["code"] == "INVALID_PARAMS"
    assert not transcript.tokens
