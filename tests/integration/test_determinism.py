"""Determinism across replicas, and engine-version pinning, seen through the API.

Two daemons, each started once for the module:

- ``single_slot_daemon`` (ORCH-3050): one pool of two launched llama.cpp replicas on the
  same model, each in single-slot mode (``--parallel 1``: no continuous batching). A fixed
  (prompt, seed) sent twice at once runs once on each replica; both token streams, and a
  third run after them, must be byte-identical (ORCH-3045). The replicas form one replica
  set (ORCH-3007), the premise of that guarantee.
- ``mixed_daemon`` (ORCH-3046): one pool whose replicas run different engine versions: a
  launched llama.cpp (r0, one slot) and a stand-in llama.cpp server reached by URL (f0, two
  slots, ``build_info`` ``fake-llamacpp``). The stand-in refuses completions until r0 is
  Ready, so the pool pins r0's version first. The replicas form two replica sets, and work
  never crosses to the other version: not when r0 is full (tasks queue although f0 has
  free slots), not for a session's turns. Only when no Ready replica runs the pinned
  version does the pin move, and it stays on the new version when r0 comes back.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.replicas_support import (
    OpenStreams,
    engine_pid,
    release,
    replica_health,
    replica_pool,
    wait_replicas_ready,
)
from tests.integration.support import (
    POOL_ID,
    Client,
    Daemon,
    Transcript,
    daemon_config,
    long_task_body,
    new_id,
    running_daemon,
    task_body,
    tiny_pool_config,
    wait_until,
)
from tests.support.fake_engines import FakeLlamaCpp, fake_llamacpp

pytestmark = pytest.mark.integration

REPLICAS = ("r0", "r1")
PROMPTS = (
    "Once upon a time",
    "The queue moves",
    "In a quiet village by the sea",
    "def main():",
    "Q: What is 2 + 2?\nA:",
    " the the the",
)
SEEDS = (7, 20_261_127)
#: Long enough that the first copy of a pair is still decoding when the second arrives.
PAIR_TOKENS = 256
FAKE_VERSION = "fake-llamacpp"
FAKE_TEXT = "fake"


def token_bytes(transcript: Transcript) -> bytes:
    """The token frames of a stream as they were sent, without their ids."""
    return b"".join(frame.event_bytes for frame in transcript.frames if frame.event == "token")


def replica_sets_of(client: Client, pool_id: str = POOL_ID) -> list[dict[str, Any]]:
    """The replica sets (GET /v1/replicasets) that have ``pool_id`` as a member."""
    response = client.get("/v1/replicasets")
    assert response.status_code == 200, response.text
    sets: list[dict[str, Any]] = response.json()
    return [s for s in sets if any(p["pool_id"] == pool_id for p in s.get("pools", []))]


# -- ORCH-3050: byte-exact streams across single-slot replicas --------------------------


@pytest.fixture(scope="module")
def single_slot_daemon(
    tmp_path_factory: pytest.TempPathFactory, long_model: Path
) -> Iterator[Daemon]:
    """Replicas r0 and r1 of the same model, one slot each."""
    pool = replica_pool(long_model, REPLICAS, slots=1, capacity=4)
    with running_daemon(tmp_path_factory.mktemp("single-slot"), daemon_config(pool)) as daemon:
        yield daemon


@pytest.fixture
def single_slot(single_slot_daemon: Daemon) -> Iterator[Client]:
    client = single_slot_daemon.client()
    wait_replicas_ready(client, REPLICAS)
    client.wait_idle()
    yield client
    client.cancel_all()
    client.wait_idle()


def run_pair(client: Client, body: dict[str, Any]) -> tuple[Transcript, Transcript]:
    """Submit two copies of ``body`` (new task ids) back to back and read both streams.

    Both replicas are idle, so the first copy goes to r0 (first in config order) and
    starts at once; the second arrives while r0's only slot is busy and goes to r1.
    """
    copies = [{**body, "task_id": new_id(), "session_id": new_id()} for _ in range(2)]
    for copy in copies:
        client.admit(copy)
    with OpenStreams(client) as streams:
        first, second = (streams.open(copy["task_id"]) for copy in copies)
        return first.read_all(), second.read_all()


def started_of(transcript: Transcript) -> dict[str, Any]:
    started = transcript.started
    assert started is not None, transcript.events[:2]
    return started


def identical_everywhere(client: Client, prompt: str, seed: int) -> str:
    """Run ``prompt`` with ``seed`` on both replicas at once and once more; check that the
    three token streams are byte-identical and return their text."""
    body = task_body(prompt=prompt, seed=seed, max_tokens=PAIR_TOKENS)
    one, two = run_pair(client, body)
    three = client.run({**body, "task_id": new_id(), "session_id": new_id()})
    runs = (one, two, three)
    started = [started_of(run) for run in runs]
    where = f"prompt {prompt!r}, seed {seed}"
    assert {started[0]["replica_id"], started[1]["replica_id"]} == set(REPLICAS), (
        f"{where}: the concurrent copies did not run on both replicas"
    )
    for key in ("seed", "engine_version", "model_digest", "sampler_profile_version"):
        values = {s[key] for s in started}
        assert len(values) == 1, f"{where}: {key} differs: {values}"
    assert started[0]["seed"] == seed
    for run in runs:
        assert run.terminal.event == "end", run.terminal.data
        assert len(run.tokens) == PAIR_TOKENS
    streams = [[token["t"] for token in run.tokens] for run in runs]
    assert streams[0] == streams[1] == streams[2], f"{where}: token streams differ"
    assert token_bytes(one) == token_bytes(two) == token_bytes(three)
    assert one.text.encode() == two.text.encode() == three.text.encode()
    return one.text


def test_orch_3050_fixed_seed_streams_are_byte_identical_across_replicas(
    single_slot: Client,
) -> None:
    """ORCH-3050, ORCH-3045: each (prompt, seed) runs concurrently on r0 and r1 and once
    more afterwards; the three token streams are byte-identical. Different seeds give
    different streams (for all but at most one prompt), so the equality is not vacuous."""
    texts = {
        (prompt, seed): identical_everywhere(single_slot, prompt, seed)
        for prompt in PROMPTS
        for seed in SEEDS
    }
    differing = [p for p in PROMPTS if len({texts[p, seed] for seed in SEEDS}) == len(SEEDS)]
    assert len(differing) >= len(PROMPTS) - 1, f"seeds changed the stream only for {differing}"


def test_same_model_same_build_is_one_replica_set(single_slot: Client) -> None:
    """ORCH-3007, ORCH-3046: the two replicas (same model, same llama.cpp build, same
    sampler profile) form one replica set holding both slots, pinned to that build."""
    transcript = single_slot.run(task_body(max_tokens=4))
    assert transcript.started is not None
    sets = replica_sets_of(single_slot)
    assert len(sets) == 1, sets
    (only,) = sets
    assert only["engine_version"] == transcript.started["engine_version"]
    assert only["sampler_profile_version"] == transcript.started["sampler_profile_version"]
    assert (only["slots_total"], only["slots_free"]) == (2, 2)
    assert single_slot.health()["engine_version"] == only["engine_version"]


# -- ORCH-3046: replicas of different engine versions never mix ------------------------


@pytest.fixture(scope="module")
def fake_engine() -> Iterator[FakeLlamaCpp]:
    """The stand-in engine, refusing completions (so preload fails) until told otherwise."""
    with fake_llamacpp(slots=2, token_text=FAKE_TEXT) as engine:
        engine.refusing = True
        yield engine


@pytest.fixture(scope="module")
def mixed_daemon(
    tmp_path_factory: pytest.TempPathFactory, long_model: Path, fake_engine: FakeLlamaCpp
) -> Iterator[Daemon]:
    """r0 (launched llama.cpp, one slot) Ready and pinned first, then f0 (the stand-in)."""
    pool = tiny_pool_config(long_model, slots=1, capacity=4)
    pool["replicas"].append({"id": "f0", "url": fake_engine.base_url, "slots": 2})
    with running_daemon(tmp_path_factory.mktemp("mixed"), daemon_config(pool)) as daemon:
        client = daemon.client()
        wait_replicas_ready(client, ("r0",))
        pinned = client.health()["engine_version"]
        assert pinned not in (None, FAKE_VERSION), pinned
        fake_engine.refusing = False
        wait_replicas_ready(client, ("f0",))
        yield daemon


@pytest.fixture
def mixed(mixed_daemon: Daemon) -> Iterator[Client]:
    client = mixed_daemon.client()
    client.wait_idle()
    yield client
    client.cancel_all()
    client.wait_idle()


def test_different_engine_versions_form_different_replica_sets(mixed: Client) -> None:
    """ORCH-3007, ORCH-3046: r0 and f0 share engine, model, ctx and sampler profile but
    not the engine version, so they are two replica sets. The pool pins r0's version:
    only r0's set offers slots, although f0 is Ready too."""
    health = mixed.health()
    pinned = health["engine_version"]
    assert replica_health(mixed, "r0")["ready"] and replica_health(mixed, "f0")["ready"]
    assert health["metrics"]["slots_total"] == 1
    sets = {s["engine_version"]: s for s in replica_sets_of(mixed)}
    assert set(sets) == {pinned, FAKE_VERSION}, list(sets)
    assert sets[pinned]["id"] != sets[FAKE_VERSION]["id"]
    assert sets[pinned]["sampler_profile_version"] == sets[FAKE_VERSION]["sampler_profile_version"]
    assert (sets[pinned]["slots_total"], sets[pinned]["slots_free"]) == (1, 1)
    assert (sets[FAKE_VERSION]["slots_total"], sets[FAKE_VERSION]["slots_free"]) == (0, 0)


