"""Backpressure, cancel, disconnect and metrics on a daemon that is easy to fill.

The daemon of this module has one slot and a queue of 2 (policy reject), so one long task
runs and two more wait; anything beyond is refused with 429. Long tasks (16k tokens of
the tiny model, about a minute) stay running until canceled.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from tests.integration.support import (
    ENGINE,
    POOL_ID,
    Client,
    Daemon,
    Metrics,
    Transcript,
    daemon_config,
    engine_busy_slots,
    long_task_body,
    running_daemon,
    task_body,
    tiny_pool_config,
    wait_engine_idle,
    wait_until,
)

pytestmark = pytest.mark.integration

SLOTS = 1
CAPACITY = 2
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


#: How long an abandoned task waits for its client to come back (short, to keep tests fast).
RECONNECT_GRACE_MS = 300


@pytest.fixture(scope="module")
def flood_daemon(tmp_path_factory: pytest.TempPathFactory, long_model: Path) -> Iterator[Daemon]:
    config = daemon_config(tiny_pool_config(long_model, slots=SLOTS, capacity=CAPACITY))
    config["server"]["reconnect_grace_ms"] = RECONNECT_GRACE_MS
    with running_daemon(tmp_path_factory.mktemp("flood-daemon"), config) as daemon:
        yield daemon


@pytest.fixture
def flood(flood_daemon: Daemon) -> Iterator[Client]:
    """A client of the full-able daemon; everything it admitted is canceled afterwards."""
    client = flood_daemon.client()
    client.wait_idle()
    yield client
    client.cancel_all()
    client.wait_idle()


def fill(client: Client) -> list[str]:
    """One running long task and a full queue of long tasks; their ids in order."""
    ids = []
    for position in range(SLOTS + CAPACITY):
        body = long_task_body()
        ticket = client.admit(body)
        if position >= SLOTS:
            # ORCH-3029: a queued task's start is predicted later than now.
            assert ticket["queue_position"] == position - SLOTS
            assert ticket["predicted_start_ms"] >= 1
        ids.append(body["task_id"])
    health = client.health()["metrics"]
    assert (health["running"], health["queue_depth"]) == (SLOTS, CAPACITY)
    return ids


def test_overflow_is_429_admission_reject_with_backoff(flood: Client) -> None:
    """ORCH-3005 (reject), ORCH-2007: the overflow is refused with computed retry hints;
    every admitted task then reaches exactly one terminal event."""
    admitted = fill(flood)
    refused = [task_body() for _ in range(3)]
    for body in refused:
        response = flood.submit(body)
        assert response.status_code == 429, response.text
        envelope = response.json()
        assert envelope["code"] == "ADMISSION_REJECT"
        assert envelope["policy"] == "reject"
        assert envelope["retriable"] is True
        assert envelope["engine"] == ENGINE
        backoff = int(response.headers["X-Backoff-Ms"])
        assert backoff >= 1
        assert envelope["retry_after_ms"] == backoff
        retry_after = int(response.headers["Retry-After"])
        assert retry_after >= 1
        assert retry_after == max(1, math.ceil(backoff / 1000))

    for task_id in reversed(admitted):  # queued ones first, so they never start
        assert flood.cancel(task_id).status_code == 204
    for position, task_id in enumerate(admitted):
        transcript = flood.transcript(task_id)
        assert transcript.terminal.event == "end"
        assert transcript.terminal.data["finish_reason"] == "canceled"
        if position >= SLOTS:
            assert transcript.events == ["end"]
    flood.wait_idle()
    # A refused submission does not use up its id: it can be retried (ORCH-3024).
    retried = refused[0] | {"max_tokens": 4}
    assert flood.submit(retried).status_code == 202
    assert flood.transcript(retried["task_id"]).terminal.data["finish_reason"] == "length"


def test_queue_full_refusal_carries_the_queue_eta(flood: Client) -> None:
    """ORCH-2007: on a queue-full refusal X-Queue-ETA-Ms carries the backoff."""
    fill(flood)
    response = flood.submit(task_body())
    assert response.status_code == 429
    assert response.headers.get("X-Queue-ETA-Ms") == response.headers["X-Backoff-Ms"]


def test_admission_that_fills_the_queue_reports_a_backoff(flood: Client) -> None:
    """ORCH-2007: backoff_ms is 0 while there is room, the next refusal's backoff after."""
    flood.admit(long_task_body())  # runs
    first = flood.admit(long_task_body())  # queue 1 of 2
    assert first["backoff_ms"] == 0
    filling = flood.admit(long_task_body())  # queue 2 of 2: full now
    assert filling["backoff_ms"] >= 1


