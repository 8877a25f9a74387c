"""Queue ETA accuracy: the 202's `predicted_start_ms` against when the task really started.

When `POST /v1/tasks` admits a task its ticket says how many milliseconds from now the
daemon expects the task to start decoding (`predicted_start_ms`, also `X-Queue-ETA-Ms`).
This benchmark checks that figure on a real engine: the embedded default's pool (SmolLM2-
135M on a llama.cpp server the daemon launches, 2 slots, the default log level), except
that the queue holds 256 tasks so a burst of 96 fits.

Each daemon gets a warm-up of 4 tasks, then a burst of 24 tasks submitted at once, and
when all 24 have ended a burst of 96. Every task has a fresh task_id and session_id,
a priority (about 1 in 3 `batch`, the rest `interactive`), a `max_tokens` from
(16, 32, 48, 96, 128) and a seed, all drawn from a seeded RNG, and a prompt that makes
SmolLM2 write on until `max_tokens` (the mean share of it produced is reported). Its
stream is opened as soon as the 202 is in. Per task: actual wait = arrival of its
`started` event - arrival of its 202; error = predicted - actual. Tasks that waited at
least 250 ms are judged by |error| / actual;
those that started at once (below 250 ms) by their absolute error alone. The daemon's
own `queue_time_ms` (in `started`, or the last `metrics`) is kept as a cross-check that
leaves out the client's side.

Re-read: a client that asks again 1 s after the burst is in. Once every task of a burst
has its 202 the bench waits REREAD_AFTER_S, then reads `GET /v1/tasks/{id}` for every
task of the burst at once; for each task still `queued` it keeps the response's arrival
(`reread_at`) and its `predicted_start_ms` (ms from then). remaining = arrival of
`started` - `reread_at`; tasks with remaining of at least 250 ms are judged by
|predicted - remaining| / remaining. A daemon without the route (the baseline answers
404 or 405) gets no re-read figures.

Before and after in the same run: the "before" daemon is the code at `--baseline-rev`
(checked out with `git worktree add --detach`, removed afterwards) run with this venv's
Python, `PYTHONPATH` and working directory set to that tree, through `ORCHD_BENCH_DAEMON`
(bench/admission.py); it reports which files it imported, and the run stops unless they
are the tree's. The "after" daemon is the working tree (the installed `orchestratord`,
or `ORCHD_BENCH_DAEMON` when set). Daemons run one at a time (never two at once), a fresh
one per round and side, the order alternating each round; both sides get the same tasks
in a round. Samples are pooled over the rounds per side.

Goal: median |error| ≤ 20 % of the actual wait, p90 ≤ 40 %, over both bursts.

Run: `python -m bench eta [--rounds R] [--baseline-rev REV] [--seed S] [--json PATH]
[--no-write]`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.admission import KEY, _free_port, daemon_process
from bench.baseline import (
    DAEMON_ENV,
    LAUNCHER,
    baseline_command,
    baseline_tree,
    check_imports,
    daemon_command,
    working_tree,
)
from bench.results import conditions, write_section

SECTION = "## Queue ETA accuracy (predicted vs actual start)"
BASELINE_REV = "e8173c5"
MODEL_REF = "SmolLM2-135M-Instruct-Q4_1"  # the embedded default's model (EMBEDDED_MODEL_REF)
CTX = 2048
SLOTS = 2
CAPACITY = 256
#: The instruction alone makes SmolLM2-135M-Instruct end at once (0 tokens, as a raw
#: completion); with the opening of the story after it, it writes on to `max_tokens`.
PROMPT = "Write a long story about a lighthouse keeper.\n\nOnce upon a time, on a rocky island,"
MAX_TOKENS = (16, 32, 48, 96, 128)
BATCH_SHARE = 1 / 3
WARMUP = 4
BURSTS = (24, 96)
#: The re-read is sent this long after the last 202 of a burst.
REREAD_AFTER_S = 1.0
#: A task whose actual wait is below this started at once: judged by absolute error.
WAITED_MS = 250.0
GOAL_MEDIAN = 0.20
GOAL_P90 = 0.40
HEADERS = {"Authorization": f"Bearer {KEY}"}
BEFORE = "before"
AFTER = "after"
#: Written next to the daemon's config and run in place of `orchestratord`: it says on
#: standard error (the daemon's log) which files the core and the server came from.


@dataclass(frozen=True)
class Spec:
    """What one task asks for (the same for both daemons of a round)."""

    priority: str
    max_tokens: int
    seed: int


@dataclass
class Sample:
    """One task as the client saw it; times in seconds on this process's clock."""

    side: str
    round: int
    burst: int
    task_id: str
    priority: str
    max_tokens: int
    seed: int
    t_sent: float
    t_202: float
    queue_position: int
    predicted_start_ms: int
    eta_header_ms: int | None
    t_started: float | None = None
    queue_time_ms: int | None = None
    tokens_out: int = 0
    outcome: str = "none"
    #: HTTP status of the re-read (`GET /v1/tasks/{id}`); None when none was sent.
    reread_status: int | None = None
    #: Arrival of the re-read's 200; its `state`; and, if queued, its position and
    #: `predicted_start_ms` (ms from `reread_at`).
    reread_at: float | None = None
    reread_state: str | None = None
    reread_queue_position: int | None = None
    reread_predicted_ms: int | None = None

    @property
    def actual_ms(self) -> float | None:
        """Arrival of `started` minus arrival of the 202, in ms."""
        return None if self.t_started is None else (self.t_started - self.t_202) * 1000

    @property
    def reread_actual_ms(self) -> float | None:
        """For a task queued at its re-read: arrival of `started` minus the re-read's, in ms."""
        if self.t_started is None or self.reread_at is None or self.reread_predicted_ms is None:
            return None
        return (self.t_started - self.reread_at) * 1000


