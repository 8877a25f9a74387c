"""An engine that stops sending in the middle of a stream: the idle watchdog (ORCH-3016).

The fake engine of this module sends a few tokens, then nothing, holding the connection
open. The pool's idle limit is 1 s: past it the task fails with `error` DECODE_TIMEOUT
naming the idle limit, the daemon closes its request (the engine sees the client go) and
the slot is free again. An engine that is slow but steady, with every gap under the idle
limit, is never cut off, however long the whole stream takes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.faults.checks import Ledger, RecordProperty, check_scenario, open_fds
from tests.faults.conftest import fake_pool_config
from tests.integration.support import Daemon, daemon_config, running_daemon, task_body, wait_until
from tests.support.fake_engines import Behaviour, FakeLlamaCpp, fake_llamacpp

pytestmark = pytest.mark.integration

IDLE_MS = 1_000
HANG_AFTER = 5


@pytest.fixture(scope="module")
def hanging() -> Iterator[FakeLlamaCpp]:
    with fake_llamacpp(token_text="idle") as engine:
        yield engine


@pytest.fixture(scope="module")
def hang_daemon(
    tmp_path_factory: pytest.TempPathFactory, hanging: FakeLlamaCpp
) -> Iterator[Daemon]:
    pool = fake_pool_config(hanging)
    pool["timeouts"] = {"wall_ms": 60_000, "idle_ms": IDLE_MS}
    workdir = tmp_path_factory.mktemp("hang-daemon")
    with running_daemon(workdir, daemon_config(pool)) as daemon:
        yield daemon


def test_idle_watchdog_fails_a_hung_stream_and_frees_the_slot(
    hang_daemon: Daemon, hanging: FakeLlamaCpp, record_property: RecordProperty
) -> None:
    """ORCH-3016, ORCH-3017, ORCH-2002: the engine goes silent after 5 tokens; the task
    ends with error DECODE_TIMEOUT (idle, not retriable) after exactly those 5 tokens,
    the daemon drops the upstream request, the replica stays Ready (a silent stream is
    not a dead engine) and the next task completes."""
    fd_baseline = open_fds(hang_daemon.pid)
    client = hang_daemon.client()
    before = client.metrics()
    ledger = Ledger()
    hanging.behaviour = Behaviour(mode="hang", after=HANG_AFTER)
    cut_before = hanging.stats.cut
    body = task_body(max_tokens=50)
    ledger.admit(client, body)
    transcript = ledger.read(client, body["task_id"])
    error = transcript.terminal.data
    assert transcript.terminal.event == "error"
    assert error["code"] == "DECODE_TIMEOUT"
    assert "idle" in error["message"], error["message"]
    assert error["retriable"] is False
    assert transcript.text == "idle" * HANG_AFTER
    wait_until(
        lambda: hanging.stats.active == 0 and hanging.stats.cut == cut_before + 1,
        timeout=10,
        what="the engine to see its client go",
    )
    health = client.health()
    assert (health["live"], health["ready"]) == (True, True)

    hanging.behaviour = Behaviour()
    after = task_body(max_tokens=8)
    ledger.admit(client, after)
    assert ledger.read(client, after["task_id"]).terminal.data["finish_reason"] == "length"
    figures = check_scenario(hang_daemon, ledger, before, fd_baseline)
    record_property("figures", json.dumps(figures))


def test_slow_but_steady_engine_is_not_cut_off(
    hang_daemon: Daemon, hanging: FakeLlamaCpp, record_property: RecordProperty
) -> None:
    """ORCH-3016: each token resets the idle limit: six tokens 300 ms apart (1.8 s in
    all, longer than the 1 s idle limit) run to their end."""
    fd_baseline = open_fds(hang_daemon.pid)
    client = hang_daemon.client()
    before = client.metrics()
    ledger = Ledger()
    hanging.behaviour = Behaviour(token_delay_s=0.3)
    body = task_body(max_tokens=6)
    ledger.admit(client, body)
    transcript = ledger.read(client, body["task_id"])
    assert transcript.terminal.data["finish_reason"] == "length"
    assert transcript.terminal.data["decode_ms"] > IDLE_MS
    assert transcript.text == "idle" * 6
    hanging.behaviour = Behaviour()
    figures = check_scenario(hang_daemon, ledger, before, fd_baseline)
    record_property("figures", json.dumps(figures))
