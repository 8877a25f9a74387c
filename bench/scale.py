"""Scale: memory per queued task and per open stream, and event-loop lag, on one daemon.

Method. The daemon (pinned to core 0; this bench and its probe on core 1) serves one pool
whose single slot is held by the slow stand-in engine of `bench.admission`: a first
"holder" task is dispatched there and barely moves, so everything admitted afterwards
stays queued. Memory is the daemon's resident set (`VmRSS` in /proc/<pid>/status):

1. 10,000 tasks are admitted (64 concurrent POST /v1/tasks, auth and validation on);
   bytes per queued task = RSS growth / 10,000;
2. 1,000, then 5,000 concurrent SSE streams are opened on queued tasks (they stay open,
   waiting for their task to start); bytes per open stream = RSS growth / streams;
3. with the 5,000 streams open, another 10,000 tasks are admitted.

Event-loop lag has no endpoint in the daemon, so it is measured from outside: a separate
probe process sends GET /livez every 50 ms on one keep-alive connection and records each
answer's latency. /livez does no work, so its latency above the idle figure is the time
the request waited for the daemon's event loop. It is sampled idle, during phase 1, while
the streams are opened, and during phase 3 (streams open and tasks being admitted).

The open-files limit is raised to its hard limit here; the daemon inherits it.

The baseline's daemon (`--baseline-rev`, see bench/baseline.py) goes through the same
phases first, then the working tree's.

Run: `python -m bench scale [--tasks N] [--streams 1000,5000] [--baseline-rev REV]`
(needs `taskset`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from bench.admission import KEY, MODEL, _config, _free_port, daemon_of, slow_engine
from bench.baseline import SPEED_BASELINE_REV, checked_out, working_tree
from bench.results import conditions, write_section

SECTION = "## Scale (queued tasks, open streams, event-loop lag)"
HEADERS = {"Authorization": f"Bearer {KEY}"}
ADMIT_CONCURRENCY = 64
OPEN_CONCURRENCY = 128
PROBE_INTERVAL_S = 0.05


def rss_bytes(pid: int) -> int:
    """The process's resident set size, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_files_limit(pid: int) -> str:
    """The soft open-files limit of the process, from /proc/<pid>/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "unknown"


def _task(max_tokens: int = 16) -> dict[str, object]:
    return {
        "task_id": str(uuid.uuid4()),
        "session_id": str(uuid.uuid4()),
        "workload": "completion",
        "model_ref": MODEL,
        "engine": "llamacpp",
        "ctx": 1024,
        "priority": "interactive",
        "prompt": "Say something short.",
        "max_tokens": max_tokens,
        "deadline_ms": 86_400_000,
    }


# -- the /livez probe, in its own process so the bench's own work does not delay it ------


def _probe(port: int, stop: Connection, out: Connection) -> None:
    """Send GET /livez every PROBE_INTERVAL_S until told to stop; send back the latencies."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    next_at = time.perf_counter()
    while not stop.poll(max(0.0, next_at - time.perf_counter())):
        start = time.perf_counter()
        connection.request("GET", "/livez")
        connection.getresponse().read()
        latencies.append((time.perf_counter() - start) * 1000)
        next_at += PROBE_INTERVAL_S
    connection.close()
    out.send(latencies)


@contextlib.contextmanager
def lag_probe(port: int, into: list[float]) -> Iterator[None]:
    """Probe /livez while the block runs; the latencies (ms) are appended to `into`."""
    context = multiprocessing.get_context("spawn")
    stop_recv, stop_send = context.Pipe(duplex=False)
    out_recv, out_send = context.Pipe(duplex=False)
    process = context.Process(target=_probe, args=(port, stop_recv, out_send), daemon=True)
    process.start()
    try:
        yield
    finally:
        stop_send.send(None)
        into.extend(out_recv.recv())
        process.join(timeout=10)


# -- load --------------------------------------------------------------------------------