class Admissions:
    """A burst's admitted samples; `all_in` is set once every task of it has its 202."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.samples: list[Sample] = []
        self.all_in = asyncio.Event()

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)
        if len(self.samples) >= self.size:
            self.all_in.set()


def _config(port: int) -> dict[str, object]:
    """The embedded default (orchestratord_server.config.embedded_default) with a port,
    an API key and a queue of CAPACITY."""
    return {
        "allow_cpu_pools": True,
        "server": {"port": port},
        "auth": {"api_keys": [KEY]},
        "pools": [
            {
                "id": "smollm2-cpu",
                "engine": "llamacpp",
                "model": MODEL_REF,
                "ctx": CTX,
                "device_kind": "cpu",
                "devices": [0],
                "queue": {"capacity": CAPACITY, "full_policy": "reject"},
                "timeouts": {"wall_ms": 120_000, "idle_ms": 10_000},
                "replicas": [{"id": "local-0", "launch": {"slots": SLOTS, "ctx_per_slot": CTX}}],
            }
        ],
    }


def specs(rng: random.Random, n: int) -> list[Spec]:
    """N tasks: priority, max_tokens and seed from `rng`."""
    return [
        Spec(
            "batch" if rng.random() < BATCH_SHARE else "interactive",
            rng.choice(MAX_TOKENS),
            rng.randrange(1, 2**31),
        )
        for _ in range(n)
    ]


def _body(spec: Spec) -> dict[str, Any]:
    return {
        "task_id": str(uuid.uuid4()),
        "session_id": str(uuid.uuid4()),
        "workload": "completion",
        "model_ref": MODEL_REF,
        "engine": "llamacpp",
        "ctx": CTX,
        "priority": spec.priority,
        "prompt": PROMPT,
        "max_tokens": spec.max_tokens,
        "deadline_ms": 900_000,
        "seed": spec.seed,
    }


async def _one(
    http: aiohttp.ClientSession,
    base: str,
    spec: Spec,
    side: str,
    round_: int,
    burst: int,
    admissions: Admissions | None = None,
) -> Sample:
    """Submit one task, open its stream at once, read it to the end; the admitted sample
    goes to `admissions` (if any) as soon as its 202 is in."""
    body = _body(spec)
    t_sent = time.perf_counter()
    async with http.post(f"{base}/v1/tasks", json=body, headers=HEADERS) as admitted:
        if admitted.status != 202:
            raise RuntimeError(f"admission failed: {admitted.status} {await admitted.text()}")
        ticket = await admitted.json()
        header = admitted.headers.get("X-Queue-ETA-Ms")
    sample = Sample(
        side=side,
        round=round_,
        burst=burst,
        task_id=body["task_id"],
        priority=spec.priority,
        max_tokens=spec.max_tokens,
        seed=spec.seed,
        t_sent=t_sent,
        t_202=time.perf_counter(),
        queue_position=int(ticket["queue_position"]),
        predicted_start_ms=int(ticket["predicted_start_ms"]),
        eta_header_ms=int(header) if header is not None else None,
    )
    if admissions is not None:
        admissions.add(sample)
    url = f"{base}/v1/tasks/{body['task_id']}/stream"
    async with http.get(url, headers=HEADERS) as response:
        event = ""
        async for raw in response.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and _on_event(sample, event, line[6:]):
                break
    return sample


def _on_event(sample: Sample, event: str, data: str) -> bool:
    """Record one event; true once it was the terminal one."""
    if event == "started":
        sample.t_started = time.perf_counter()
    if event not in ("started", "metrics", "end", "error"):
        return False
    fields = json.loads(data)
    if sample.queue_time_ms is None and fields.get("queue_time_ms") is not None:
        sample.queue_time_ms = int(fields["queue_time_ms"])
    if event == "end":
        sample.tokens_out = int(fields.get("tokens_out", 0))
        sample.outcome = str(fields.get("finish_reason", "end"))
    elif event == "error":
        sample.outcome = f"error {fields.get('code')}"
    return event in ("end", "error")


async def _reread_one(http: aiohttp.ClientSession, base: str, sample: Sample) -> None:
    """`GET /v1/tasks/{id}` once; record what it says on `sample`."""
    async with http.get(f"{base}/v1/tasks/{sample.task_id}", headers=HEADERS) as response:
        arrived = time.perf_counter()
        sample.reread_status = response.status
        if response.status != 200:
            return
        status = await response.json()
    sample.reread_at = arrived
    sample.reread_state = str(status["state"])
    if sample.reread_state == "queued":
        sample.reread_queue_position = int(status["queue_position"])
        sample.reread_predicted_ms = int(status["predicted_start_ms"])


async def _reread(http: aiohttp.ClientSession, base: str, admissions: Admissions) -> None:
    """Once the whole burst is admitted, wait REREAD_AFTER_S and re-read every task of it
    at once."""
    await admissions.all_in.wait()
    await asyncio.sleep(REREAD_AFTER_S)
    await asyncio.gather(*(_reread_one(http, base, s) for s in admissions.samples))


async def _burst(
    http: aiohttp.ClientSession, base: str, side: str, round_: int, burst: list[Spec]
) -> list[Sample]:
    """One burst submitted at once, each task read to its end, with the re-read beside."""
    admissions = Admissions(len(burst))
    reread = asyncio.create_task(_reread(http, base, admissions))
    try:
        samples = await asyncio.gather(
            *(_one(http, base, s, side, round_, len(burst), admissions) for s in burst)
        )
        await reread
    finally:
        reread.cancel()
    return list(samples)


async def _scenario(base: str, side: str, round_: int, bursts: list[list[Spec]]) -> list[Sample]:
    """Warm-up, then each burst at once, the next when all of it has ended."""
    timeout = aiohttp.ClientTimeout(total=1800)
    connector = aiohttp.TCPConnector(limit=0)
    samples: list[Sample] = []
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        warm = [Spec("interactive", 32, 1000 + i) for i in range(WARMUP)]
        await asyncio.gather(*(_one(http, base, s, side, round_, 0) for s in warm))
        for burst in bursts:
            samples += await _burst(http, base, side, round_, burst)
    return samples


def run_side(
    side: str, round_: int, bursts: list[list[Spec]], work: Path, tree: Path | None
) -> tuple[list[Sample], float, str | None]:
    """One fresh daemon through the scenario: (samples, seconds, its imports). With a
    `tree` the daemon is that tree's (through ORCHD_BENCH_DAEMON) and its imports are
    checked; without, it is the working tree's."""
    workdir = work / f"round{round_}-{side}"
    workdir.mkdir()
    command = None if tree is None else baseline_command(tree, work / "launch_daemon.py")
    start = time.monotonic()
    imports = None
    with (
        daemon_command(command),
        daemon_process(_config(_free_port()), workdir, pin=False) as running,
    ):
        if tree is not None:
            imports = check_imports(workdir / "daemon.log", tree)
        samples = asyncio.run(_scenario(running.base, side, round_, bursts))
    return samples, time.monotonic() - start, imports


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Summary:
    """Accuracy figures of a set of started tasks."""

    tasks: int
    waited: int
    rel_median: float | None
    rel_p90: float | None
    ratio_median: float | None
    abs_median: float | None
    abs_p90: float | None
    daemon_rel_median: float | None
    at_once: int
    at_once_abs_median: float | None