def test_cancel_queued_task_never_starts(flood: Client) -> None:
    """ORCH-3017, ORCH-2003: a queued task canceled leaves the queue; its stream is one
    `end` canceled with tokens_out 0 and decode_ms 0, and no token."""
    running = long_task_body()
    queued = long_task_body()
    flood.admit(running)
    flood.admit(queued)
    assert flood.health()["metrics"]["queue_depth"] == 1
    assert flood.cancel(queued["task_id"]).status_code == 204
    transcript = flood.transcript(queued["task_id"])
    assert transcript.events == ["end"]
    assert transcript.terminal.data["finish_reason"] == "canceled"
    assert transcript.terminal.data["tokens_out"] == 0
    assert transcript.terminal.data["decode_ms"] == 0
    health = flood.health()["metrics"]
    assert (health["queue_depth"], health["running"]) == (0, 1)
    assert flood.cancel(running["task_id"]).status_code == 204


def test_started_repeats_the_admission_figures_of_a_queued_task(flood: Client) -> None:
    """ORCH-3029: a task that waited reports its admission-time position and prediction
    in `started`, next to the real queue_time_ms."""
    running = long_task_body()
    waiting = task_body(max_tokens=4)
    flood.admit(running)
    ticket = flood.admit(waiting)
    assert ticket["queue_position"] == 0
    assert flood.cancel(running["task_id"]).status_code == 204
    transcript = flood.transcript(waiting["task_id"])
    started = transcript.started
    assert started is not None
    assert started["queue_position"] == ticket["queue_position"]
    assert started["predicted_start_ms"] == ticket["predicted_start_ms"] >= 1
    assert isinstance(started["queue_time_ms"], int)
    assert transcript.terminal.data["finish_reason"] == "length"


def test_cancel_mid_stream_is_race_free(flood: Client, flood_daemon: Daemon) -> None:
    """ORCH-3026, ORCH-3017, ORCH-2003: after the 204 no token is ever added.

    A second subscriber opened right after the 204 already holds the terminal `end`
    (canceled), its tokens_out equals its token events (at least those read before the
    cancel), and the first subscriber and a late one see exactly the same transcript.
    """
    body = long_task_body()
    task_id = body["task_id"]
    flood.admit(body)
    with flood.open_stream(task_id) as stream:
        stream.read_until(lambda f: f.event == "token" and f.data["i"] >= 2)
        seen_before_cancel = sum(1 for f in stream.frames if f.event == "token")
        assert engine_busy_slots(flood_daemon) == 1
        assert flood.cancel(task_id).status_code == 204
        after_ack = flood.transcript(task_id)
        first = stream.read_all()
    end = after_ack.terminal
    assert end.event == "end"
    assert end.data["finish_reason"] == "canceled"
    assert end.data["tokens_out"] == len(after_ack.tokens) >= seen_before_cancel
    assert first.raw == after_ack.raw
    flood.wait_idle()  # the daemon's slot is free...
    wait_engine_idle(flood_daemon)  # ...and the engine really stopped generating
    assert flood.transcript(task_id).raw == after_ack.raw


