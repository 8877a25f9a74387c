"""Run one benchmark by name: `python -m bench <name> [options]` (`python -m bench -h`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from bench import admission, core_bench, streaming

BENCHES: dict[str, Callable[[Sequence[str]], int]] = {
    "admission": admission.main,
    "core": core_bench.main,
    "streaming": streaming.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHES), help="which benchmark to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="options of that benchmark")
    ns = parser.parse_args(argv)
    return BENCHES[ns.name](ns.args)


if __name__ == "__main__":
    raise SystemExit(main())