def summarize(samples: Iterable[Sample]) -> Summary:
    """Relative error over the tasks that waited, absolute error over those that did not."""
    started = [s for s in samples if s.actual_ms is not None]
    waited = [s for s in started if (s.actual_ms or 0.0) >= WAITED_MS]
    at_once = [s for s in started if (s.actual_ms or 0.0) < WAITED_MS]
    rel = [abs(s.predicted_start_ms - (s.actual_ms or 0.0)) / (s.actual_ms or 1.0) for s in waited]
    ratio = [s.predicted_start_ms / (s.actual_ms or 1.0) for s in waited]
    err = [abs(s.predicted_start_ms - (s.actual_ms or 0.0)) for s in waited]
    daemon_rel = [
        abs(s.predicted_start_ms - s.queue_time_ms) / s.queue_time_ms
        for s in waited
        if s.queue_time_ms
    ]
    at_once_err = [abs(s.predicted_start_ms - (s.actual_ms or 0.0)) for s in at_once]
    return Summary(
        tasks=len(started),
        waited=len(waited),
        rel_median=statistics.median(rel) if rel else None,
        rel_p90=_quantile(rel, 0.9) if rel else None,
        ratio_median=statistics.median(ratio) if ratio else None,
        abs_median=statistics.median(err) if err else None,
        abs_p90=_quantile(err, 0.9) if err else None,
        daemon_rel_median=statistics.median(daemon_rel) if daemon_rel else None,
        at_once=len(at_once),
        at_once_abs_median=statistics.median(at_once_err) if at_once_err else None,
    )