def test_client_disconnect_cancels_the_task_and_frees_the_slot(
    flood: Client, flood_daemon: Daemon
) -> None:
    """ORCH-2002, ORCH-3017: the only stream of a running task goes away and no client
    comes back within the grace: the task is canceled (reason disconnect) and its slot
    is free again."""
    body = long_task_body()
    task_id = body["task_id"]
    flood.admit(body)
    before = flood.metrics().total("tasks_canceled_total", reason="disconnect")
    with (
        httpx.Client(base_url=flood.base_url, timeout=30) as own,
        flood.open_stream(task_id, http=own) as stream,
    ):
        stream.read_until(lambda f: f.event == "token" and f.data["i"] >= 1)
    # The connection is closed. Do not open a stream while waiting: that would resume the
    # task (a client reconnecting).
    flood.wait_idle(timeout=15)
    health = flood.health()["metrics"]
    assert health["slots_free"] == health["slots_total"] == SLOTS
    wait_engine_idle(flood_daemon)
    transcript = flood.transcript(task_id)
    assert transcript.terminal.event == "end"
    assert transcript.terminal.data["finish_reason"] == "canceled"
    after = flood.metrics().total("tasks_canceled_total", reason="disconnect")
    assert after == before + 1


def test_disconnect_from_a_queued_task_cancels_it(flood: Client) -> None:
    """ORCH-2002, ORCH-3017: the only stream of a queued task goes away and nobody comes
    back within the grace: it is canceled and leaves the queue without ever starting."""
    running = long_task_body()
    queued = long_task_body()
    flood.admit(running)
    flood.admit(queued)
    with (
        httpx.Client(base_url=flood.base_url, timeout=30) as own,
        flood.open_stream(queued["task_id"], http=own),
    ):
        pass  # headers received, no event yet: the task is waiting in the queue
    wait_until(
        lambda: flood.health()["metrics"]["queue_depth"] == 0,
        timeout=15,
        what="the abandoned task to leave the queue",
    )
    transcript = flood.transcript(queued["task_id"])
    assert transcript.events == ["end"]
    assert transcript.terminal.data["finish_reason"] == "canceled"
    assert flood.health()["metrics"]["running"] == 1
    assert flood.cancel(running["task_id"]).status_code == 204


def test_orch_3017_a_client_that_reopens_its_stream_within_the_grace_resumes(
    flood: Client,
) -> None:
    """A dropped stream that is opened again within `server.reconnect_grace_ms` keeps
    its task running: the new stream replays the transcript from `started` and goes on
    with the tokens that followed, none lost or repeated."""
    body = long_task_body()
    task_id = body["task_id"]
    flood.admit(body)
    before = flood.metrics().total("tasks_canceled_total", reason="disconnect")
    with (
        httpx.Client(base_url=flood.base_url, timeout=30) as own,
        flood.open_stream(task_id, http=own) as first,
    ):
        seen = first.read_until(lambda f: f.event == "token" and f.data["i"] >= 3)
    with flood.open_stream(task_id) as again:
        frame = again.read_until(
            lambda f: f.event in ("end", "error") or (f.event == "token" and f.data["i"] >= 200)
        )
        assert frame.event == "token", frame
        tokens = [f.data["i"] for f in again.frames if f.event == "token"]
        assert tokens == list(range(len(tokens)))
        assert seen.data["i"] < len(tokens)
        time.sleep(2 * RECONNECT_GRACE_MS / 1000)  # past the grace, still followed
        assert flood.health()["metrics"]["running"] == 1
        assert flood.cancel(task_id).status_code == 204
        assert again.read_all().terminal.data["finish_reason"] == "canceled"
    assert flood.metrics().total("tasks_canceled_total", reason="disconnect") == before


def test_one_of_two_streams_closing_does_not_cancel(flood: Client) -> None:
    """ORCH-2002: only the last open stream of a task going away cancels it."""
    body = long_task_body()
    task_id = body["task_id"]
    flood.admit(body)
    before = flood.metrics().total("tasks_canceled_total", reason="disconnect")
    with flood.open_stream(task_id) as staying:
        with (
            httpx.Client(base_url=flood.base_url, timeout=30) as own,
            flood.open_stream(task_id, http=own) as leaving,
        ):
            leaving.read_until(lambda f: f.event == "token")
        # The daemon notices a disconnect within milliseconds; hundreds of tokens later
        # the task must still be running.
        frame = staying.read_until(
            lambda f: f.event in ("end", "error") or (f.event == "token" and f.data["i"] >= 500)
        )
        assert frame.event == "token", frame
        assert flood.health()["metrics"]["running"] == 1
        assert flood.metrics().total("tasks_canceled_total", reason="disconnect") == before
        assert flood.cancel(task_id).status_code == 204
        assert staying.read_all().terminal.data["finish_reason"] == "canceled"


