"""A running app whose engine sends broken event streams (ORCH-2002, ORCH-3054).

The app's only replica is a scripted llama.cpp stand-in that answers health, props and
the preload decode correctly, then answers each task's completion with whatever
hypothesis makes up: garbage bytes, truncated or invalid frames, error frames, an error
status, a connection cut mid-body. Whatever the engine does, the task's stream is a valid
transcript (each frame valid against its event's schema, ORCH-2002 order, checked against
the contract) ending in ``end`` or a typed ``error``, and the app keeps serving.
"""

from __future__ import annotations

import contextlib
import uuid
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestratord_server.app import build_app
from orchestratord_server.auth import key_rings
from orchestratord_server.config import parse_config
from orchestratord_server.state import ServerState
from tests.fuzz.scripted_engine import FINAL, TOKEN, Script, ScriptedEngine, healthy, sse
from tests.integration.support import check_transcript, parse_frames, wait_until
from tests.server.conftest import DATA_KEY, CheckedClient

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

POOL = "scripted"
READY_TIMEOUT_S = 30.0
HEALTH_INTERVAL_MS = 100
#: Time given to a pool to come back after a worker reset: many health intervals.
RECOVERY_TIMEOUT_S = 5.0
FAILURE_CODES = {"ENGINE_ERROR", "WORKER_RESET", "DECODE_TIMEOUT", "INVALID_PARAMS"}


def final(tokens: int) -> bytes:
    """llama.cpp's last frame, counting ``tokens`` generated tokens."""
    return sse(
        {
            "content": "",
            "stop": True,
            "stop_type": "limit",
            "tokens_predicted": tokens,
            "tokens_evaluated": 2,
            "generation_settings": {"seed": 3},
        }
    )


def honest_count(pieces: list[bytes]) -> bytes:
    """The pieces joined, each final frame counting the token frames before it.

    (An engine whose count differs from its token frames is a known failure, see
    ``test_end_counts_the_token_events_the_client_got``.)
    """
    return b"".join(
        final(pieces[:i].count(TOKEN)) if piece == FINAL else piece
        for i, piece in enumerate(pieces)
    )


broken_bodies = st.lists(
    st.sampled_from([TOKEN, FINAL, b": ping\n\n", b"data: {\n\n", b'error: {"code":500}\n\n'])
    | st.binary(max_size=40)
    | st.text(max_size=40).map(lambda t: b"data: " + t.encode() + b"\n\n"),
    max_size=8,
).map(honest_count)


@pytest.fixture(scope="module")
def engine() -> Iterator[ScriptedEngine]:
    scripted = ScriptedEngine()
    scripted.scripts = healthy()
    yield scripted.start()
    scripted.stop()


@contextlib.contextmanager
def running_app(engine: ScriptedEngine) -> Iterator[CheckedClient]:
    """A fresh app (lifespan running) whose only replica is ``engine``, once it is Ready.

    Fresh for each use: after a worker reset the replica stays down (see
    ``test_a_pool_whose_engine_dropped_one_stream_recovers``), so apps are not shared.
    """
    pool = {
        "id": POOL,
        "engine": "llamacpp",
        "model": "tiny",
        "ctx": 2048,
        "devices": [0],
        "replicas": [{"id": "r0", "url": engine.base_url, "slots": 1}],
    }
    data = {
        "auth": {"api_keys": [DATA_KEY]},
        "server": {"health_interval_ms": HEALTH_INTERVAL_MS},
        "pools": [pool],
    }
    config = parse_config(data)[0]
    state = ServerState(config=config, key_rings=key_rings(config.auth, environ={}))
    with TestClient(build_app(state), raise_server_exceptions=False) as http:
        app = CheckedClient(http, DATA_KEY, state)
        wait_ready(app)
        yield app


def wait_ready(app: CheckedClient) -> None:
    wait_until(
        lambda: app.get("/readyz", key=None).status_code == 200,
        timeout=READY_TIMEOUT_S,
        interval=0.05,
        what="the scripted pool to be Ready",
    )


