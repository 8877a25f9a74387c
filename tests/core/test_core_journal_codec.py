"""Inputs and snapshots travel as JSON, and a replay elsewhere decides the same.

* Every input event, decision and snapshot survives `codec` (JSON data) unchanged.
* A journal written as JSON and replayed in another Python process, with another string
  hash seed, gives the same snapshot: nothing the core decides depends on the process it
  runs in (set or dict orders of hashed strings, object ids), which is what several daemons
  replaying one replicated log need.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from corekit import ENGINE, MODEL, QUICK_RESTARTS, report, task, uid
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_core import (
    Action,
    CancelReason,
    CoreConfig,
    CoreError,
    ErrorKind,
    FailureClass,
    FinishReason,
    Input,
    Journal,
    KvHint,
    Orchestrator,
    PoolSpec,
    Preload,
    PreloadFailure,
    PreloadOutcome,
    Priority,
    Probe,
    ProbeReport,
    ReplicaReport,
    ReplicaSpec,
    SessionConfig,
    TaskSpec,
    replay,
    snapshot,
)
from orchestrator_core import inputs as ev
from orchestrator_core.codec import decode, from_plain, to_plain

ROOT = Path(__file__).resolve().parents[2]
OTHER = "sha256:" + "cd" * 32

ids = st.sampled_from([uid(n) for n in range(4)])
times = st.integers(0, 2**40)
specs = st.builds(
    TaskSpec,
    task_id=ids,
    engine=st.just(ENGINE),
    model_ref=st.sampled_from([MODEL, OTHER]),
    ctx=st.integers(1, 10_000),
    max_tokens=st.integers(1, 512),
    prompt_tokens=st.integers(0, 512),
    priority=st.sampled_from(Priority),
    session_id=st.none() | st.text(max_size=8),
    client_id=st.text(max_size=8),
    tenant_id=st.text(max_size=8),
    pool_id=st.none() | st.sampled_from(["a", "b"]),
    seed=st.none() | st.integers(0, 2**63 - 1),
    sampler_profile_version=st.none() | st.just("v1"),
    kv_hint=st.none() | st.sampled_from(KvHint),
    deadline_ms=st.none() | st.integers(1, 10**6),
)
events = st.one_of(
    st.builds(ev.Submit, specs, times),
    st.builds(ev.Cancel, ids, times, st.sampled_from(CancelReason)),
    st.builds(ev.Token, ids, times),
    st.builds(ev.Finish, ids, st.sampled_from(FinishReason), st.integers(0, 9999), times),
    st.builds(
        ev.Fail,
        ids,
        st.sampled_from(ErrorKind),
        st.text(),
        times,
        st.none() | st.sampled_from(FailureClass),
    ),
    st.builds(ev.Poll, times),
    st.builds(ev.Reap, ids),
    st.builds(ev.DeleteSession, st.text(max_size=8), times),
    st.builds(ev.Drain, st.text(max_size=4), st.integers(0, 10**6), times),
    st.builds(ev.Reload, st.text(max_size=4), st.text(max_size=8), times),
    st.builds(
        ev.Preloaded,
        st.text(max_size=4),
        st.text(max_size=4),
        st.integers(0, 99),
        st.builds(
            ReplicaReport,
            st.none() | st.text(max_size=6),
            st.none() | st.text(),
            st.none() | st.integers(1, 64),
            st.none() | st.lists(st.integers(0, 7), max_size=3).map(tuple),
        ),
        times,
    ),
    st.builds(
        ev.PreloadFailed,
        st.text(max_size=4),
        st.text(max_size=4),
        st.integers(0, 99),
        st.builds(PreloadFailure, st.sampled_from(PreloadOutcome), st.text(), st.booleans()),
        times,
    ),
    st.builds(
        ev.Probed,
        st.text(max_size=4),
        st.text(max_size=4),
        st.integers(0, 99),
        st.builds(
            ProbeReport,
            st.booleans(),
            st.booleans(),
            st.booleans(),
            st.none() | st.sampled_from(FailureClass),
            st.none() | st.integers(0, 8),
            st.none() | st.floats(0.0, 1.0),
        ),
        times,
    ),
)


@given(events)
def test_every_input_survives_json(event: Input) -> None:
    text = json.dumps(to_plain(event))
    assert from_plain(Input, json.loads(text)) == event


def config() -> CoreConfig:
    pools = (
        PoolSpec(
            "a",
            ENGINE,
            MODEL,
            8192,
            (0, 1),
            (ReplicaSpec("r0", (0,), 2), ReplicaSpec("r1", (1,), 1)),
            capacity=6,
            tenant_max_concurrent=4,
            restart=QUICK_RESTARTS,
            probe_interval_ms=20,
            wall_timeout_ms=400,
            idle_timeout_ms=120,
            kv_bytes_per_token=3,
        ),
        PoolSpec(
            "b",
            ENGINE,
            MODEL,
            4096,
            (2,),
            (ReplicaSpec("r0", (2,), 1),),
            capacity=3,
            restart=QUICK_RESTARTS,
            probe_interval_ms=30,
        ),
    )
    return CoreConfig(pools, SessionConfig(ttl_ms=300, kv_budget_bytes=500), 8, 16)


def random_run(seed: int, steps: int) -> tuple[Journal, Orchestrator]:
    """A long run of varied inputs, chosen by a seeded random generator from what the core
    asks for, so every kind of input is exercised in a realistic order."""
    rng = random.Random(seed)
    journal = Journal()
    cfg = config()
    core = Orchestrator(
        cfg.pools,
        cfg.sessions,
        dedup_window=cfg.dedup_window,
        rate_limit_clients=cfg.rate_limit_clients,
        journal=journal,
    )
    now, made = 0, 0
    waiting: list[Action] = list(core.poll(0))
    for _ in range(steps):
        with contextlib.suppress(CoreError):  # a mistaken input is refused; replay does too
            now, made = _step(rng, core, waiting, now, made)
    return journal, core


def _step(
    rng: random.Random, core: Orchestrator, waiting: list[Action], now: int, made: int
) -> tuple[int, int]:
    choice = rng.random()
    if choice < 0.25:
        made += 1
        spec = task(
            made,
            rng.choice(list(Priority)),
            session_id=rng.choice([None, "s1", "s2"]),
            tenant_id=rng.choice("xy"),
            model_ref=rng.choice([MODEL, MODEL, OTHER]),
        )
        core.submit(spec, now)
    elif choice < 0.45:
        now += rng.randint(0, 15)
        waiting += core.poll(now)
    elif choice < 0.65:
        tid = uid(rng.randint(1, max(1, made)))
        core.on_token(tid, now)
        if rng.random() < 0.2:
            core.on_finish(tid, FinishReason.STOP, rng.randint(1, 30), now)
    elif choice < 0.72:
        core.cancel(uid(rng.randint(1, max(1, made))), now, rng.choice(list(CancelReason)))
    elif choice < 0.76:
        core.on_failure(
            uid(rng.randint(1, max(1, made))),
            ErrorKind.WORKER_RESET,
            "gone",
            now,
            rng.choice([None, FailureClass.DEVICE_OOM]),
        )
    elif choice < 0.79:
        waiting += core.drain(rng.choice("ab"), rng.randint(0, 60), now)
    elif choice < 0.82:
        waiting += core.reload(rng.choice("ab"), rng.choice([MODEL, OTHER]), now)
    elif choice < 0.85:
        core.reap(uid(rng.randint(1, max(1, made))))
    elif waiting:
        action = waiting.pop(rng.randrange(len(waiting)))
        if isinstance(action, Preload):
            key = (action.pool_id, action.replica_id, action.generation)
            if rng.random() < 0.8:
                waiting += core.replica_preloaded(*key, report(slots_total=2), now)
            else:
                failure = PreloadFailure(PreloadOutcome.SELFTEST_FAILED, "no", rng.random() < 0.5)
                waiting += core.replica_preload_failed(*key, failure, now)
        elif isinstance(action, Probe):
            good = rng.random() < 0.85
            answer = ProbeReport(
                good, good, exited=not good and rng.random() < 0.3, kv_usage=rng.random()
            )
            waiting += core.replica_probed(
                action.pool_id, action.replica_id, action.generation, answer, now
            )
    return now, made


REPLAYER = """
import json, sys
from orchestrator_core import CoreConfig, CoreError, Input, replay, snapshot
from orchestrator_core.codec import decode, from_plain, to_plain
data = json.load(sys.stdin)
config = decode(CoreConfig, data["config"])
events = [from_plain(Input, e) for e in data["events"]]
core, results = replay(config, events)
decided = [repr(r) if isinstance(r, CoreError) else to_plain(r) for r in results]
json.dump({"state": snapshot(core), "decided": decided}, sys.stdout)
"""


def test_orch_3048_a_journal_replays_to_the_same_state_in_another_process() -> None:
    journal, core = random_run(seed=7, steps=3_000)
    assert journal.config is not None
    kinds = {type(e).__name__ for e in journal.events}
    assert kinds >= {
        "Submit",
        "Poll",
        "Token",
        "Finish",
        "Cancel",
        "Fail",
        "Drain",
        "Reload",
        "Preloaded",
        "PreloadFailed",
        "Probed",
        "Reap",
    }
    payload = json.dumps(
        {"config": to_plain(journal.config), "events": [to_plain(e) for e in journal.events]}
    )
    assert decode(CoreConfig, json.loads(payload)["config"]) == journal.config
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", REPLAYER],
        input=payload,
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    elsewhere = json.loads(done.stdout)
    assert elsewhere["state"] == json.loads(json.dumps(snapshot(core)))
    _, results = replay(journal.config, journal.events)
    decided = [repr(r) if isinstance(r, CoreError) else to_plain(r) for r in results]
    assert elsewhere["decided"] == json.loads(json.dumps(decided))