def test_work_waits_for_the_pinned_version_instead_of_mixing(
    mixed: Client, fake_engine: FakeLlamaCpp
) -> None:
    """ORCH-3046: with r0's one slot busy, further tasks of the pool queue rather than run
    on f0's free slots; a session's turns all run on r0 with r0's version; f0 receives no
    completion at all."""
    pinned = mixed.health()["engine_version"]
    completions = fake_engine.stats.completions
    session = new_id()
    with OpenStreams(mixed) as streams:
        holder, started = streams.start(long_task_body())
        assert (started["replica_id"], started["engine_version"]) == ("r0", pinned)
        waiting = [long_task_body(), task_body(max_tokens=8, session_id=session)]
        for body in waiting:
            mixed.admit(body)
        health = mixed.health()["metrics"]
        assert (health["running"], health["queue_depth"]) == (1, 2)
        assert replica_health(mixed, "f0")["running"] == 0

        release(mixed, holder)
        second = streams.open(waiting[0]["task_id"])
        frame = second.next_frame()
        assert frame.event == "started"
        assert (frame.data["replica_id"], frame.data["engine_version"]) == ("r0", pinned)
        assert mixed.health()["metrics"]["queue_depth"] == 1
        release(mixed, second)
        turns = [mixed.transcript(waiting[1]["task_id"])]

    turns += [mixed.run(task_body(max_tokens=8, session_id=session, seed=5)) for _ in range(3)]
    for turn in turns:
        assert turn.started is not None and turn.terminal.event == "end"
        assert (turn.started["replica_id"], turn.started["engine_version"]) == ("r0", pinned)
        assert FAKE_TEXT not in turn.text
    assert [turn.started["kv_warmth"] for turn in turns if turn.started] == [
        False,
        True,
        True,
        True,
    ]
    assert fake_engine.stats.completions == completions