def task(task_id: str) -> dict[str, object]:
    return {
        "task_id": task_id,
        "session_id": str(uuid.uuid4()),
        "workload": "completion",
        "model_ref": "tiny",
        "engine": "llamacpp",
        "ctx": 1024,
        "priority": "interactive",
        "prompt": "Once upon a time",
        "max_tokens": 8,
        "deadline_ms": 30_000,
    }


@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    status=st.sampled_from([200, 200, 200, 400, 500]),
    body=broken_bodies,
    abort=st.booleans(),
)
def test_a_broken_engine_stream_ends_the_task_with_a_typed_event(
    engine: ScriptedEngine, status: int, body: bytes, abort: bool
) -> None:
    """ORCH-2002, ORCH-3054: the stream stays a valid transcript; a failure is `error`
    with a code of the closed set; the app goes on answering."""
    if status != 200:
        # A non-UTF-8 error body is a known adapter failure (see test_sse_fuzz.py).
        body = body.decode("utf-8", "replace").encode()
    engine.scripts = healthy()
    with running_app(engine) as app:
        engine.scripts |= {"/completion": Script(status=status, parts=[body], abort=abort)}
        task_id = str(uuid.uuid4())
        submitted = app.post("/v1/tasks", json=task(task_id))
        assert submitted.status_code == 202, submitted.text
        response = app.get(f"/v1/tasks/{task_id}/stream")
        assert response.status_code == 200, response.text
        terminal = check_transcript(parse_frames(response.content), task_id=task_id).terminal
        if terminal.event == "error":
            assert terminal.data["code"] in FAILURE_CODES, terminal.data
        else:
            assert terminal.data["finish_reason"] in ("stop", "length"), terminal.data
        assert app.get("/livez", key=None).status_code == 200
        assert app.get("/v1/replicasets").status_code == 200


def _reset_once(app: CheckedClient, engine: ScriptedEngine) -> None:
    """One task whose engine connection drops mid-stream: it fails with WORKER_RESET."""
    engine.scripts |= {"/completion": Script(parts=[TOKEN], abort=True)}
    task_id = str(uuid.uuid4())
    assert app.post("/v1/tasks", json=task(task_id)).status_code == 202
    frames = parse_frames(app.get(f"/v1/tasks/{task_id}/stream").content)
    assert (frames[-1].event, frames[-1].data["code"]) == ("error", "WORKER_RESET")
    engine.scripts = healthy()


def test_a_pool_whose_engine_dropped_one_stream_recovers(engine: ScriptedEngine) -> None:
    """ORCH-3038, ORCH-3003: after a worker reset the pool returns to service once its
    engine answers again."""
    engine.scripts = healthy()
    with running_app(engine) as app:
        _reset_once(app, engine)
        wait_until(
            lambda: app.post("/v1/tasks", json=task(str(uuid.uuid4()))).status_code == 202,
            timeout=RECOVERY_TIMEOUT_S,
            interval=0.1,
            what="the pool to take tasks again",
        )


def test_readyz_agrees_with_pool_health_after_a_worker_reset(engine: ScriptedEngine) -> None:
    """ORCH-3002: /readyz never calls a pool ready that its health reports not ready."""
    engine.scripts = healthy()
    with running_app(engine) as app:
        _reset_once(app, engine)
        health = app.get(f"/v1/pools/{POOL}/health").json()
        readiness = app.get("/readyz", key=None).json()
        assert readiness["pools"] == [{"pool_id": POOL, "ready": health["ready"]}]


def test_end_counts_the_token_events_the_client_got(engine: ScriptedEngine) -> None:
    """ORCH-2002: `end.tokens_out` equals the number of `token` events of the stream, also
    when the engine sent two tokens in one frame."""
    engine.scripts = healthy()
    with running_app(engine) as app:
        merged = sse({"content": "\u00e9", "stop": False})
        engine.scripts |= {"/completion": Script(parts=[merged, final(2)])}
        task_id = str(uuid.uuid4())
        assert app.post("/v1/tasks", json=task(task_id)).status_code == 202
        frames = parse_frames(app.get(f"/v1/tasks/{task_id}/stream").content)
        check_transcript(frames, task_id=task_id)
