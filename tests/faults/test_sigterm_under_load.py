"""SIGTERM while tasks run and wait (ORCH-2002, ORCH-3017, ORCH-3025, ORCH-3027, ORCH-3054).

The daemon of this module has 2 slots and a queue of 12, and a shutdown grace of 4 s.
Two long tasks (about a minute each) take the slots and 8 tasks of both priorities
wait, every one with a client streaming it. A client cancels one long task, so the
first waiting task, a short one (1000 tokens, under a second), starts; as soon as its
first token arrives the daemon gets SIGTERM. From the moment it logs its shutdown it
admits nothing (a new task is refused with 503 SHUTTING_DOWN and a retry hint, or its
connection is); the 7 queued tasks end at once with the retriable error SHUTTING_DOWN;
the short task finishes within the grace; the long one fails the same way when the grace
runs out. A shutdown is never reported as a cancel. Every admitted task's stream ends
with exactly one terminal event, the daemon logs exactly one terminal record per task,
and it exits,
engine and all, within the grace plus a bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.faults.checks import Ledger, RecordProperty, check_terminal_logs, check_transcripts
from tests.faults.load import AsyncClients
from tests.integration.support import (
    Daemon,
    daemon_config,
    long_task_body,
    task_body,
    tiny_pool_config,
)

pytestmark = pytest.mark.integration

SLOTS = 2
QUEUED = 8
GRACE_MS = 4_000
#: How long past the grace the daemon may take to exit (generous: a loaded 2-core box).
EXIT_BOUND_S = 10.0
SHORT_TOKENS = 1_000


@dataclass
class Shutdown:
    """What the clients saw around the SIGTERM."""

    ledger: Ledger
    drained: str
    canceled: str
    short: str
    queued: list[str]
    exit_s: float
    after_shutdown: list[str] = field(default_factory=list)


def shutdown_logged(daemon: Daemon) -> bool:
    return any(r.get("event") == "daemon.shutdown" for r in daemon.log_records())


async def submit_after_shutdown(clients: AsyncClients, daemon: Daemon) -> list[str]:
    """Submit a task every 50 ms until the daemon has exited; what each attempt got."""
    assert daemon.process is not None
    outcomes = []
    while daemon.process.poll() is None:
        try:
            response = await clients.submit(task_body(max_tokens=8))
        except aiohttp.ClientError as exc:
            outcomes.append(type(exc).__name__)
        else:
            outcome = f"{response.status_code} {response.json().get('code')}"
            if response.status_code == 503 and "retry-after" not in response.headers:
                outcome += " without Retry-After"
            outcomes.append(outcome)
        await asyncio.sleep(0.05)
    return outcomes


async def drive(daemon: Daemon) -> Shutdown:
    clients = AsyncClients(daemon.base_url)
    drained, canceled = long_task_body(), long_task_body(priority="batch")
    short = long_task_body(max_tokens=SHORT_TOKENS)
    waiting = [long_task_body(priority="batch" if i % 2 else "interactive") for i in range(7)]
    bodies: list[dict[str, Any]] = [drained, canceled, short, *waiting]
    try:
        for body in bodies:
            response = await clients.submit(body)
            assert response.status_code == 202, response.text
        async with clients.session.get("/v1/pools/tiny/health") as answer:
            health = (await answer.json())["metrics"]
        assert (health["running"], health["queue_depth"]) == (SLOTS, QUEUED), health
        short_started = asyncio.Event()
        readers = [
            asyncio.create_task(
                clients.stream(
                    str(b["task_id"]), time.monotonic(), short_started if b is short else None
                )
            )
            for b in bodies
        ]
        async with clients.session.post(f"/v1/tasks/{canceled['task_id']}/cancel") as answer:
            assert answer.status == 204, await answer.text()
        await asyncio.wait_for(short_started.wait(), 30)

        sent = time.monotonic()
        os.kill(daemon.pid, signal.SIGTERM)
        while not shutdown_logged(daemon):
            assert time.monotonic() - sent < EXIT_BOUND_S, "no daemon.shutdown record"
            await asyncio.sleep(0.02)
        refused = asyncio.create_task(submit_after_shutdown(clients, daemon))
        await asyncio.wait_for(asyncio.gather(*readers), GRACE_MS / 1000 + EXIT_BOUND_S)
        after_shutdown = await asyncio.wait_for(refused, GRACE_MS / 1000 + EXIT_BOUND_S)
        exit_s = time.monotonic() - sent
    finally:
        await clients.close()
    return Shutdown(
        ledger=clients.ledger,
        drained=str(drained["task_id"]),
        canceled=str(canceled["task_id"]),
        short=str(short["task_id"]),
        queued=[str(b["task_id"]) for b in waiting],
        exit_s=exit_s,
        after_shutdown=after_shutdown,
    )


@pytest.fixture(scope="module")
def shutdown(tmp_path_factory: pytest.TempPathFactory, long_model: Path) -> tuple[Shutdown, Daemon]:
    pool = tiny_pool_config(long_model, slots=SLOTS, capacity=12)
    config = daemon_config(pool)
    config["server"]["shutdown_grace_ms"] = GRACE_MS
    daemon = Daemon(tmp_path_factory.mktemp("sigterm-daemon"), config)
    daemon.start()
    try:
        run = asyncio.run(drive(daemon))
    except BaseException:
        daemon.stop()
        daemon.kill_orphans()
        raise
    daemon.stop()  # it has exited: this records the exit status and waits for the engine
    return run, daemon


def shutting_down(data: dict[str, Any]) -> bool:
    """An `error` event that says the daemon shut down, retriable with a retry hint."""
    return (data["code"], data["retriable"], data["retry_after_ms"]) == (
        "SHUTTING_DOWN",
        True,
        1000,
    )


def test_orch_3025_every_admitted_task_ends_exactly_once_with_the_shutdown_as_its_cause(
    shutdown: tuple[Shutdown, Daemon],
) -> None:
    """ORCH-2002, ORCH-3017: each stream ends with one terminal event: queued tasks at
    once (one `error` SHUTTING_DOWN, retriable, never started), the short running task
    with its full length inside the grace, the long one SHUTTING_DOWN after its tokens;
    only the client's own cancel is a cancel."""
    run, _ = shutdown
    check_transcripts(run.ledger)
    transcripts = run.ledger.transcripts
    assert len(transcripts) == SLOTS + QUEUED
    for task_id in run.queued:
        assert transcripts[task_id].events == ["error"]
        assert shutting_down(transcripts[task_id].terminal.data)
    short = transcripts[run.short]
    assert short.terminal.data["finish_reason"] == "length"
    assert len(short.tokens) == SHORT_TOKENS
    drained = transcripts[run.drained]
    assert drained.started is not None and drained.tokens
    assert drained.terminal.event == "error" and shutting_down(drained.terminal.data)
    canceled = transcripts[run.canceled]
    assert canceled.terminal.data["finish_reason"] == "canceled"


