"""Queue ETAs on a real engine: the prediction error is measured and shown (ORCH-3029).

A daemon with two slots of the tiny model takes a burst of tasks with mixed priorities and
token budgets. Every task's stream tells what it was promised and what it got (`started`:
`predicted_start_ms` and `queue_time_ms`); the histogram on /metrics
and the median in pool health must be exactly those figures. How close the promises are
is the benchmark's business (`python -m bench eta`), not a timing assertion here.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import (
    POOL_ID,
    Client,
    Daemon,
    Transcript,
    daemon_config,
    running_daemon,
    task_body,
    tiny_pool_config,
    wait_until,
)
from tests.support.contract import assert_conforms

pytestmark = pytest.mark.integration

FAMILY = "orchestratord_queue_eta_error_seconds"


@pytest.fixture(scope="module")
def eta_daemon(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Daemon]:
    pool = tiny_pool_config(tiny_model, slots=2, capacity=32, pool_ctx=2048, ctx_per_slot=2048)
    with running_daemon(tmp_path_factory.mktemp("eta-daemon"), daemon_config(pool)) as daemon:
        yield daemon


def run_burst(client: Client, bodies: list[dict[str, object]]) -> list[Transcript]:
    """Admit every task at once, then read each stream to its end."""
    for body in bodies:
        client.admit(body)
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: client.transcript(str(b["task_id"])), bodies))


def promised_and_waited(transcript: Transcript) -> tuple[int, int]:
    """(predicted, actual) wait of one task, in ms, from its own stream."""
    started = transcript.started
    assert started is not None, transcript.events
    return started["predicted_start_ms"], started["queue_time_ms"]


def test_orch_3029_the_prediction_error_is_on_metrics_and_in_pool_health(
    eta_daemon: Daemon,
) -> None:
    client = eta_daemon.client()
    client.wait_idle()
    before = client.metrics()
    assert before.total(f"{FAMILY}_count", pool_id=POOL_ID) == 0
    assert client.health()["metrics"]["eta_error_median_ms"] is None
    # Warm-up: the pool learns from what it finishes.
    warm_up = run_burst(client, [task_body(max_tokens=64, seed=n) for n in range(2)])
    budgets = (16, 48, 96, 160)
    burst = [
        task_body(
            max_tokens=budgets[n % 4],
            priority="batch" if n % 3 == 2 else "interactive",
            seed=100 + n,
            **({"expected_tokens": 24} if n % 5 == 4 else {}),
        )
        for n in range(12)
    ]
    transcripts = run_burst(client, burst)
    for transcript in transcripts:
        assert transcript.terminal.event == "end", transcript.terminal
    figures = [promised_and_waited(t) for t in warm_up + transcripts]
    # What counts: predicted to wait, or waited at least 50 ms (a task started at once,
    # a poll later, says nothing of the prediction).
    waited = [(p, a) for p, a in figures if p > 0 or a >= 50]
    assert len(waited) >= 8, figures  # two slots, twelve tasks: most of them waited
    client.wait_idle()

    metrics = client.metrics()
    assert metrics.total(f"{FAMILY}_count", pool_id=POOL_ID) == len(waited)
    errors = [(a - p) / 1000 for p, a in waited]
    buckets = [s for s in metrics.samples if s.name == f"{FAMILY}_bucket"]
    assert len({s.labels["le"] for s in buckets}) == 21  # its 20 signed bounds and +Inf
    for bound in {s.labels["le"] for s in buckets}:
        counted = metrics.total(f"{FAMILY}_bucket", pool_id=POOL_ID, le=bound)
        assert counted == sum(e <= float(bound) for e in errors), bound

    health = client.health()["metrics"]
    middle = (len(waited) - 1) // 2
    assert health["eta_error_median_ms"] == sorted(a - p for p, a in waited)[middle]
    relative = sorted(abs(a - p) / max(a, 50) for p, a in waited)[middle]
    assert health["eta_error_median_ratio"] == pytest.approx(relative)
    # The pool learned its service time from the tasks it finished: the configured
    # estimate (1,000 ms by default) is gone.
    assert health["service_time_ms"] != 1000


def test_orch_3029_a_task_read_gives_the_estimate_as_the_queue_moves(
    eta_daemon: Daemon,
) -> None:
    """GET /v1/tasks/{id}: while queued, the position and predicted start as of now; the
    task ahead leaving moves both up; once running, how long it waited instead."""
    client = eta_daemon.client()
    client.wait_idle()
    long = {"ctx": 2048, "max_tokens": 1900}
    holders = [task_body(**long) for _ in range(2)]
    waiting = [task_body(**long) for _ in range(3)]
    try:
        for body in holders + waiting:
            client.admit(body)
        last = str(waiting[-1]["task_id"])
        before = client.get(f"/v1/tasks/{last}").json()
        assert (before["state"], before["queue_position"]) == ("queued", 2)
        assert before["predicted_start_ms"] >= 1
        assert "replica_id" not in before and "queue_time_ms" not in before
        assert client.cancel(str(waiting[0]["task_id"])).status_code == 204
        after = client.get(f"/v1/tasks/{last}").json()
        assert after["queue_position"] == 1
        assert after["predicted_start_ms"] < before["predicted_start_ms"]
        for body in holders:
            assert client.cancel(str(body["task_id"])).status_code == 204
        running = wait_until(
            lambda: (r := client.get(f"/v1/tasks/{last}").json())["state"] != "queued" and r,
            timeout=10,
            what="its dispatch",
        )
        assert running["state"] in ("dispatched", "streaming"), running
        assert running["replica_id"] and running["queue_time_ms"] >= 0
        assert "queue_position" not in running and "predicted_start_ms" not in running
        unknown = client.get(f"/v1/tasks/{task_body()['task_id']}")
        assert (unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND")
    finally:
        client.cancel_all()


def sse_blocks(chunks: Iterator[bytes], received: list[bytes]) -> Iterator[str]:
    """The frames of an event stream, one text block each, as they arrive; the bytes
    read go in `received`."""
    pending = ""
    for chunk in chunks:
        received.append(chunk)
        pending += chunk.decode()
        *blocks, pending = pending.split("\n\n")
        yield from blocks


def test_orch_3029_a_stream_asked_for_queue_updates_tells_the_wait_as_it_moves(
    eta_daemon: Daemon,
) -> None:
    """`?queue_updates=true`: id-less `metrics` events with the position and predicted
    start while the task waits, a new one when the task ahead leaves, then the numbered
    transcript from `started` (id 0) as always; without it, none."""
    client = eta_daemon.client()
    client.wait_idle()
    long = {"ctx": 2048, "max_tokens": 1900}
    holders = [task_body(**long) for _ in range(2)]
    ahead, waiting = task_body(**long), task_body(**long)
    try:
        for body in [*holders, ahead, waiting]:
            client.admit(body)
        path = f"/v1/tasks/{waiting['task_id']}/stream"
        auth = {"Authorization": f"Bearer {client.key}"}
        with client.http.stream(
            "GET", path, params={"queue_updates": "true"}, headers=auth
        ) as response:
            assert response.status_code == 200
            received: list[bytes] = []
            blocks = sse_blocks(response.iter_raw(), received)
            first = next(blocks)
            assert first.startswith("event: metrics\ndata: "), first
            update = json.loads(first.partition("data: ")[2])
            assert update["queue_position"] == 1 and update["predicted_start_ms"] >= 1
            assert client.cancel(str(ahead["task_id"])).status_code == 204
            moved = json.loads(next(blocks).partition("data: ")[2])
            assert moved["queue_position"] == 0, moved
            for body in holders:
                assert client.cancel(str(body["task_id"])).status_code == 204
            block = next(blocks)
            while not block.startswith("id: "):  # updates until it leaves the queue
                assert json.loads(block.partition("data: ")[2])["queue_position"] == 0
                block = next(blocks)
            assert block.startswith("id: 0\nevent: started\n"), block
            assert_conforms(response, b"".join(received))
        with client.open_stream(str(waiting["task_id"])) as plain:
            assert plain.next_frame().event == "started"  # no updates unless asked
    finally:
        client.cancel_all()
