"""The one client flow every engine tier runs through orchestratord (ORCH-3054..3058).

Submit and stream to the end, the same seed twice, a cancel in the middle of a stream,
and an engine failure in the middle of a stream: each step is a function here, so the
llama.cpp, vLLM, Triton and TGI modules assert exactly the same behaviour through the
contract-checked client, and differ only in how they set up and break their engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.support import Client, Frame, Transcript

Task = dict[str, Any]


def streams_to_end(
    client: Client, body: Task, *, engine: str, version: str, pool: str, replica: str
) -> Transcript:
    """The task runs to `end`; `started` names the engine, its version, pool and replica,
    and the token events agree with `end` (ORCH-2002, ORCH-3032)."""
    transcript = client.run(body)
    started = transcript.started
    assert started is not None
    assert (started["engine"], started["engine_version"]) == (engine, version)
    assert (started["pool_id"], started["replica_id"]) == (pool, replica)
    end = transcript.terminal
    assert end.event == "end", end.data
    assert end.data["finish_reason"] in ("length", "stop")
    assert 1 <= end.data["tokens_out"] == len(transcript.tokens) <= body["max_tokens"]
    return transcript


def token_texts(client: Client, body: Task) -> list[str]:
    """The token texts of one task run to its end."""
    transcript = client.run(body)
    assert transcript.terminal.event == "end", transcript.terminal.data
    return [token["t"] for token in transcript.tokens]


def same_seed_same_tokens(client: Client, make_task: Callable[..., Task]) -> None:
    """ORCH-3045, ORCH-3058: one prompt and seed twice gives byte-identical tokens."""
    first = token_texts(client, make_task(seed=424242))
    second = token_texts(client, make_task(seed=424242))
    assert first == second
    assert "".join(first).encode() == "".join(second).encode()


def canceled_mid_stream(client: Client, body: Task) -> Transcript:
    """ORCH-3017: a task canceled after its third token ends `canceled`, nothing after."""
    client.admit(body)
    task_id = str(body["task_id"])
    with client.open_stream(task_id) as stream:
        stream.read_until(lambda frame: frame.event == "token" and frame.data["i"] == 2)
        response = client.cancel(task_id)
        assert response.status_code == 204, response.text
        transcript = stream.read_all()
    end = transcript.terminal
    assert end.event == "end", end.data
    assert end.data["finish_reason"] == "canceled"
    return transcript


def failed_mid_stream(
    client: Client, body: Task, break_engine: Callable[[], None], *, engine: str
) -> Frame:
    """ORCH-3018, ORCH-3038: the engine fails under a streaming task (``break_engine``
    runs after the third token, or does nothing for an engine armed to fail there); the
    task ends with one `error` event naming the engine and WORKER_RESET."""
    client.admit(body)
    task_id = str(body["task_id"])
    with client.open_stream(task_id) as stream:
        stream.read_until(lambda frame: frame.event == "token" and frame.data["i"] == 2)
        break_engine()
        transcript = stream.read_all()
    error = transcript.terminal
    assert error.event == "error", error.data
    assert error.data["code"] == "WORKER_RESET"
    assert error.data["engine"] == engine
    return error