def test_pin_moves_only_when_its_version_has_no_ready_replica(
    mixed: Client, mixed_daemon: Daemon, fake_engine: FakeLlamaCpp
) -> None:
    """ORCH-3046, ORCH-3038: with r0's engine killed, the pool pins f0's version and serves
    from f0; when r0 is restarted and Ready again the pin stays on f0's version (the pool
    never mixes or flips back): tasks keep running on f0, and only f0's set offers slots.

    Leaves the pool pinned to f0's version, so it runs last in this module.
    """
    old_version = mixed.health()["engine_version"]
    killed = engine_pid(mixed_daemon, "r0")
    os.kill(killed, signal.SIGKILL)
    wait_until(
        lambda: mixed.health()["engine_version"] == FAKE_VERSION,
        timeout=30,
        what="the pool to pin f0's engine version",
    )
    wait_replicas_ready(mixed, ("r0",))
    assert engine_pid(mixed_daemon, "r0") != killed
    assert replica_health(mixed, "r0")["ready"] is True
    health = mixed.health()
    assert health["engine_version"] == FAKE_VERSION
    assert health["metrics"]["slots_total"] == 2

    completions = fake_engine.stats.completions
    runs = [mixed.run(task_body(max_tokens=8, seed=5)) for _ in range(3)]
    for run in runs:
        assert run.started is not None and run.terminal.event == "end"
        assert (run.started["replica_id"], run.started["engine_version"]) == ("f0", FAKE_VERSION)
        assert run.text == FAKE_TEXT * 8
    assert fake_engine.stats.completions == completions + len(runs)
    sets = {s["engine_version"]: s for s in replica_sets_of(mixed)}
    assert set(sets) == {old_version, FAKE_VERSION}
    assert sets[FAKE_VERSION]["slots_total"] == 2
    assert sets[old_version]["slots_total"] == 0