# -- metrics ---------------------------------------------------------------------------


@dataclass
class Scenario:
    """What the client did and saw, and the scrapes before and after."""

    before: Metrics
    after: Metrics
    #: A scrape while the long task ran and the queue was full.
    busy: Metrics | None = None
    admitted: int = 0
    refused: int = 0
    canceled: int = 0
    completed: list[Transcript] = field(default_factory=list)
    streamed: list[Transcript] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    def delta(self, name: str, **labels: str) -> float:
        return self.after.total(name, **labels) - self.before.total(name, **labels)


@pytest.fixture(scope="module")
def scenario(flood_daemon: Daemon) -> Scenario:
    """A known sequence: 5 admitted, 2 refused (429), 3 canceled, 2 completed."""
    client = flood_daemon.client()
    client.wait_idle()
    run = Scenario(before=client.metrics(), after=client.metrics())

    def admit(body: dict[str, object]) -> str:
        client.admit(body)
        run.admitted += 1
        run.ids |= {str(body["task_id"]), str(body["session_id"])}
        return str(body["task_id"])

    def cancel_running(task_id: str) -> None:
        with client.open_stream(task_id) as stream:
            stream.read_until(lambda f: f.event == "token" and f.data["i"] >= 2)
            assert client.cancel(task_id).status_code == 204
            run.canceled += 1
            run.streamed.append(stream.read_all())

    try:
        long_a = admit(long_task_body())
        short = [admit(task_body(max_tokens=8)) for _ in range(CAPACITY)]
        for _ in range(2):
            body = task_body()
            assert client.submit(body).status_code == 429
            run.refused += 1
            run.ids |= {body["task_id"], body["session_id"]}
        run.busy = wait_until(
            lambda: (m := client.metrics()).total("orchestratord_pool_running_tasks") == 1 and m,
            timeout=10,
            what="the long task to run",
        )
        cancel_running(long_a)
        for task_id in short:
            transcript = client.transcript(task_id)
            assert transcript.terminal.data["finish_reason"] == "length"
            run.completed.append(transcript)
            run.streamed.append(transcript)
        long_f = admit(long_task_body())
        queued_g = admit(task_body(max_tokens=8))
        assert client.cancel(queued_g).status_code == 204
        run.canceled += 1
        run.streamed.append(client.transcript(queued_g))
        cancel_running(long_f)
        client.wait_idle()
        run.after = client.metrics()
    finally:
        client.cancel_all()  # leave nothing running if the sequence failed half-way
    return run


def test_orch_3028_task_counters_match_what_the_client_saw(scenario: Scenario) -> None:
    """ORCH-3028: enqueued, started, canceled{reason}, rejected{reason} counted exactly."""
    assert scenario.delta("tasks_enqueued_total") == scenario.admitted == 5
    # Not placed yet at admission: replica_id is the pool id (metrics contract).
    assert scenario.delta("tasks_enqueued_total", replica_id=POOL_ID) == 5
    started = sum(1 for t in scenario.streamed if t.started is not None)
    assert started == 4
    assert scenario.delta("tasks_started_total") == started
    assert scenario.delta("tasks_canceled_total", reason="client") == scenario.canceled == 3
    assert scenario.delta("tasks_canceled_total") == scenario.canceled
    assert scenario.delta("tasks_canceled_total", replica_id="r0") == 2  # while running
    assert scenario.delta("tasks_canceled_total", replica_id=POOL_ID) == 1  # while queued
    assert scenario.delta("tasks_started_total", replica_id="r0") == started
    assert scenario.delta("tasks_rejected_total", reason="ADMISSION_REJECT") == scenario.refused
    assert scenario.delta("tasks_rejected_total") == scenario.refused == 2
    assert scenario.delta("admission_backpressure_events_total", policy="reject") == 2
    assert scenario.after.total("queue_depth") == 0


