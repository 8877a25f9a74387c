"""The one client flow every engine tier runs through orchestratord (ORCH-3054..3058).

Submit and stream to the end, the same seed twice, a cancel in the middle of a stream,
an engine failure in the middle of a stream, and the same seed on two single-slot
replicas at once (ORCH-3050): each step is a function here, so the llama.cpp, vLLM,
Triton and TGI modules assert exactly the same behaviour through the contract-checked
client, and differ only in how they set up and break their engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.integration.support import Client, Frame, Transcript, new_id

Task = dict[str, Any]


def engine_pool(
    pool_id: str,
    engine: str,
    model_ref: str,
    ctx: int,
    replicas: list[dict[str, Any]],
    **fields: Any,
) -> dict[str, Any]:
    """One CPU pool of ``engine`` on the given replicas, the way every engine module
    configures it (a small rejecting queue, generous watchdog limits); ``fields`` override."""
    return {
        "id": pool_id,
        "engine": engine,
        "model": model_ref,
        "ctx": ctx,
        "device_kind": "cpu",
        "devices": [0],
        "queue": {"capacity": 4, "full_policy": "reject"},
        "timeouts": {"wall_ms": 300_000, "idle_ms": 60_000},
        "replicas": replicas,
        **fields,
    }


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


def _fresh_copy(body: Task) -> Task:
    """``body`` under a new task id and a new session (no affinity to an earlier run)."""
    return {**body, "task_id": new_id(), "session_id": new_id()}


def run_pair(client: Client, body: Task) -> tuple[Transcript, Transcript]:
    """Admit two copies of ``body`` back to back, then read both streams to their end.

    On a pool of two idle single-slot replicas the first copy takes one replica's only
    slot and the second, arriving while that copy still decodes, runs on the other.
    """
    first, second = _fresh_copy(body), _fresh_copy(body)
    client.admit(first)
    client.admit(second)
    with (
        client.open_stream(str(first["task_id"])) as one,
        client.open_stream(str(second["task_id"])) as two,
    ):
        return one.read_all(), two.read_all()


def token_frame_bytes(transcript: Transcript) -> bytes:
    """The token frames of a stream as the daemon sent them, without their ids."""
    return b"".join(frame.event_bytes for frame in transcript.frames if frame.event == "token")


#: Times a pair is run before its copies are held to have missed the second replica.
PAIR_ATTEMPTS = 3


def identical_across_replicas(client: Client, body: Task, replicas: tuple[str, str]) -> str:
    """ORCH-3050, ORCH-3045: ``body`` (a fixed prompt and seed) runs on both single-slot
    ``replicas`` at once and once more afterwards; the three runs report the same seed,
    engine version, model digest and sampler profile, end alike, and their token streams
    are byte-identical. Returns their text.

    A short answer can end before its copy is admitted (on a loaded machine), and then
    both run on the same replica; the pair is run again then, up to PAIR_ATTEMPTS times:
    what is tested is that the replicas agree, placement has tests of its own."""
    where = f"prompt {body['prompt']!r}, seed {body['seed']}"
    for _ in range(PAIR_ATTEMPTS):
        one, two = run_pair(client, body)
        assert one.started is not None and two.started is not None, where
        if {one.started["replica_id"], two.started["replica_id"]} == set(replicas):
            break
    else:
        raise AssertionError(f"{where}: the concurrent copies did not run on both replicas")
    three = client.run(_fresh_copy(body))
    runs = (one, two, three)
    started = []
    for run in runs:
        assert run.started is not None, f"{where}: {run.events[:2]}"
        started.append(run.started)
    for key in ("seed", "engine", "engine_version", "model_digest", "sampler_profile_version"):
        values = {s.get(key) for s in started}
        assert len(values) == 1, f"{where}: {key} differs: {values}"
    assert started[0]["seed"] == body["seed"]
    for run in runs:
        assert run.terminal.event == "end", run.terminal.data
        assert 1 <= len(run.tokens) <= body["max_tokens"]
    ends = {(r.terminal.data["finish_reason"], r.terminal.data.get("tokens_in")) for r in runs}
    assert len(ends) == 1, f"{where}: the runs ended differently: {ends}"
    texts = [run.text.encode() for run in runs]
    assert texts[0] == texts[1] == texts[2], f"{where}: the texts differ: {texts}"
    streams = [[token["t"] for token in run.tokens] for run in runs]
    assert streams[0] == streams[1] == streams[2], (
        f"{where}: same text, but split into token events differently: {streams}"
    )
    frames = [token_frame_bytes(run) for run in runs]
    assert frames[0] == frames[1] == frames[2], (
        f"{where}: token frames differ: {_first_difference(frames)}"
    )
    return one.text


def _first_difference(streams: list[bytes]) -> str:
    """Where byte streams first differ, with a little context (for a failure message)."""
    shortest = min(len(s) for s in streams)
    at = next((i for i in range(shortest) if len({s[i] for s in streams}) > 1), shortest)
    return f"at byte {at}: " + " | ".join(repr(s[max(0, at - 40) : at + 40]) for s in streams)


def seeds_select_streams(texts: dict[tuple[str, int], str], prompts: tuple[str, ...]) -> None:
    """Other seeds give other streams for all prompts but at most one, so the equality of
    :func:`identical_across_replicas` is not vacuous (ORCH-3045)."""
    seeds = {seed for _, seed in texts}
    differing = [p for p in prompts if len({texts[p, seed] for seed in seeds}) == len(seeds)]
    assert len(differing) >= len(prompts) - 1, f"seeds changed the stream only for {differing}"


def one_single_slot_replica_set(
    client: Client, pool_id: str, replicas: tuple[str, ...], version: str
) -> dict[str, Any]:
    """ORCH-3007, ORCH-3046: the pool's replicas (same engine build, model and sampler
    profile) are Ready with one slot each and form a single replica set pinned to
    ``version`` holding all their slots; returns that set."""
    health = client.health(pool_id)
    assert health["engine_version"] == version
    slots = {r["replica_id"]: r for r in health["metrics"]["replicas"]}
    assert set(slots) == set(replicas), list(slots)
    for replica in slots.values():
        assert replica["ready"] and replica["slots_total"] == 1, replica
        assert replica["engine_version"] == version, replica
    response = client.get("/v1/replicasets")
    assert response.status_code == 200, response.text
    sets = [s for s in response.json() if any(p["pool_id"] == pool_id for p in s.get("pools", []))]
    assert len(sets) == 1, sets
    (only,) = sets
    assert only["engine_version"] == version
    assert only["slots_total"] == len(replicas)
    found: dict[str, Any] = only
    return found