@dataclass(frozen=True)
class RereadSummary:
    """Accuracy of the re-read estimate over a set of tasks."""

    queued: int
    judged: int
    rel_median: float | None
    rel_p90: float | None
    ratio_median: float | None


def summarize_reread(samples: Iterable[Sample]) -> RereadSummary:
    """Relative error of the re-read `predicted_start_ms` over the tasks still queued at
    the re-read that then waited at least WAITED_MS more."""
    queued = [s for s in samples if s.reread_state == "queued"]
    judged = [
        (float(s.reread_predicted_ms or 0), remaining)
        for s in queued
        if (remaining := s.reread_actual_ms) is not None and remaining >= WAITED_MS
    ]
    rel = [abs(predicted - actual) / actual for predicted, actual in judged]
    ratio = [predicted / actual for predicted, actual in judged]
    return RereadSummary(
        queued=len(queued),
        judged=len(judged),
        rel_median=statistics.median(rel) if rel else None,
        rel_p90=_quantile(rel, 0.9) if rel else None,
        ratio_median=statistics.median(ratio) if ratio else None,
    )


def has_reread(samples: Iterable[Sample], side: str) -> bool:
    """Whether `side`'s daemon answered the re-read (has `GET /v1/tasks/{id}`)."""
    return any(s.side == side and s.reread_status == 200 for s in samples)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _meets(summary: Summary) -> bool:
    return (
        summary.rel_median is not None
        and summary.rel_p90 is not None
        and summary.rel_median <= GOAL_MEDIAN
        and summary.rel_p90 <= GOAL_P90
    )


