"""Streaming overhead: the same engine, direct and through orchestratord, in one run.

One real llama.cpp server (the tiny random-weight model by default, so the engine is fast
and the orchestrator's per-token cost is what shows; `--model smollm2` for the real one)
serves both paths. Each round sends N concurrent streams direct to the engine's
`/completion`, then N through orchestratord (`POST /v1/tasks` + `GET .../stream`), with
identical prompts, seeds, token counts and sampler settings; rounds alternate so drift in
the machine hits both sides alike. Reported per N: aggregate tokens/s of each path, the
ratio (through / direct), and time to first token p50/p99 of each path and the difference.

Run: `python -m bench streaming [--model tiny|smollm2] [--rounds R] [--tokens T]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.admission import KEY, _free_port, daemon
from bench.results import write_section
from orchestratord_server.adapters.base import CompletionRequest
from orchestratord_server.adapters.llamacpp import completion_body
from orchestratord_server.engines.llamacpp_process import LlamaCppProcess, LlamaCppServerConfig
from orchestratord_server.engines.models import smollm2_gguf_path
from tests.support.tiny_gguf import write_tiny_gguf

SECTION = "## Streaming overhead, {model} model (direct vs through orchestratord)"
PROMPT = "Once upon a time, in a lighthouse on a rocky island, there lived"
MODEL_REF = "bench-stream-model"
CONCURRENCY = (1, 8, 32)
CTX_PER_SLOT = 512


@dataclass
class Sample:
    """One path's measurements for one round."""

    first_token_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0


async def _direct_one(
    http: aiohttp.ClientSession, engine: str, seed: int, tokens: int, sample: Sample
) -> None:
    body = completion_body(
        CompletionRequest(prompt=PROMPT, max_tokens=tokens, seed=seed), stream=True
    )
    start = time.perf_counter()
    first = None
    count = 0
    async with http.post(f"{engine}/completion", json=body) as response:
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            frame = json.loads(line[6:])
            if frame.get("content"):
                count += 1
                if first is None:
                    first = time.perf_counter()
            if frame.get("stop"):
                break
    sample.first_token_ms.append(((first or time.perf_counter()) - start) * 1000)
    sample.tokens += count


async def _through_one(
    http: aiohttp.ClientSession, base: str, seed: int, tokens: int, sample: Sample
) -> None:
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
                    first = time.perf_counter()
            elif event in (b"end", b"error") and line.startswith(b"data: "):
                break
    sample.first_token_ms.append(((first or time.perf_counter()) - start) * 1000)
    sample.tokens += count


async def _round(
    http: aiohttp.ClientSession, target: str, direct: bool, n: int, tokens: int, seed_base: int
) -> Sample:
    sample = Sample()
    one = _direct_one if direct else _through_one
    start = time.perf_counter()
    await asyncio.gather(*(one(http, target, seed_base + i + 1, tokens, sample) for i in range(n)))
    sample.seconds = time.perf_counter() - start
    return sample


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(engine: str, base: str, rounds: int, tokens: int) -> list[dict[str, float]]:
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=0)
    rows = []
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        await _round(http, engine, True, 2, 8, 1)
        await _round(http, base, False, 2, 8, 1)
        for n in CONCURRENCY:
            direct, through = Sample(), Sample()
            rates: dict[str, list[float]] = {"direct": [], "through": []}
            for r in range(rounds):
                for is_direct, total in ((True, direct), (False, through)):
                    got = await _round(
                        http, engine if is_direct else base, is_direct, n, tokens, 1000 * r
                    )
                    total.first_token_ms += got.first_token_ms
                    total.tokens += got.tokens
                    rates["direct" if is_direct else "through"].append(got.tokens / got.seconds)
            d_rate, t_rate = statistics.median(rates["direct"]), statistics.median(rates["through"])
            rows.append(
                {
                    "n": n,
                    "direct_tps": d_rate,
                    "through_tps": t_rate,
                    "ratio": t_rate / d_rate if d_rate else float("nan"),
                    "direct_p50": _quantile(direct.first_token_ms, 0.5),
                    "direct_p99": _quantile(direct.first_token_ms, 0.99),
                    "through_p50": _quantile(through.first_token_ms, 0.5),
                    "through_p99": _quantile(through.first_token_ms, 0.99),
                }
            )
    return rows


def _config(engine: str, port: int, slots: int) -> dict[str, object]:
    return {
        "allow_cpu_pools": True,
        "server": {"port": port, "log_level": "warning"},
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


def run(model: str, rounds: int, tokens: int) -> str:
    """Measure and return the RESULTS.md section."""
    slots = max(CONCURRENCY)
    with tempfile.TemporaryDirectory() as tmp:
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
            with daemon(_config(engine.base_url, _free_port(), slots), work, pin=False) as base:
                rows = asyncio.run(_measure(engine.base_url, base, rounds, tokens))
        finally:
            asyncio.run(engine.stop())
    lines = [
        SECTION.format(model=model),
        "",
        f"Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}. Command: "
        f"`python -m bench streaming --model {model} --rounds {rounds} --tokens {tokens}`. "
        f"One llama.cpp server ({model} model, {slots} slots, 1 thread) serves both paths; "
        "each round runs N concurrent streams direct, then N through orchestratord (admission "
        "+ SSE stream), same prompt, seeds and token count; tokens/s is the median over "
        "rounds of all tokens received / round wall time; first-token latency counts from "
        "the request (for orchestratord: from POST /v1/tasks) to the first token received.",
        "",
        "| N | direct tok/s | through tok/s | ratio | TTFT p50 direct | TTFT p50 through "
        "| added p50 | TTFT p99 direct | TTFT p99 through | added p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:.0f} | {r['direct_tps']:,.0f} | {r['through_tps']:,.0f} | "
            f"{r['ratio']:.3f} | {r['direct_p50']:.1f} ms | {r['through_p50']:.1f} ms | "
            f"{r['through_p50'] - r['direct_p50']:+.1f} ms | {r['direct_p99']:.1f} ms | "
            f"{r['through_p99']:.1f} ms | {r['through_p99'] - r['direct_p99']:+.1f} ms |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """`python -m bench streaming`: measure, then update RESULTS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench streaming", description=__doc__)
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ns = parser.parse_args(argv)
    text = run(ns.model, ns.rounds, ns.tokens)
    print(text)
    if not ns.no_write:
        write_section(SECTION.format(model=ns.model), text)
    return 0