def test_the_daemon_logs_one_terminal_record_per_task(shutdown: tuple[Shutdown, Daemon]) -> None:
    """ORCH-3027: the daemon's own record agrees: one terminal log line per admitted
    task; the short task ended after the shutdown began (it was running at SIGTERM);
    the tasks the shutdown ended failed with SHUTTING_DOWN, the only cancel is the
    client's."""
    run, daemon = shutdown
    check_terminal_logs(daemon, run.ledger)
    events = [(r.get("event"), r.get("job_id")) for r in daemon.log_records()]
    assert events.index(("daemon.shutdown", None)) < events.index(("task.ended", run.short))
    reasons = {
        r["job_id"]: r.get("reason")
        for r in daemon.log_records()
        if r.get("event") == "task.canceled"
    }
    assert reasons == {run.canceled: "client"}
    failed = {
        r["job_id"]: r.get("code") for r in daemon.log_records() if r.get("event") == "task.failed"
    }
    assert failed == dict.fromkeys([*run.queued, run.drained], "SHUTTING_DOWN")


def test_orch_3025_nothing_is_admitted_after_the_shutdown_began(
    shutdown: tuple[Shutdown, Daemon],
) -> None:
    """ORCH-3018, ORCH-2007: once shutting down, every submission is refused (503
    SHUTTING_DOWN, retriable, with Retry-After) or finds the listener closed; none is
    admitted."""
    run, _ = shutdown
    assert run.after_shutdown, "the daemon exited before a submission could be tried"
    # Or the listener is closed (refused), or the connection is dropped (before or while
    # the request is read).
    allowed = {
        "503 SHUTTING_DOWN",
        "ClientConnectorError",
        "ServerDisconnectedError",
        "ClientOSError",
    }
    assert set(run.after_shutdown) <= allowed, run.after_shutdown
    assert run.ledger.refusals.keys() <= {"SHUTTING_DOWN"}


def test_the_daemon_exits_within_the_grace_and_a_bound(
    shutdown: tuple[Shutdown, Daemon], record_property: RecordProperty
) -> None:
    """ORCH-3054: the daemon exits on SIGTERM within grace + bound, by the signal or 0,
    and its launched engine is gone too."""
    run, daemon = shutdown
    assert run.exit_s <= GRACE_MS / 1000 + EXIT_BOUND_S, run.exit_s
    daemon.assert_stopped_cleanly()
    figures = {
        "admitted": len(run.ledger.admitted),
        "running_at_sigterm": SLOTS,
        "queued_at_sigterm": QUEUED - 1,
        "outcomes": dict(run.ledger.outcomes()),
        "lost": len(run.ledger.admitted) - len(run.ledger.transcripts),
        "refused_after_shutdown": dict(Counter(run.after_shutdown)),
        "exit_after_sigterm_s": round(run.exit_s, 2),
        "grace_s": GRACE_MS / 1000,
    }
    record_property("figures", json.dumps(figures))