def render(
    samples: list[Sample],
    *,
    machine: str,
    rounds: int,
    seed: int,
    baseline: str,
    seconds: dict[str, list[float]],
    imports: str,
    after: str,
) -> str:
    """The RESULTS.md section; `after` says what the after side ran."""
    lines = [
        SECTION,
        "",
        f"{machine} Command: `python -m bench eta --rounds {rounds} --baseline-rev {baseline}"
        f" --seed {seed}`. Set-up: the embedded default's pool (SmolLM2-135M-Instruct Q4_1 "
        f"on a llama.cpp server the daemon launches, {SLOTS} slots of {CTX} tokens, the "
        "default thread count and log level) with its queue raised to "
        f"{CAPACITY} (reject when full). Per daemon: a warm-up of {WARMUP} tasks, then a "
        f"burst of {BURSTS[0]} tasks submitted at once and, when they have all ended, a "
        f"burst of {BURSTS[1]}; about 1 in 3 `batch`, the rest `interactive`; "
        f"`max_tokens` drawn from {', '.join(map(str, MAX_TOKENS))}; a seed per task, all "
        f"from `random.Random({seed} + round)`; prompt {json.dumps(PROMPT)}. Each stream is opened "
        "as soon as its 202 is in. actual wait = arrival of `started` - arrival of the 202; "
        "error = `predicted_start_ms` - actual. Relative figures cover tasks that waited "
        f"≥ {WAITED_MS:.0f} ms; tasks that started at once are counted apart with their "
        "median absolute error. `daemon` = median |predicted - `queue_time_ms`| / "
        "`queue_time_ms` (the daemon's own clock, without the client's side). "
        f"{BEFORE} = commit `{baseline}` (git worktree, its own code on PYTHONPATH; imports "
        f"checked: {imports}); {AFTER} = {after}. {rounds} round(s), each a fresh "
        f"daemon per side doing the whole scenario, sides alternating; samples pooled "
        f"over rounds. Seconds per daemon run: "
        + "; ".join(f"{side} {', '.join(f'{x:.0f}' for x in xs)}" for side, xs in seconds.items())
        + ".",
        "",
        "| burst | class | daemon | tasks | waited | median \\|err\\|/actual | p90 "
        "\\|err\\|/actual | median pred/actual | median \\|err\\| ms | p90 \\|err\\| ms "
        "| daemon | at once | at once median \\|err\\| ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: list[tuple[str, list[int]]] = [(str(b), [b]) for b in BURSTS]
    groups.append(("both", list(BURSTS)))
    for label, bursts in groups:
        for cls in ("all", "interactive", "batch"):
            for side in (BEFORE, AFTER):
                m = summarize(_cell(samples, side, bursts, cls))
                lines.append(
                    f"| {label} | {cls} | {side} | {m.tasks} | {m.waited} | "
                    f"{_pct(m.rel_median)} | {_pct(m.rel_p90)} | "
                    f"{_num(m.ratio_median, '{:.2f}')} | {_num(m.abs_median)} | "
                    f"{_num(m.abs_p90)} | {_pct(m.daemon_rel_median)} | {m.at_once} | "
                    f"{_num(m.at_once_abs_median)} |"
                )
    lines += ["", *_reread_table(samples, groups), "", *_footer(samples)]
    return "\n".join(lines) + "\n"


def _cell(samples: list[Sample], side: str, bursts: list[int], cls: str) -> list[Sample]:
    """The samples of one table row: a side, some bursts, a class ("all" or a priority)."""
    return [
        s for s in samples if s.side == side and s.burst in bursts and cls in ("all", s.priority)
    ]


def _reread_table(samples: list[Sample], groups: list[tuple[str, list[int]]]) -> list[str]:
    """The re-read figures, for the sides whose daemon has `GET /v1/tasks/{id}`."""
    sides = [side for side in (BEFORE, AFTER) if has_reread(samples, side)]
    missing = []
    for side in (BEFORE, AFTER):
        if side not in sides:
            statuses = sorted(
                {s.reread_status for s in samples if s.side == side and s.reread_status}
            )
            answered = "/".join(str(x) for x in statuses) or "nothing"
            missing.append(f"{side} has no `GET /v1/tasks/{{id}}` (answered {answered})")
    lines = [
        "Re-read, a client that asks again 1 s after the burst is in: once every task of "
        f"a burst has its 202 the bench waits {REREAD_AFTER_S:g} s, then reads "
        "`GET /v1/tasks/{id}` for all of them at once; for each task still `queued`, "
        "remaining = arrival of `started` - arrival of that response, error = its "
        "`predicted_start_ms` - remaining, judged by \\|err\\|/remaining over tasks with "
        f"remaining ≥ {WAITED_MS:.0f} ms"
        + (f" ({'; '.join(missing)}: no re-read figures)." if missing else "."),
    ]
    if not sides:
        return lines
    lines += [
        "",
        "| burst | class | daemon | queued at re-read | judged | median \\|err\\|/remaining "
        "| p90 \\|err\\|/remaining | median pred/remaining |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, bursts in groups:
        for cls in ("all", "interactive", "batch"):
            for side in sides:
                m = summarize_reread(_cell(samples, side, bursts, cls))
                lines.append(
                    f"| {label} | {cls} | {side} | {m.queued} | {m.judged} | "
                    f"{_pct(m.rel_median)} | {_pct(m.rel_p90)} | "
                    f"{_num(m.ratio_median, '{:.2f}')} |"
                )
    return lines


def _footer(samples: list[Sample]) -> list[str]:
    """Goal verdict per side, and how far the tasks ran."""
    out = []
    for side in (BEFORE, AFTER):
        mine = [s for s in samples if s.side == side]
        overall = summarize(mine)
        ended = [s for s in mine if s.outcome in ("length", "stop")]
        fraction = statistics.mean(s.tokens_out / s.max_tokens for s in ended) if ended else 0.0
        failed = len(mine) - len(ended)
        verdict = "**met**" if _meets(overall) else "**not met**"
        out.append(
            f"- {side}: goal (median \\|err\\| ≤ {_pct(GOAL_MEDIAN)} of the actual wait, p90 ≤ "
            f"{_pct(GOAL_P90)}, both bursts) {verdict}: median {_pct(overall.rel_median)}, "
            f"p90 {_pct(overall.rel_p90)} over {overall.waited} tasks that waited. "
            f"Tasks produced {fraction:.0%} of their `max_tokens` on average "
            f"({len(ended)} ended normally, {failed} did not)."
        )
    return out


def run(rounds: int, rev: str, seed: int) -> tuple[str, list[Sample]]:
    """Every round on both sides; returns the section and the raw samples."""
    machine = conditions()
    command = os.environ.get(DAEMON_ENV)
    after = working_tree() if not command else f"`{command}` ({DAEMON_ENV})"
    samples: list[Sample] = []
    seconds: dict[str, list[float]] = {BEFORE: [], AFTER: []}
    imports = ""
    with tempfile.TemporaryDirectory(prefix="orchd-bench-eta-") as tmp:
        work = Path(tmp)
        launcher = work / "launch_daemon.py"
        launcher.write_text(LAUNCHER)
        with baseline_tree(rev, work) as (tree, short):
            trees = {BEFORE: tree, AFTER: None}
            for round_ in range(rounds):
                rng = random.Random(seed + round_)
                bursts = [specs(rng, n) for n in BURSTS]
                order = (BEFORE, AFTER) if round_ % 2 == 0 else (AFTER, BEFORE)
                for side in order:
                    got, took, seen = run_side(side, round_, bursts, work, trees[side])
                    samples += got
                    seconds[side].append(took)
                    if seen:
                        imports = seen.replace(str(tree), "<worktree>")
                    reread = summarize_reread(got)
                    print(
                        f"round {round_ + 1}/{rounds} {side}: {took:.0f} s, "
                        f"{summarize(got).rel_median or 0:.0%} median |err|/actual; re-read "
                        + (
                            f"{_pct(reread.rel_median)} median over {reread.judged}"
                            if has_reread(got, side)
                            else "not available"
                        ),
                        file=sys.stderr,
                        flush=True,
                    )
    text = render(
        samples,
        machine=machine,
        rounds=rounds,
        seed=seed,
        baseline=short,
        seconds=seconds,
        imports=imports,
        after=after,
    )
    return text, samples


def main(argv: Sequence[str]) -> int:
    """`python -m bench eta`: measure both daemons, then update RESULTS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench eta", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline-rev", default=BASELINE_REV, help="the 'before' commit")
    parser.add_argument("--seed", type=int, default=20261201, help="seed of the task mix")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ns = parser.parse_args(argv)
    text, samples = run(ns.rounds, ns.baseline_rev, ns.seed)
    print(text)
    if ns.json is not None:
        rows = [
            dataclasses.asdict(s)
            | {"actual_ms": s.actual_ms, "reread_actual_ms": s.reread_actual_ms}
            for s in samples
        ]
        ns.json.write_text(json.dumps(rows, indent=1) + "\n")
    if not ns.no_write:
        write_section(SECTION, text)
    return 0
