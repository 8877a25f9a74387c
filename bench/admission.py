"""Admission throughput: POST /v1/tasks req/s and latency, validation and auth on.

Method (the one stack.md used for the server stack): the daemon is pinned to one core,
wrk (one thread, 10 s after a 3 s warm-up) to the other, at 64 connections (the issue's
concurrency) and at 32 (the first published figure, kept for comparison). Every request
carries a fresh task_id (a Lua script makes a random UUID per request), passes pydantic
validation and API-key auth, and is admitted into a Ready pool whose queue is large. The
pool's one slot is held by a deliberately slow stand-in engine (one token every few
seconds), so every admitted task stays queued: the figure is the cost of admission
alone, not of decoding. The daemon logs at the default level `info` (one JSON line per
admitted task, to a file), except in one row at `warning` (no line per task), which
prices the task log. A last run fills a small queue first and measures the 429 path.

Each case runs on the working tree's daemon and on the daemon of `--baseline-rev`
(bench/baseline.py), a fresh daemon each, one after the other, the order alternating.

Run: `python -m bench admission [--baseline-rev REV]` (needs `wrk` and `taskset` on PATH).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from aiohttp import web

from bench.baseline import (
    DAEMON_ENV,
    SPEED_BASELINE_REV,
    Baseline,
    check_imports,
    checked_out,
    daemon_command,
    working_tree,
)
from bench.results import conditions, write_section

KEY = "bench-admission-key"
MODEL = "bench-model"
WRK_SCRIPT = r"""
local random = math.random
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
local function uuid()
  return string.format("%08x-%04x-4%03x-%04x-%012x",
    random(0, 0xffffffff), random(0, 0xffff), random(0, 0xfff),
    random(0x8000, 0xbfff), random(0, 0xffffffffffff))
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer KEY"
request = function()
  local body = string.format('{"task_id":"%s","session_id":"%s","workload":"completion",'
    .. '"model_ref":"MODEL","engine":"llamacpp","ctx":1024,"priority":"interactive",'
    .. '"prompt":"Say something short.","max_tokens":16,"deadline_ms":30000}', uuid(), uuid())
  return wrk.format(nil, "/v1/tasks", nil, body)