def test_orch_3028_operator_families_follow_what_the_client_saw(scenario: Scenario) -> None:
    """ORCH-3028: every admitted task ends once in orchestratord_tasks_completed_total by
    result and code; refusals are counted by pool and reason; each dispatch observes its
    queue wait, each end its duration; the pool gauges show the slot busy, then free."""
    completed = "orchestratord_tasks_completed_total"
    assert scenario.delta(completed, result="finished", code="ok") == len(scenario.completed)
    assert scenario.delta(completed, result="canceled", code="client") == scenario.canceled
    assert scenario.delta(completed, pool_id=POOL_ID, engine=ENGINE) == scenario.admitted == 5
    refusals = "orchestratord_admission_refusals_total"
    assert scenario.delta(refusals, pool_id=POOL_ID, reason="ADMISSION_REJECT") == 2
    assert scenario.delta(refusals) == scenario.refused
    started = sum(1 for t in scenario.streamed if t.started is not None)
    assert scenario.delta("orchestratord_queue_wait_seconds_count") == started
    duration = "orchestratord_task_duration_seconds_count"
    assert scenario.delta(duration, result="finished") == 2
    assert scenario.delta(duration, result="canceled") == 3
    # The two running tasks were canceled after streaming a few tokens: seconds, not ms.
    assert scenario.delta("orchestratord_task_duration_seconds_sum", result="canceled") > 0
    busy = scenario.busy
    assert busy is not None
    pool = {"pool_id": POOL_ID, "engine": ENGINE}
    assert busy.total("orchestratord_pool_running_tasks", **pool) == 1
    assert busy.total("orchestratord_pool_free_slots", **pool) == 0
    assert busy.total("queue_depth", pool_id=POOL_ID) == CAPACITY
    idle = scenario.after
    assert idle.total("orchestratord_pool_running_tasks", **pool) == 0
    assert idle.total("orchestratord_pool_free_slots", **pool) == SLOTS
    assert idle.total("orchestratord_pool_slots", **pool) == SLOTS
    assert idle.total("orchestratord_pool_queue_capacity", **pool) == CAPACITY
    assert idle.total("orchestratord_pool_ready", **pool) == 1
    replica = {"pool_id": POOL_ID, "replica_id": "r0"}
    assert idle.total("orchestratord_replica_state", state="ready", **replica) == 1
    assert idle.total("orchestratord_replica_state", **replica) == 1
    assert idle.total("orchestratord_replica_breaker_state", state="closed", **replica) == 1
    assert idle.total("orchestratord_build_info", version=metadata.version("orchestratord")) == 1
    assert idle.total("process_resident_memory_bytes") > 0


def test_latency_histograms_count_completed_tasks(scenario: Scenario) -> None:
    """ORCH-3028: one first-token and one decode latency observation per completed task."""
    completed = len(scenario.completed)
    assert completed == 2
    assert scenario.delta("latency_first_token_ms_count") == completed
    assert scenario.delta("latency_decode_ms_count") == completed


def test_tokens_out_of_completed_tasks_are_counted(scenario: Scenario) -> None:
    """ORCH-3028: tokens_out_total grows at least by the tokens of completed tasks."""
    completed = sum(len(t.tokens) for t in scenario.completed)
    assert scenario.delta("tokens_out_total") >= completed == 16


def test_tokens_out_total_counts_every_streamed_token(scenario: Scenario) -> None:
    """ORCH-3028, ORCH-3026: every token a client received is in tokens_out_total."""
    streamed = sum(len(t.tokens) for t in scenario.streamed)
    assert scenario.delta("tokens_out_total") == streamed


def test_no_label_holds_a_task_or_session_id(scenario: Scenario) -> None:
    """ORCH-3028: labels are bounded: no task id, session id or other UUID."""
    for sample in scenario.after.samples:
        for name, value in sample.labels.items():
            assert value not in scenario.ids, (sample.name, name, value)
            assert not UUID_RE.search(value), (sample.name, name, value)
