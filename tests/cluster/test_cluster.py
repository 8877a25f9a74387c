"""Several instances, one service: shared state on real NATS JetStream (docs/cluster.md).

Each test starts real daemons with `state.backend: nats` on a real `nats-server -js`, in
front of one real llama.cpp server, and drives them over HTTP as clients would: admit on
one instance, stream and cancel on another, kill instances and NATS itself, and check what
the clients saw.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml

from orchestratord_server.engines.llamacpp_process import LlamaCppProcess
from tests.cluster import chaos
from tests.cluster.conftest import cluster_config, instance_config
from tests.integration.support import (
    DATA_KEY,
    POOL_ID,
    Daemon,
    free_port,
    long_task_body,
    orchestratord_command,
    task_body,
    wait_until,
)
from tests.support.nats import NatsNode

pytestmark = pytest.mark.integration


def leader_events(daemon: Daemon) -> list[dict[str, Any]]:
    return [r for r in daemon.log_records() if r.get("event") == "cluster.leader"]


def wait_leader(daemons: list[Daemon], timeout: float = 10.0) -> Daemon:
    """The instance that schedules now (the latest to log that it took the lease)."""

    def latest() -> Daemon | None:
        alive = [d for d in daemons if d.process is not None and d.process.poll() is None]
        led = [(leader_events(d)[-1]["term"], d) for d in alive if leader_events(d)]
        return max(led, key=lambda pair: pair[0])[1] if led else None

    found: Daemon = wait_until(latest, timeout=timeout, what="a scheduler")
    return found


def kill(daemon: Daemon) -> None:
    """SIGKILL, as a crash: no lease hand-over, no goodbye."""
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(10)
    daemon.exit_code = daemon.process.returncode


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[list[Daemon]]:
    """Daemons a test started; all stopped at its end."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop()


def start(instances: list[Daemon], workdir: Path, config: dict[str, Any]) -> Daemon:
    daemon = Daemon(workdir / f"instance-{len(instances)}", config)
    instances.append(daemon)
    daemon.start()
    return daemon


def two_instances(
    instances: list[Daemon], tmp_path: Path, engine: LlamaCppProcess, node: NatsNode
) -> tuple[Daemon, Daemon]:
    base = cluster_config(engine, [node.url])
    first = start(instances, tmp_path, base)
    second = start(instances, tmp_path, instance_config(base, free_port()))
    return first, second


def test_admit_on_one_instance_stream_and_cancel_on_another(
    tmp_path: Path, engine: LlamaCppProcess, nats_node: NatsNode, instances: list[Daemon]
) -> None:
    first, second = two_instances(instances, tmp_path, engine, nats_node)
    on_first, on_second = first.client(), second.client()
    body = task_body(max_tokens=24)
    admission = on_first.admit(body)
    assert admission["queue_position"] >= 0
    transcript = on_second.transcript(body["task_id"])
    assert transcript.terminal.event == "end"
    assert transcript.raw == on_first.transcript(body["task_id"]).raw  # the same events

    running = long_task_body()
    on_second.admit(running)
    with on_first.open_stream(running["task_id"]) as stream:
        stream.read_until(lambda frame: frame.event == "token")
        assert on_second.cancel(running["task_id"]).status_code == 204
        rest = stream.read_all()
    assert rest.terminal.event == "end"
    assert rest.terminal.data["finish_reason"] == "canceled"
    # Sessions and pools read alike from either instance.
    session = str(body["session_id"])
    seen = [c.get(f"/v1/sessions/{session}").json() for c in (on_first, on_second)]
    for info in seen:
        info.pop("ttl_ms_remaining")  # read a few milliseconds apart
    assert seen[0] == seen[1]
    assert on_first.get("/v1/replicasets").json() == on_second.get("/v1/replicasets").json()