end
""".replace("KEY", KEY).replace("MODEL", MODEL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _slow_engine_app() -> web.Application:
    """A llama.cpp stand-in: healthy, one slot, and a completion that barely moves."""

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def props(_request: web.Request) -> web.Response:
        return web.json_response(
            {
                "total_slots": 1,
                "default_generation_settings": {"n_ctx": 1024},
                "model_path": "/bench/slow.gguf",
                "build_info": "bench-slow-engine",
            }
        )

    async def completion(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        limit = int(body.get("n_predict", 1))
        with contextlib.suppress(ConnectionResetError):  # the daemon canceled the task
            for index in range(limit):
                last = index == limit - 1
                frame = {"content": "x", "tokens": [1], "stop": last}
                if last:
                    frame |= {
                        "stop_type": "limit",
                        "tokens_predicted": limit,
                        "tokens_evaluated": 4,
                    }
                await response.write(f"data: {json.dumps(frame)}\n\n".encode())
                if limit > 1 and not last:
                    await asyncio.sleep(3)
        return response

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"tokens": list(range(len(body.get("content", "")) // 4 + 1))})

    async def slots(_request: web.Request) -> web.Response:
        return web.json_response([{"id": 0, "n_ctx": 1024, "is_processing": False}])

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/props", props)
    app.router.add_get("/slots", slots)
    app.router.add_post("/completion", completion)
    app.router.add_post("/tokenize", tokenize)
    return app


@contextlib.contextmanager
def slow_engine() -> Iterator[str]:
    """Run the stand-in engine in a thread; yields its base URL."""
    port = _free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_slow_engine_app())
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def _config(
    engine_url: str, port: int, capacity: int, log_level: str = "warning"
) -> dict[str, object]:
    return {
        "allow_cpu_pools": True,
        "server": {"port": port, "log_level": log_level},
        "auth": {"api_keys": [KEY]},
        "pools": [
            {
                "id": "bench",
                "engine": "llamacpp",
                "model": MODEL,
                "ctx": 1024,
                "device_kind": "cpu",
                "devices": [0],
                "queue": {"capacity": capacity, "full_policy": "reject"},
                "timeouts": {"wall_ms": 3_600_000, "idle_ms": 3_600_000},
                "replicas": [{"id": "slow", "url": engine_url}],
            }
        ],
    }


@dataclass(frozen=True)
class RunningDaemon:
    """A started orchestratord: its base URL and process id (for /proc readings)."""

    base: str
    pid: int


@contextlib.contextmanager
def daemon_process(
    config: dict[str, object], workdir: Path, *, pin: bool = True, cpus: str = "0"
) -> Iterator[RunningDaemon]:
    """Start orchestratord (pinned to `cpus`, core 0 by default, unless `pin` is false);
    yields it once /readyz is 200. It inherits this process's limits (open files among
    them)."""
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    port = config["server"]["port"]  # type: ignore[index]
    command = shlex.split(os.environ.get(DAEMON_ENV, "")) or [
        str(Path(sys.executable).with_name("orchestratord"))
    ]
    log = (workdir / "daemon.log").open("w")
    pinning = ["taskset", "-c", cpus] if pin else []
    process = subprocess.Popen(
        [*pinning, *command, "serve", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base}/readyz", timeout=1) as answer,
            ):
                if answer.status == 200:
                    break
            time.sleep(0.2)
        else:
            log.flush()
            tail = (workdir / "daemon.log").read_text()[-2000:]
            raise RuntimeError(f"daemon not ready; its log ends:\n{tail}")
        yield RunningDaemon(base, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@contextlib.contextmanager
def daemon_of(
    baseline: Baseline | None, config: dict[str, object], workdir: Path, *, pin: bool = True
) -> Iterator[RunningDaemon]:
    """:func:`daemon_process` of the working tree (`baseline` None) or of a checked-out
    baseline, whose imports are checked to be its own."""
    with (
        daemon_command(None if baseline is None else baseline.command),
        daemon_process(config, workdir, pin=pin) as running,
    ):
        if baseline is not None:
            check_imports(workdir / "daemon.log", baseline.tree)
        yield running


def _wrk(
    base: str, script: Path, seconds: int, connections: int, cpus: str | None = "1"
) -> dict[str, float]:
    """One wrk run (pinned to `cpus`, core 1 by default; None leaves it unpinned): req/s,
    p50/p90/p99/max ms, non-2xx answers, requests completed and socket errors."""
    pinning = ["taskset", "-c", cpus] if cpus is not None else []
    command = [
        *pinning,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        base,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        **{
            f"p{q}": _ms(re.search(rf"\s{q}%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
            for q in ("50", "90", "99")
        },
        "max": _ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "non2xx": float(m.group(1)) if (m := re.search(r"Non-2xx.*?:\s+(\d+)", out)) else 0.0,
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "errors": float(
            sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
        ),
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


SECTION = "## Admission (POST /v1/tasks)"
#: (label, queue capacity, wrk connections, log level): admission alone at the issue's
#: concurrency 64 at the default log level `info` (one JSON line per admitted task), at
#: `warning` (no per-task line) and at 32 connections, then the 429 path of a full queue.
CASES = (
    ("202 admitted (queue 10M)", 10_000_000, 64, "info"),
    ("202 admitted (queue 10M)", 10_000_000, 64, "warning"),
    ("202 admitted (queue 10M)", 10_000_000, 32, "info"),
    ("429 queue full", 1, 64, "info"),
)
BEFORE = "before"
AFTER = "after"


def _measure(
    baseline: Baseline, engine: str, work: Path, script: Path
) -> list[tuple[str, int, str, str, dict[str, float]]]:
    """Every case on both daemons, a fresh daemon each time, the order alternating."""
    rows = []
    for number, (label, capacity, connections, level) in enumerate(CASES):
        results: dict[str, dict[str, float]] = {}
        for side in (BEFORE, AFTER) if number % 2 == 0 else (AFTER, BEFORE):
            config = _config(engine, _free_port(), capacity, level)
            with daemon_of(baseline if side == BEFORE else None, config, work) as running:
                _wrk(running.base, script, 3, connections)
                results[side] = _wrk(running.base, script, 10, connections)
        rows += [(label, connections, level, side, results[side]) for side in (BEFORE, AFTER)]
    return rows


def run(rev: str) -> str:
    """Measure the working tree and `rev` side by side; the Markdown section."""
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench admission needs `{tool}` on PATH")
    machine = conditions()
    after = working_tree()
    with (
        tempfile.TemporaryDirectory(prefix="orchd-bench-admission-") as tmp,
        slow_engine() as engine,
    ):
        work = Path(tmp)
        script = work / "admit.lua"
        script.write_text(WRK_SCRIPT)
        with checked_out(rev, work) as baseline:
            rows = _measure(baseline, engine, work, script)
            short = baseline.short
    lines = [
        SECTION,
        "",
        f"{machine} Command: "
        "`python -m bench admission`. Daemon pinned to core 0, `wrk -t1 -c<conc> -d10s` on core 1 "
        "after a 3 s warm-up; a fresh UUID per request; pydantic validation and API-key auth on; "
        "admitted tasks stay queued behind a slow stand-in engine (admission cost only). "
        f"{BEFORE} = commit `{short}` (a git worktree, its own code on PYTHONPATH, imports "
        f"checked), {AFTER} = {after}; a fresh daemon per row, both sides of a case one after "
        "the other (the order alternating). The goal row: concurrency 64 at the default log "
        "level.",
        "",
        "| case | concurrency | log level | build | req/s | p50 ms | p90 ms | p99 ms | non-2xx |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, connections, level, side, r in rows:
        lines.append(
            f"| {label} | {connections} | {level} | {side} | {r['rps']:,.0f} | {r['p50']:.2f} "
            f"| {r['p90']:.2f} | {r['p99']:.2f} | {r['non2xx']:,.0f} |"
        )
    lines += [
        "",
        "Finding (2026-11-27): with Python's default collector thresholds the 202 row had "
        "p99 212 ms at 3,470 req/s: every admitted task stays queued here (~35k after 10 s) "
        "and each full collection scans all of them. Freezing start-up objects and letting "
        "the full pass wait for 10,000 middle passes (`cli._settle_garbage_collector`) "
        "brought p99 to ~16 ms; with the collector off it was 16.3 ms, so the collector "
        "no longer sets the tail.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """`python -m bench admission [--baseline-rev REV] [--no-write]`: measure, then update
    RESULTS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench admission", description=__doc__)
    parser.add_argument("--baseline-rev", default=SPEED_BASELINE_REV, help="the 'before' commit")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ns = parser.parse_args(argv)
    text = run(ns.baseline_rev)
    print(text)
    if not ns.no_write:
        write_section(SECTION, text)
    return 0
