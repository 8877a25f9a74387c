"""Streaming overhead: the same engine direct, through orchestratord and through a peer.

One real llama.cpp server (the tiny random-weight model by default, so the engine is fast
and the per-token cost of what sits in front of it is what shows; `--model smollm2` for
the real one) serves four routes: its native `/completion` direct, orchestratord in front
of it (`POST /v1/tasks` + `GET .../stream`), its OpenAI-compatible `/v1/completions`
direct, and LiteLLM's proxy in front of that (bench/litellm_peer.py; `--no-peer` skips
the last two). Each round sends N concurrent streams over every route in turn, with
identical prompts, seeds and token counts; the order rotates each round so drift in the
machine hits every route alike. Reported per N and route: aggregate tokens/s, the ratio
to the route's direct counterpart, and time to first token p50/p99 with the difference.

Beside the working tree's daemon, the daemon of `--baseline-rev` (bench/baseline.py)
fronts the same engine as a route of its own, so before and after are measured in the
same rounds. Then the added first-token latency at 1 stream on an idle engine: 40 streams
per route by default, one at a time, routes interleaved, timed from the POST as a client
does. The daemons run on default settings (log level included).

Run: `python -m bench streaming [--model tiny|smollm2] [--rounds R] [--tokens T]
[--no-peer] [--baseline-rev REV|none] [--first-token-samples N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.admission import KEY, RunningDaemon, _free_port, daemon_of
from bench.baseline import SPEED_BASELINE_REV, checked_out, working_tree
from bench.litellm_peer import (
    MASTER_KEY,
    VENV,
    PeerUnavailable,
    ensure_venv,
    litellm_proxy,
    openai_body,
    openai_stream,
)
from bench.litellm_peer import version as litellm_version
from bench.results import conditions, write_section
from orchestratord_server.adapters.base import CompletionRequest
from orchestratord_server.adapters.llamacpp import completion_body
from orchestratord_server.engines.llamacpp_process import LlamaCppProcess, LlamaCppServerConfig
from orchestratord_server.engines.models import smollm2_gguf_path
from tests.support.tiny_gguf import write_tiny_gguf

SECTION = "## Streaming overhead, {model} model (direct vs orchestratord vs LiteLLM)"
DIRECT = "direct"
OURS = "orchestratord"
#: The same daemon at the baseline commit, on the same engine.
OURS_BEFORE = "orchestratord (before)"
DIRECT_OAI = "direct (OpenAI)"
PEER = "LiteLLM"
# llama.cpp closes the connection after a stream although it announces keep-alive, so
# direct requests ask for their own connection (as orchestratord's adapter does).
ENGINE_HEADERS = {"Connection": "close"}
PROMPT = "Once upon a time, in a lighthouse on a rocky island, there lived"
MODEL_REF = "bench-stream-model"
CONCURRENCY = (1, 8, 32)
#: Tokens per stream of the first-token samples (enough for a stream, short to keep the
#: engine idle between samples).
FIRST_TOKEN_TOKENS = 16
CTX_PER_SLOT = 512


@dataclass(frozen=True)
class Route:
    """One way to reach the engine: its name, the one it is compared with, how to send
    one stream over it (returning seconds to the first token and tokens received), and
    the process in between, if any, whose CPU time is counted."""

    name: str
    baseline: str
    one: Callable[[aiohttp.ClientSession, int, int], Awaitable[tuple[float | None, int]]]
    pid: int | None = None


def cpu_seconds(pid: int) -> float:
    """CPU time all threads of the process have used, in nanosecond resolution (the
    first field of /proc/<pid>/task/<tid>/schedstat)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int(stat.read_text().split()[0])
    return total / 1e9


async def _direct_one(
    engine: str, http: aiohttp.ClientSession, seed: int, tokens: int
) -> tuple[float | None, int]:
    body = completion_body(
        CompletionRequest(prompt=PROMPT, max_tokens=tokens, seed=seed), stream=True
    )
    start = time.perf_counter()
    first = None
    count = 0
    async with http.post(f"{engine}/completion", json=body, headers=ENGINE_HEADERS) as response:
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            frame = json.loads(line[6:])
            if frame.get("content"):
                count += 1
                if first is None:
                    first = time.perf_counter() - start
            if frame.get("stop"):
                break
    return first, count