async def admit(http: aiohttp.ClientSession, base: str, count: int) -> list[str]:
    """Admit `count` tasks with ADMIT_CONCURRENCY requests in flight; their ids."""
    ids: list[str] = []
    pending = iter(range(count))

    async def worker() -> None:
        for _ in pending:
            body = _task()
            async with http.post(f"{base}/v1/tasks", json=body, headers=HEADERS) as answer:
                if answer.status != 202:
                    raise RuntimeError(f"admission: {answer.status} {await answer.text()}")
            ids.append(str(body["task_id"]))

    await asyncio.gather(*(worker() for _ in range(ADMIT_CONCURRENCY)))
    return ids


async def open_streams(
    http: aiohttp.ClientSession, base: str, task_ids: Sequence[str]
) -> list[aiohttp.ClientResponse]:
    """Open one SSE stream per task (at most OPEN_CONCURRENCY connecting at once) and
    return the open responses, each past its 200 and headers."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def one(task_id: str) -> aiohttp.ClientResponse:
        async with gate:
            response = await http.get(f"{base}/v1/tasks/{task_id}/stream", headers=HEADERS)
            if response.status != 200:
                raise RuntimeError(f"stream: {response.status} {await response.text()}")
            return response

    return list(await asyncio.gather(*(one(t) for t in task_ids)))


async def _holder(http: aiohttp.ClientSession, base: str) -> aiohttp.ClientResponse:
    """Admit the task that holds the slot; return its stream once it has started."""
    body = _task(max_tokens=900)
    async with http.post(f"{base}/v1/tasks", json=body, headers=HEADERS) as answer:
        if answer.status != 202:
            raise RuntimeError(f"holder: {answer.status} {await answer.text()}")
    stream = await http.get(f"{base}/v1/tasks/{body['task_id']}/stream", headers=HEADERS)
    while b"event: started" not in await stream.content.readline():
        pass
    return stream


def _lag(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {
        "n": len(ordered),
        "p50": q(0.5),
        "p99": q(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


async def _measure(
    base: str, port: int, pid: int, tasks: int, streams: list[int]
) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None, connect=60)
    connector = aiohttp.TCPConnector(limit=0)
    result: dict[str, Any] = {"lag": {}, "streams": []}
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        holder = await _holder(http, base)
        await admit(http, base, 200)  # warm every code path before the baseline
        await asyncio.sleep(1)
        idle: list[float] = []
        with lag_probe(port, idle):
            await asyncio.sleep(3)
        result["lag"]["idle"] = _lag(idle)
        rss0 = rss_bytes(pid)
        during: list[float] = []
        started = time.perf_counter()
        with lag_probe(port, during):
            queued = await admit(http, base, tasks)
        result["admit_s"] = time.perf_counter() - started
        result["lag"][f"admitting {tasks:,} tasks"] = _lag(during)
        await asyncio.sleep(1)
        rss1 = rss_bytes(pid)
        result["rss0"], result["rss1"] = rss0, rss1
        result["per_task"] = (rss1 - rss0) / tasks
        opened: list[aiohttp.ClientResponse] = []
        for target in streams:
            if target > len(queued):
                raise SystemExit(f"--streams {target} needs at least as many --tasks")
            opening: list[float] = []
            with lag_probe(port, opening):
                opened += await open_streams(http, base, queued[len(opened) : target])
            await asyncio.sleep(1)
            rss = rss_bytes(pid)
            result["streams"].append({"open": len(opened), "rss": rss})
            result["lag"][f"opening streams to {target:,}"] = _lag(opening)
        loaded: list[float] = []
        with lag_probe(port, loaded):
            await admit(http, base, tasks)
        result["lag"][f"{len(opened):,} streams open, admitting {tasks:,} more tasks"] = _lag(
            loaded
        )
        result["rss_end"] = rss_bytes(pid)
        for response in opened:
            response.close()
        holder.close()
    return result


BEFORE = "before"
AFTER = "after"


def run(tasks: int, streams: list[int], rev: str) -> str:
    """Measure the baseline's daemon, then the working tree's; the RESULTS.md section."""
    machine = conditions()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1} if len(affinity) > 1 else affinity)
    results: dict[str, dict[str, Any]] = {}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="orchd-bench-scale-") as tmp,
            slow_engine() as engine,
            checked_out(rev, Path(tmp)) as baseline,
        ):
            for side, tree in ((BEFORE, baseline), (AFTER, None)):
                port = _free_port()
                config = _config(engine, port, 1_000_000, "info")
                # Room for every stream, the admitting clients and the probe: the default
                # cap (server.max_connections) would refuse streams past 1,000.
                config["server"]["max_connections"] = max(streams) + 512  # type: ignore[index]
                workdir = Path(tmp) / side
                workdir.mkdir()
                with daemon_of(tree, config, workdir) as running:
                    limit = open_files_limit(running.pid)
                    results[side] = asyncio.run(
                        _measure(running.base, port, running.pid, tasks, streams)
                    )
            sides = {BEFORE: f"commit `{baseline.short}`", AFTER: working_tree()}
    finally:
        os.sched_setaffinity(0, affinity)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return _render(results, sides, tasks, streams, limit, machine)


def _render(
    results: dict[str, dict[str, Any]],
    sides: dict[str, str],
    tasks: int,
    streams: list[int],
    limit: str,
    machine: str,
) -> str:
    mib = 1024 * 1024
    lines = [
        SECTION,
        "",
        f"{machine} Command: `python -m bench scale --tasks {tasks} --streams "
        f"{','.join(map(str, streams))}`. Daemon pinned to core 0, the bench and its probe "
        f"on core 1; the daemon's open-files limit: {limit} (inherited from the bench, "
        "which raised its soft limit to the hard one); default settings (log level "
        "`info`) but `server.max_connections` raised to fit every stream. One pool, one "
        "slot held by the slow stand-in engine, so every admitted "
        "task stays queued; memory is the daemon's VmRSS after each phase settles for 1 s. "
        f"{BEFORE} = {sides[BEFORE]} (a git worktree, its own code on PYTHONPATH, imports "
        f"checked), {AFTER} = {sides[AFTER]}; one daemon after the other.",
        "",
        "| what | count | build | RSS before | RSS after | per item |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for side, result in results.items():
        lines.append(
            f"| queued tasks | {tasks:,} | {side} | {result['rss0'] / mib:.1f} MiB "
            f"| {result['rss1'] / mib:.1f} MiB | {result['per_task'] / 1024:.2f} KiB |"
        )
    for index in range(len(streams)):
        for side, result in results.items():
            entry = result["streams"][index]
            rss1 = result["rss1"]
            per = (entry["rss"] - rss1) / entry["open"]
            lines.append(
                f"| open SSE streams (on queued tasks) | {entry['open']:,} | {side} "
                f"| {rss1 / mib:.1f} MiB | {entry['rss'] / mib:.1f} MiB | {per / 1024:.2f} KiB |"
            )
    lines.append("")
    for side, result in results.items():
        lines.append(
            f"{side}: admission of the first {tasks:,} tasks took {result['admit_s']:.1f} s "
            f"({tasks / result['admit_s']:,.0f} req/s at concurrency {ADMIT_CONCURRENCY}, "
            "client and daemon on one core each); daemon RSS at the end "
            f"({2 * tasks + 1:,} tasks queued, {result['streams'][-1]['open']:,} streams "
            f"open): {result['rss_end'] / mib:.1f} MiB."
        )
    lines += [
        "",
        "Event-loop lag, measured from outside: latency of GET /livez sent every "
        f"{PROBE_INTERVAL_S * 1000:.0f} ms on one keep-alive connection by a separate "
        "process; /livez does no work, so the excess over the idle figure is time spent "
        "waiting for the daemon's event loop.",
        "",
        "| phase | build | samples | p50 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for phase in results[AFTER]["lag"]:
        for side, result in results.items():
            lag = result["lag"][phase]
            lines.append(
                f"| {phase} | {side} | {lag['n']:,} | {lag['p50']:.2f} | {lag['p99']:.2f} "
                f"| {lag['max']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """`python -m bench scale`: measure, then update RESULTS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--streams", default="1000,5000", help="comma-separated, ascending")
    parser.add_argument("--baseline-rev", default=SPEED_BASELINE_REV, help="the 'before' commit")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ns = parser.parse_args(argv)
    streams = sorted(int(s) for s in ns.streams.split(","))
    text = run(ns.tasks, streams, ns.baseline_rev)
    print(text)
    if not ns.no_write:
        write_section(SECTION, text)
    return 0
