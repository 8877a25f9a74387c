"""Where the daemon's CPU goes under the admission and the streaming load (py-spy).

py-spy samples the running daemon from outside (`py-spy record --nonblocking --format
raw`: no pause, no code change, 250 samples per second) while one of two loads runs:

- `admission`: the set-up of `bench.admission` (daemon pinned to core 0, one slot held by
  the slow stand-in engine, every task stays queued), `wrk -c64` on core 1;
- `streaming`: the set-up of `bench.streaming` (the tiny model on a real llama.cpp
  server, 32 slots), rounds of 32 concurrent streams of 128 tokens through orchestratord.

The collapsed stacks are summarised three ways: the share of samples whose innermost
frame is in each package (self time by package), the functions most often innermost
(self time), and the project functions most often on the stack (inclusive time; the
entry point is left out: tasks resumed by the event loop show no frames above their own
coroutine, so its share says nothing). Only
samples of a busy thread count (py-spy skips idle ones), so the shares are of the CPU
time the daemon used, and `busy` is that time over the wall time sampled.

Run: `python -m bench profile [--load admission|streaming|both] [--seconds S]` (needs
`py-spy`, `wrk` and `taskset`; py-spy must be allowed to read the daemon's memory).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp

from bench import admission, streaming
from bench.results import conditions, write_section
from orchestratord_server.engines.llamacpp_process import LlamaCppProcess, LlamaCppServerConfig
from tests.support.tiny_gguf import write_tiny_gguf

SECTION = "## Profile (py-spy samples of the daemon)"
RATE = 250
TOP = 12
#: Package of a frame, from the file py-spy names (first match wins).
PACKAGES = (
    ("orchestrator_core", "orchestrator_core/"),
    ("orchestratord_server", "orchestratord_server/"),
    ("pydantic", "pydantic"),
    ("connexion", "connexion/"),
    ("starlette", "starlette/"),
    ("uvicorn", "uvicorn/"),
    ("aiohttp", "aiohttp/"),
    ("prometheus_client", "prometheus_client/"),
    ("anyio", "anyio/"),
    ("json", "json/"),
    ("logging", "logging/"),
    ("asyncio", "asyncio/"),
    ("uuid", "uuid.py"),
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")


def _package(file: str) -> str:
    for name, marker in PACKAGES:
        if marker in file:
            return name
    return "other: " + file.rsplit("/", 1)[-1]


def _py_spy() -> str:
    """py-spy on PATH, else the one installed beside this interpreter."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("bench profile needs `py-spy` (pip install py-spy)")
    return found


@contextlib.contextmanager
def sampled(pid: int, out: Path, window: list[float]) -> Iterator[None]:
    """py-spy records `pid` while the block runs (on core 1, away from the daemon); the
    seconds it sampled are appended to `window`."""
    command = ["taskset", "-c", "1", _py_spy(), "record", "--pid", str(pid), "--nonblocking"]
    command += ["--rate", str(RATE), "--format", "raw", "--nolineno", "--output", str(out)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1)
    start = time.perf_counter()
    try:
        yield
    finally:
        window.append(time.perf_counter() - start + 1)
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=60)
        if not out.exists():
            raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")


def summarise(raw: Path, seconds: float) -> dict[str, object]:
    """Self time by package and function, inclusive time of project functions."""
    packages: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [m.groupdict() for f in stack.split(";") if (m := _FRAME.match(f))]
        if not frames:
            continue
        total += count
        leaf = frames[-1]
        packages[_package(leaf["file"])] += count
        leaves[f"{leaf['func']} ({leaf['file']})"] += count
        seen = {
            f"{f['func']} ({f['file']})"
            for f in frames
            if "orchestrat" in f["file"] and f["func"] != "<module>" and "cli.py" not in f["file"]
        }
        for name in seen:
            inclusive[name] += count
    return {
        "total": total,
        "busy": total / (RATE * seconds),
        "packages": packages.most_common(TOP),
        "leaves": leaves.most_common(TOP),
        "inclusive": inclusive.most_common(TOP),
    }


