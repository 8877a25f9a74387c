"""Run one benchmark by name, or all of them: `python -m bench <name> [options]`.

`python -m bench all` runs every benchmark in sequence with its default options (the
streaming one twice: the tiny model, then SmolLM2 with `--rounds 2 --tokens 64`), each
rewriting its own section of bench/RESULTS.md, then records how long each took in the
"## Full run" section. Benchmarks are never part of the test suite's pass/fail.

`ORCHD_BENCH_DAEMON` runs another command in place of the installed `orchestratord`
(given `serve --config FILE`), for A/B measurements of a patched daemon.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from bench import (
    admission,
    cluster,
    core_bench,
    profile,
    queue_eta,
    scale,
    streaming,
    token_path,
)
from bench.results import conditions, write_section

BENCHES: dict[str, Callable[[Sequence[str]], int]] = {
    "admission": admission.main,
    "cluster": cluster.main,
    "core": core_bench.main,
    "eta": queue_eta.main,
    "profile": profile.main,
    "scale": scale.main,
    "streaming": streaming.main,
    "tokens": token_path.main,
}
#: What `all` runs, in order.
ALL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ()),
    ("tokens", ()),
    ("admission", ()),
    ("scale", ()),
    ("streaming", ("--model", "tiny")),
    ("streaming", ("--model", "smollm2", "--rounds", "2", "--tokens", "64")),
    ("profile", ()),
    ("cluster", ()),
    ("eta", ()),
)
FULL_RUN = "## Full run"


def run_all() -> int:
    """Every benchmark in sequence; then the durations into RESULTS.md."""
    machine = conditions()
    timings: list[tuple[str, float]] = []
    for name, args in ALL:
        start = time.monotonic()
        status = BENCHES[name](list(args))
        if status != 0:
            return status
        timings.append((" ".join(["python -m bench", name, *args]), time.monotonic() - start))
    total = sum(seconds for _, seconds in timings)
    lines = [
        FULL_RUN,
        "",
        f"{machine} Command: `python -m bench all`, {total / 60:.1f} min in all.",
        "",
        "| command | seconds |",
        "|---|---:|",
        *(f"| `{command}` | {seconds:.0f} |" for command, seconds in timings),
    ]
    write_section(FULL_RUN, "\n".join(lines) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=[*sorted(BENCHES), "all"], help="which benchmark")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="options of that benchmark")
    ns = parser.parse_args(argv)
    if ns.name == "all":
        return run_all()
    return BENCHES[ns.name](ns.args)


if __name__ == "__main__":
    raise SystemExit(main())
