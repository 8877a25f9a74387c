"""An engine that answers garbage mid-stream (ORCH-2006, ORCH-2002, ORCH-3054).

The fake engine of this module sends two good tokens, then one of the frames of
:data:`tests.support.fake_engines.GARBAGE` (JSON that does not parse, the wrong JSON
type, fields of the wrong type, bytes that are not UTF-8, a line longer than the decoder
takes, final frames with an unknown stop type or a negative count). Each fails the task
with `error` ENGINE_ERROR, retriable (the engine misbehaved; the daemon did not, and the
same request can succeed on a retry); the daemon closes the upstream request and goes on
serving from the same replica.

The good tokens should reach the client before the error. They do when they arrive in an
earlier read than the garbage; when both arrive in one read and the garbage is a line the
event-stream decoder itself refuses (bytes that are not UTF-8), they are lost: an
expected failure, pinned down with the engine writing tokens and garbage at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.faults.checks import Ledger, RecordProperty, check_scenario, open_fds
from tests.faults.conftest import fake_pool_config
from tests.integration.support import Daemon, daemon_config, running_daemon, task_body, wait_until
from tests.support.fake_engines import GARBAGE, Behaviour, FakeLlamaCpp, fake_llamacpp

pytestmark = pytest.mark.integration

GOOD_TOKENS = 2


@pytest.fixture(scope="module")
def garbling() -> Iterator[FakeLlamaCpp]:
    with fake_llamacpp(token_text="ok") as engine:
        yield engine


@pytest.fixture(scope="module")
def garbage_daemon(
    tmp_path_factory: pytest.TempPathFactory, garbling: FakeLlamaCpp
) -> Iterator[Daemon]:
    workdir = tmp_path_factory.mktemp("garbage-daemon")
    with running_daemon(workdir, daemon_config(fake_pool_config(garbling))) as daemon:
        yield daemon


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_garbage_frame_fails_the_task_and_the_daemon_keeps_serving(
    garbage_daemon: Daemon,
    garbling: FakeLlamaCpp,
    garbage: str,
    record_property: RecordProperty,
) -> None:
    """ORCH-2006, ORCH-2002, ORCH-3054: a frame the adapter cannot read ends the task
    with error ENGINE_ERROR (retriable: the engine broke its protocol, not the request)
    after no more than the good tokens; the engine sees its request closed, the replica
    stays Ready, and the next task on it completes."""
    fd_baseline = open_fds(garbage_daemon.pid)
    client = garbage_daemon.client()
    before = client.metrics()
    ledger = Ledger()
    garbling.behaviour = Behaviour(mode="garbage", after=GOOD_TOKENS, garbage=garbage)
    cut_before = garbling.stats.cut
    body = task_body(max_tokens=20)
    ledger.admit(client, body)
    transcript = ledger.read(client, body["task_id"])
    assert transcript.events[0] == "started" and transcript.terminal.event == "error"
    assert transcript.text in ("ok" * n for n in range(GOOD_TOKENS + 1)), transcript.text
    error = transcript.terminal.data
    assert error["code"] == "ENGINE_ERROR", error
    assert error["retriable"] is True
    assert error["engine"] == "llamacpp"
    wait_until(
        lambda: garbling.stats.active == 0 and garbling.stats.cut == cut_before + 1,
        timeout=10,
        what="the engine to see its request closed",
    )
    assert client.health()["ready"] is True

    garbling.behaviour = Behaviour()
    after = task_body(max_tokens=8)
    ledger.admit(client, after)
    assert ledger.read(client, after["task_id"]).text == "ok" * 8
    figures = check_scenario(garbage_daemon, ledger, before, fd_baseline)
    record_property("figures", json.dumps(figures))


def test_tokens_read_with_the_garbage_still_reach_the_client(
    garbage_daemon: Daemon, garbling: FakeLlamaCpp
) -> None:
    """ORCH-2002, ORCH-3026: the tokens an engine sent before a bad frame are streamed
    before the error, even when they and the bad frame come in one read."""
    client = garbage_daemon.client()
    garbling.behaviour = Behaviour(
        mode="garbage", after=GOOD_TOKENS, garbage="invalid-utf8", coalesce=True
    )
    try:
        transcript = client.run(task_body(max_tokens=20))
    finally:
        garbling.behaviour = Behaviour()
    assert transcript.terminal.data["code"] == "ENGINE_ERROR"
    tokens = ["token"] * GOOD_TOKENS
    assert transcript.events == ["started", "token", "metrics", *tokens[1:], "metrics", "error"]