def profile_admission(seconds: int, work: Path) -> dict[str, object]:
    """Sample the daemon under `wrk -c64` admissions."""
    script = work / "admit.lua"
    script.write_text(admission.WRK_SCRIPT)
    with admission.slow_engine() as engine:
        config = admission._config(engine, admission._free_port(), 10_000_000)
        with admission.daemon_process(config, work) as running:
            admission._wrk(running.base, script, 3, 64)
            raw = work / "admission.raw"
            window: list[float] = []
            with sampled(running.pid, raw, window):
                result = admission._wrk(running.base, script, seconds, 64)
    summary = summarise(raw, window[0])
    summary["load"] = f"{result['rps']:,.0f} req/s, p99 {result['p99']:.1f} ms (wrk -c64)"
    return summary


async def _stream_load(base: str, seconds: float) -> tuple[int, float]:
    one = functools.partial(streaming._through_one, base)
    route = streaming.Route(streaming.OURS, streaming.DIRECT, one)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tokens = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            await streaming._round(http, route, 32, 128, 0)
            tokens += 32 * 128
        return tokens, time.perf_counter() - start


def profile_streaming(seconds: int, work: Path) -> dict[str, object]:
    """Sample the daemon while 32 streams at a time run through it (tiny model)."""
    slots = 32
    engine = LlamaCppProcess(
        LlamaCppServerConfig(
            model_path=write_tiny_gguf(work / "tiny.gguf"),
            n_ctx=streaming.CTX_PER_SLOT * slots,
            n_parallel=slots,
            threads=1,
        )
    )
    asyncio.run(engine.start())
    try:
        config = streaming._config(engine.base_url, admission._free_port(), slots)
        with admission.daemon_process(config, work, pin=False) as running:
            asyncio.run(_stream_load(running.base, 3))
            raw = work / "streaming.raw"
            window: list[float] = []
            with sampled(running.pid, raw, window):
                tokens, wall = asyncio.run(_stream_load(running.base, seconds))
    finally:
        asyncio.run(engine.stop())
    summary = summarise(raw, window[0])
    summary["load"] = f"{tokens / wall:,.0f} tokens/s through orchestratord (32 streams)"
    return summary


def _render(results: dict[str, dict[str, object]], seconds: int, machine: str) -> str:
    lines = [
        SECTION,
        "",
        f"{machine} Command: `python -m bench profile --seconds {seconds}`. py-spy "
        f"{_py_spy_version()} samples the daemon at {RATE} Hz without pausing it; shares "
        "are of the samples in which a daemon thread was busy. Self = innermost frame; "
        "inclusive = the function is anywhere on the stack.",
    ]
    for load, summary in results.items():
        total = int(summary["total"])  # type: ignore[call-overload]
        lines += [
            "",
            f"### {load}: {summary['load']}; daemon busy {summary['busy']:.0%} of wall time, "
            f"{total:,} busy samples",
            "",
            "| self time by package | share |",
            "|---|---:|",
        ]
        for name, count in summary["packages"]:  # type: ignore[attr-defined]
            lines.append(f"| {name} | {count / total:.1%} |")
        lines += ["", "| self time by function | share |", "|---|---:|"]
        for name, count in summary["leaves"]:  # type: ignore[attr-defined]
            lines.append(f"| `{name}` | {count / total:.1%} |")
        lines += ["", "| project function, inclusive | share |", "|---|---:|"]
        for name, count in summary["inclusive"]:  # type: ignore[attr-defined]
            lines.append(f"| `{name}` | {count / total:.1%} |")
    return "\n".join(lines) + "\n"


def _py_spy_version() -> str:
    out = subprocess.run([_py_spy(), "--version"], capture_output=True, text=True).stdout
    return out.split()[-1] if out else "unknown"


def run(load: str, seconds: int, keep: Path | None) -> str:
    """Profile the chosen loads (copying the raw stacks into `keep`, if given); return
    the RESULTS.md section."""
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench profile needs `{tool}` on PATH")
    machine = conditions()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if load in ("admission", "both"):
            results["admission"] = profile_admission(seconds, Path(tmp))
        if load in ("streaming", "both"):
            results["streaming"] = profile_streaming(seconds, Path(tmp))
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for raw in Path(tmp).glob("*.raw"):
                shutil.copy(raw, keep / raw.name)
    return _render(results, seconds, machine)


def main(argv: Sequence[str]) -> int:
    """`python -m bench profile`: sample, then update RESULTS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench profile", description=__doc__)
    parser.add_argument("--load", choices=("admission", "streaming", "both"), default="both")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="copy the raw collapsed stacks here")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ns = parser.parse_args(argv)
    text = run(ns.load, ns.seconds, ns.keep)
    print(text)
    if not ns.no_write:
        write_section(SECTION, text)
    return 0