def test_orch_2103_the_event_stream_of_any_instance_shows_the_clusters_tasks(
    tmp_path: Path, engine: LlamaCppProcess, nats_node: NatsNode, instances: list[Daemon]
) -> None:
    """A task admitted on the scheduler is followed to its end on the stream of an
    instance that does not schedule: every instance applies the same log."""
    first, second = two_instances(instances, tmp_path, engine, nats_node)
    leader = wait_leader([first, second])
    watcher, admitter = (second, first) if leader is first else (first, second)
    body = task_body(max_tokens=24)
    seen: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {DATA_KEY}"}
    with (
        httpx.Client(base_url=watcher.base_url, timeout=30) as http,
        http.stream("GET", "/v1/events", headers=headers) as events,
    ):
        assert events.status_code == 200
        lines = events.iter_lines()
        assert next(lines) == "event: snapshot"
        admitter.client().admit(body)
        for line in lines:
            if not line.startswith("data: "):
                continue
            data = json.loads(line[len("data: ") :])
            if data.get("task_id") == body["task_id"]:
                seen.append(data)
                if "outcome" in data:
                    break
    transcript = watcher.client().transcript(body["task_id"])
    assert seen[-1]["state"] == "ended"
    assert seen[-1]["outcome"]["result"] == "finished"
    assert seen[-1]["tokens_out"] == len(transcript.tokens)
    assert all(event["pool_id"] == POOL_ID for event in seen)


def test_admitted_tasks_survive_a_sigkill_of_the_only_instance(
    tmp_path: Path,
    engine: LlamaCppProcess,
    nats_node: NatsNode,
    instances: list[Daemon],
    record_property: pytest.RecordProperty,
) -> None:
    config = cluster_config(engine, [nats_node.url], capacity=64)
    first = start(instances, tmp_path, config)
    client = first.client()
    bodies = [task_body(max_tokens=300) for _ in range(50)]
    for body in bodies:
        client.admit(body)
    queued = client.health()["metrics"]["queue_depth"]
    kill(first)
    began = time.monotonic()
    again = start(instances, tmp_path, config)
    ready_s = time.monotonic() - began
    client = again.client()
    outcomes: dict[str, int] = {}
    for body in bodies:
        transcript = client.transcript(body["task_id"])  # checked: one terminal, no gap
        terminal = transcript.terminal
        key = terminal.event if terminal.event == "end" else terminal.data["code"]
        outcomes[key] = outcomes.get(key, 0) + 1
        assert client.transcript(body["task_id"]).raw == transcript.raw  # reads back alike
    record_property(
        "figures",
        {
            "admitted": 50,
            "queued_at_kill": queued,
            "ready_after_restart_s": round(ready_s, 2),
            "outcomes": outcomes,
        },
    )
    assert queued > 0
    assert outcomes.get("end", 0) >= 46  # only a task running at the kill may fail to migrate
    assert set(outcomes) <= {"end", "MIGRATION_FAILED"}


def test_scheduler_failover_continues_a_running_stream_token_for_token(
    tmp_path: Path,
    engine: LlamaCppProcess,
    nats_node: NatsNode,
    instances: list[Daemon],
    record_property: pytest.RecordProperty,
) -> None:
    first, second = two_instances(instances, tmp_path, engine, nats_node)
    leader = wait_leader([first, second])
    follower = second if leader is first else first
    client = follower.client()
    reference = client.run(long_task_body(max_tokens=4_000, seed=7))
    body = long_task_body(max_tokens=4_000, seed=7)
    client.admit(body)
    with client.open_stream(body["task_id"]) as stream:
        for _ in range(20):
            stream.read_until(lambda frame: frame.event == "token")
        killed_at, killed_wall = time.monotonic(), time.time()
        kill(leader)
        transcript = stream.read_all()
    took_over = wait_leader([follower])
    assert took_over is follower
    taken = [r for r in follower.log_records() if r.get("event") == "cluster.leader"][-1]
    assert taken["term"] > 0
    assert transcript.terminal.event == "end", transcript.terminal.data
    assert transcript.text == reference.text  # same seed, same tokens: nothing lost or repeated
    assert time.monotonic() - killed_at < 30
    took = datetime.fromisoformat(taken["ts"].replace("Z", "+00:00")).timestamp() - killed_wall
    migrating = next(r for r in follower.log_records() if r.get("event") == "task.migrating")
    record_property(
        "figures",
        {
            "takeover_s": round(took, 2),
            "tokens": len(transcript.tokens),
            "migrated_after_token": migrating["message"].rsplit(" ", 1)[-1],
        },
    )
    assert took <= 3.0