async def _through_one(
    base: str, http: aiohttp.ClientSession, seed: int, tokens: int
) -> tuple[float | None, int]:
    task_id = str(uuid.uuid4())
    task = {
        "task_id": task_id,
        "session_id": str(uuid.uuid4()),
        "workload": "completion",
        "model_ref": MODEL_REF,
        "engine": "llamacpp",
        "ctx": CTX_PER_SLOT,
        "priority": "interactive",
        "prompt": PROMPT,
        "max_tokens": tokens,
        "deadline_ms": 600_000,
        "seed": seed,
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    start = time.perf_counter()
    first = None
    count = 0
    async with http.post(f"{base}/v1/tasks", json=task, headers=headers) as admitted:
        if admitted.status != 202:
            raise RuntimeError(f"admission failed: {admitted.status} {await admitted.text()}")
    async with http.get(f"{base}/v1/tasks/{task_id}/stream", headers=headers) as response:
        event = b""
        async for line in response.content:
            if line.startswith(b"event: "):
                event = line[7:].strip()
            elif line.startswith(b"data: ") and event == b"token":
                count += 1
                if first is None:
                    first = time.perf_counter() - start
            elif event in (b"end", b"error") and line.startswith(b"data: "):
                break
    return first, count


async def _openai_one(
    url: str, headers: dict[str, str], http: aiohttp.ClientSession, seed: int, tokens: int
) -> tuple[float | None, int]:
    return await openai_stream(http, url, openai_body(PROMPT, tokens, seed), headers)


def routes(
    engine: str,
    daemon: RunningDaemon,
    before: RunningDaemon | None,
    peer: tuple[str, int] | None,
) -> list[Route]:
    """Direct and through orchestratord (and through the baseline's daemon, if given);
    with a peer (base URL, pid), the engine's OpenAI route direct and through the peer
    (each compared with its own direct route)."""
    result = [
        Route(DIRECT, DIRECT, functools.partial(_direct_one, engine)),
        Route(OURS, DIRECT, functools.partial(_through_one, daemon.base), daemon.pid),
    ]
    if before is not None:
        result.append(
            Route(OURS_BEFORE, DIRECT, functools.partial(_through_one, before.base), before.pid)
        )
    if peer is not None:
        peer_base, peer_pid = peer
        peer_headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        result += [
            Route(
                DIRECT_OAI,
                DIRECT_OAI,
                functools.partial(_openai_one, f"{engine}/v1/completions", ENGINE_HEADERS),
            ),
            Route(
                PEER,
                DIRECT_OAI,
                functools.partial(_openai_one, f"{peer_base}/v1/completions", peer_headers),
                peer_pid,
            ),
        ]
    return result


async def _round(
    http: aiohttp.ClientSession, route: Route, n: int, tokens: int, seed_base: int
) -> tuple[float, list[float]]:
    """N concurrent streams over `route`: (tokens/s of the round, first-token ms each)."""
    start = time.perf_counter()
    done = await asyncio.gather(*(route.one(http, seed_base + i + 1, tokens) for i in range(n)))
    seconds = time.perf_counter() - start
    received = sum(count for _, count in done)
    if received != n * tokens:
        raise RuntimeError(f"{route.name}: {received} tokens, expected {n * tokens}")
    return received / seconds, [(first or seconds) * 1000 for first, _ in done]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(all_routes: list[Route], rounds: int, tokens: int) -> list[dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0)
    rows: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        for route in all_routes:
            await _round(http, route, 2, 8, 1)
        for n in CONCURRENCY:
            rates: dict[str, list[float]] = {r.name: [] for r in all_routes}
            firsts: dict[str, list[float]] = {r.name: [] for r in all_routes}
            cpu: dict[str, float] = {r.name: 0.0 for r in all_routes}
            for r in range(rounds):
                shift = r % len(all_routes)
                for route in all_routes[shift:] + all_routes[:shift]:
                    before = cpu_seconds(route.pid) if route.pid else 0.0
                    rate, first = await _round(http, route, n, tokens, 1000 * r)
                    if route.pid:
                        cpu[route.name] += cpu_seconds(route.pid) - before
                    rates[route.name].append(rate)
                    firsts[route.name] += first
            for route in all_routes:
                rows.append(
                    {
                        "n": n,
                        "route": route.name,
                        "baseline": route.baseline,
                        "tps": statistics.median(rates[route.name]),
                        "p50": _quantile(firsts[route.name], 0.5),
                        "p99": _quantile(firsts[route.name], 0.99),
                        "cpu_us": (
                            cpu[route.name] / (rounds * n * tokens) * 1e6 if route.pid else None
                        ),
                    }
                )
    return rows


async def _first_tokens(all_routes: list[Route], samples: int) -> list[dict[str, Any]]:
    """`samples` streams per route, one at a time on the idle engine, routes interleaved:
    first-token latency p50/p99 per route."""
    timeout = aiohttp.ClientTimeout(total=600)
    firsts: dict[str, list[float]] = {r.name: [] for r in all_routes}
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for i in range(samples):
            shift = i % len(all_routes)
            for route in all_routes[shift:] + all_routes[:shift]:
                _, first = await _round(http, route, 1, FIRST_TOKEN_TOKENS, 100_000 + i)
                firsts[route.name] += first
    return [
        {
            "route": r.name,
            "baseline": r.baseline,
            "samples": len(firsts[r.name]),
            "p50": _quantile(firsts[r.name], 0.5),
            "p99": _quantile(firsts[r.name], 0.99),
        }
        for r in all_routes
    ]


def _config(engine: str, port: int, slots: int) -> dict[str, object]:
    return {
        "allow_cpu_pools": True,
        "server": {"port": port},
        "auth": {"api_keys": [KEY]},
        "pools": [
            {
                "id": "bench",
                "engine": "llamacpp",
                "model": MODEL_REF,
                "ctx": CTX_PER_SLOT,
                "device_kind": "cpu",
                "devices": [0],
                "queue": {"capacity": 1024, "full_policy": "reject"},
                "timeouts": {"wall_ms": 600_000, "idle_ms": 60_000},
                "replicas": [{"id": "engine", "url": engine, "slots": slots}],
            }
        ],
    }


def run(
    model: str, rounds: int, tokens: int, peer: bool, rev: str | None, first_samples: int
) -> str:
    """Measure and return the RESULTS.md section."""
    machine = conditions()
    slots = max(CONCURRENCY)
    peer_note = "not run (`--no-peer`)."
    before_note = "not run (`--baseline-rev none`)."
    after = working_tree()
    with tempfile.TemporaryDirectory(prefix="orchd-bench-streaming-") as tmp:
        work = Path(tmp)
        path = write_tiny_gguf(work / "tiny.gguf") if model == "tiny" else smollm2_gguf_path()
        engine = LlamaCppProcess(
            LlamaCppServerConfig(
                model_path=path,
                n_ctx=CTX_PER_SLOT * slots,
                n_parallel=slots,
                threads=1,
            )
        )
        asyncio.run(engine.start())
        try:
            with contextlib.ExitStack() as stack:
                config = _config(engine.base_url, _free_port(), slots)
                (work / "after").mkdir()
                running = stack.enter_context(daemon_of(None, config, work / "after", pin=False))
                before = None
                if rev is not None:
                    baseline = stack.enter_context(checked_out(rev, work))
                    (work / "before").mkdir()
                    config = _config(engine.base_url, _free_port(), slots)
                    before = stack.enter_context(
                        daemon_of(baseline, config, work / "before", pin=False)
                    )
                    before_note = (
                        f"`{OURS_BEFORE}` = commit `{baseline.short}` (a git worktree, its "
                        f"own code on PYTHONPATH, imports checked); `{OURS}` = {after}."
                    )
                peer_proxy = None
                if peer:
                    try:
                        peer_proxy = stack.enter_context(
                            litellm_proxy(engine.base_url, _free_port(), work)
                        )
                        peer_note = f"LiteLLM {litellm_version(ensure_venv())} ({VENV})."
                    except PeerUnavailable as exc:
                        peer_note = f"LiteLLM could not run here: {exc}"
                all_routes = routes(engine.base_url, running, before, peer_proxy)
                rows = asyncio.run(_measure(all_routes, rounds, tokens))
                firsts = (
                    asyncio.run(_first_tokens(all_routes, first_samples)) if first_samples else []
                )
        finally:
            asyncio.run(engine.stop())
    notes = (peer_note, before_note)
    return _render(rows, firsts, model, (rounds, tokens, first_samples), slots, machine, notes)


def _render(
    rows: list[dict[str, Any]],
    firsts: list[dict[str, Any]],
    model: str,
    sizes: tuple[int, int, int],
    slots: int,
    machine: str,
    notes: tuple[str, str],
) -> str:
    rounds, tokens, first_samples = sizes
    peer_note, before_note = notes
    lines = [
        SECTION.format(model=model),
        "",
        f"{machine} Command: `python -m bench streaming --model {model} --rounds {rounds} "
        f"--tokens {tokens}`. One llama.cpp server ({model} model, {slots} slots, 1 thread) "
        "serves every route. Routes: `direct` = the engine's native `/completion` (the "
        "route orchestratord uses); `orchestratord` = `POST /v1/tasks` + `GET "
        ".../stream` on default settings (log level `info`), auth and validation on, a "
        "fresh task and session id per stream; `direct (OpenAI)` = the engine's "
        "`/v1/completions` (the route LiteLLM uses); `LiteLLM` = its proxy in front of that "
        "route, master key on. Each round runs N concurrent streams over every route in "
        "turn (the order rotates each round, so drift hits all alike), same prompt, seeds "
        f"and token count ({tokens} tokens per stream, checked). tokens/s is the median "
        "over rounds of tokens received / round wall time; ratio = route ÷ its direct "
        "route; first-token latency counts from the request (for orchestratord: from POST "
        "/v1/tasks) to the first token received; added = route minus its direct route; "
        "CPU/token = CPU time (all threads, /proc schedstat) of the process in between "
        "(the daemon, or LiteLLM's proxy) over the tokens it relayed, admission included. "
        f"Baseline: {before_note} Peer: {peer_note}",
        "",
        "| N | route | tok/s | ratio | TTFT p50 | added p50 | TTFT p99 | added p99 | CPU/token |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(r["n"], r["route"]): r for r in rows}
    for r in rows:
        base = by_key[r["n"], r["baseline"]]
        if r["route"] == r["baseline"]:
            ratio, added50, added99 = "baseline", "", ""
        else:
            ratio = f"**{r['tps'] / base['tps']:.3f}**"
            added50 = f"{r['p50'] - base['p50']:+.1f} ms"
            added99 = f"{r['p99'] - base['p99']:+.1f} ms"
        cpu = "" if r["cpu_us"] is None else f"{r['cpu_us']:.0f} µs"
        lines.append(
            f"| {r['n']} | {r['route']} | {r['tps']:,.0f} | {ratio} | {r['p50']:.1f} ms | "
            f"{added50} | {r['p99']:.1f} ms | {added99} | {cpu} |"
        )
    if not firsts:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"Added first-token latency at 1 stream on an idle engine: {first_samples} streams "
        f"of {FIRST_TOKEN_TOKENS} tokens per route, one at a time, the routes interleaved; "
        "from the request (POST, then GET of the stream, as a client does) to the first "
        "token.",
        "",
        "| route | samples | TTFT p50 | added p50 | TTFT p99 | added p99 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    by_route = {r["route"]: r for r in firsts}
    for r in firsts:
        base = by_route[r["baseline"]]
        added50 = "" if r is base else f"{r['p50'] - base['p50']:+.2f} ms"
        added99 = "" if r is base else f"{r['p99'] - base['p99']:+.2f} ms"
        lines.append(
            f"| {r['route']} | {r['samples']} | {r['p50']:.2f} ms | {added50} | "
            f"{r['p99']:.2f} ms | {added99} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """`python -m bench streaming`: measure, then update RESULTS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench streaming", description=__doc__)
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--no-peer", action="store_true", help="skip the LiteLLM routes")
    parser.add_argument(
        "--baseline-rev",
        default=SPEED_BASELINE_REV,
        help="the commit whose daemon is measured beside the working tree's ('none': skip)",
    )
    parser.add_argument(
        "--first-token-samples", type=int, default=40, help="first-token samples per route"
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ns = parser.parse_args(argv)
    rev = None if ns.baseline_rev == "none" else ns.baseline_rev
    text = run(ns.model, ns.rounds, ns.tokens, not ns.no_peer, rev, ns.first_token_samples)
    print(text)
    if not ns.no_write:
        write_section(SECTION.format(model=ns.model), text)
    return 0