def test_losing_nats_stops_admissions_and_loses_nothing(
    tmp_path: Path, engine: LlamaCppProcess, nats_node: NatsNode, instances: list[Daemon]
) -> None:
    daemon = start(instances, tmp_path, cluster_config(engine, [nats_node.url]))
    client = daemon.client()
    queued = [task_body(max_tokens=16) for _ in range(5)]
    for body in queued:
        client.admit(body)
    nats_node.kill()
    refused = wait_until(
        lambda: (r := client.submit(task_body())).status_code == 503 and r,
        timeout=10,
        what="a 503 while NATS is down",
    )
    assert refused.json()["code"] == "STATE_UNAVAILABLE"
    assert refused.json()["retriable"] is True
    assert "Retry-After" in refused.headers
    assert httpx.get(daemon.base_url + "/readyz").status_code == 503
    nats_node.start()
    wait_until(
        lambda: httpx.get(daemon.base_url + "/readyz").status_code == 200,
        timeout=30,
        what="ready again once NATS is back",
    )
    for body in queued:
        assert client.transcript(body["task_id"]).terminal.event in ("end", "error")
    assert client.run(task_body(max_tokens=8)).terminal.event == "end"


def test_check_config_reaches_nats_and_refuses_launched_engines(
    tmp_path: Path, engine: LlamaCppProcess
) -> None:
    config = cluster_config(engine, [f"nats://127.0.0.1:{free_port()}"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [*orchestratord_command(), "--check-config", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 2
    assert "cannot reach NATS" in checked.stderr
    served = subprocess.run(
        [*orchestratord_command(), "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert served.returncode == 2
    assert "cannot reach NATS" in served.stderr
    launch = {"slots": 1, "ctx_per_slot": 16_384}
    config["pools"][0]["replicas"] = [{"id": "r0", "launch": launch}]
    path.write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [*orchestratord_command(), "--check-config", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 2
    assert "reach them by url" in checked.stderr


async def _log_bounds(url: str, stream: str) -> tuple[int, int]:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(stream)
        return info.state.first_seq, info.state.last_seq
    finally:
        await nc.close()


def test_an_instance_starts_from_the_latest_snapshot_and_the_trimmed_log(
    tmp_path: Path, engine: LlamaCppProcess, nats_node: NatsNode, instances: list[Daemon]
) -> None:
    config = cluster_config(engine, [nats_node.url], snapshot_every=100)
    first = start(instances, tmp_path, config)
    client = first.client()
    bodies = [task_body(max_tokens=48) for _ in range(12)]
    transcripts = {b["task_id"]: client.run(b).raw for b in bodies}
    wait_until(
        lambda: sum(r.get("event") == "cluster.snapshot" for r in first.log_records()) >= 2,
        timeout=20,
        what="two snapshots",
    )
    first_seq, last_seq = asyncio.run(_log_bounds(nats_node.url, "ORCHD"))
    assert first_seq > 1, "the log was not trimmed behind the snapshots"
    second = start(instances, tmp_path, instance_config(config, free_port()))
    joined = next(r for r in second.log_records() if r.get("event") == "cluster.joined")
    assert joined["seq"] >= last_seq
    on_second = second.client()
    for task_id, raw in transcripts.items():
        assert on_second.transcript(task_id).raw == raw
    assert on_second.run(task_body(max_tokens=8)).terminal.event == "end"


def test_a_rolling_restart_under_load_loses_nothing(
    tmp_path: Path,
    engine: LlamaCppProcess,
    nats_node: NatsNode,
    instances: list[Daemon],
    record_property: pytest.RecordProperty,
) -> None:
    first, second = two_instances(instances, tmp_path, engine, nats_node)
    cluster = chaos.Cluster([first, second])
    history, gate = chaos.History(), chaos.AdmissionGate()
    until = time.monotonic() + 40
    clients = [chaos.Client(cluster, history, gate, seed, until) for seed in range(4)]
    for thread in clients:
        thread.start()
    for daemon in (first, second, first):
        time.sleep(8)
        with gate.exclusive():
            history.admitted_counted += chaos.scrape_admissions(daemon)
            daemon.stop()
        history.kills.append(f"SIGTERM {daemon.workdir.name}")
        daemon.process, daemon.exit_code = None, None
        daemon.start()
    for thread in clients:
        thread.join(240)
        assert thread.error is None, repr(thread.error)
    wait_until(
        lambda: all(d.client().idle() for d in cluster.live()),
        timeout=120,
        interval=0.5,
        what="every task to end",
    )
    verdict = chaos.check(history, cluster, POOL_ID)
    record_property("figures", verdict.figures)
    assert not verdict.problems, "\n".join(verdict.problems[:30])
    assert verdict.figures["acknowledged"] > 20
