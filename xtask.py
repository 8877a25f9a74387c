"""Repository tasks: regenerate code, schema, requirement index and trace, or check them.

Run from anywhere as `python xtask.py <command>` (no install needed):

    regen-openapi  pydantic models, operation table and canonical JSON from the contracts
    regen-schema   contracts/config.schema.json from orchestratord_server.config.Config
    spec-extract   requirements/index.yaml from .specs/orchestrator-spec.md
    trace          requirements/TRACEABILITY.md (spec ID -> contracts, code, tests)
    regen          all of the above, in that order
    check          validate the contracts and fail (exit 1) if any generated file is stale
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from codegen import tasks  # noqa: E402 - needs ROOT on sys.path first

_VERBS = {"written": "wrote", "removed": "removed"}


def _print_result(result: tasks.TargetResult, check: bool) -> None:
    mark = "✔" if result.ok else "✘"
    changed = [o for o in result.outcomes if o.state != "unchanged"]
    unchanged = len(result.outcomes) - len(changed)
    parts = []
    if result.outcomes:
        parts.append(f"{unchanged} of {len(result.outcomes)} files up to date")
    if result.note and not result.errors:
        parts.append(result.note)
    print(f"{mark} {result.name:<14} {'; '.join(parts)}".rstrip())
    for outcome in changed:
        verb = _VERBS.get(outcome.state, "is " + outcome.state)
        summary = outcome.detail.splitlines()[0] if outcome.detail else ""
        print(f"    {outcome.path} {verb}{f' ({summary})' if summary else ''}")
        if check and outcome.detail:
            for line in outcome.detail.splitlines()[1:]:
                print(f"      {line}")
    for error in result.errors:
        print("    " + error.replace("\n", "\n    "))


def _run(names: Sequence[str], check: bool, root: Path) -> int:
    table = tasks.CHECKS if check else tasks.GENERATORS
    results = [tasks.run(name, table[name], root, check) for name in names]
    for result in results:
        _print_result(result, check)
    failed = [r.name for r in results if not r.ok]
    if failed and check:
        print(f"check failed: {', '.join(failed)}. Run `python xtask.py regen` and fix the rest.")
    elif failed:
        print(f"failed: {', '.join(failed)}")
    elif check:
        print("check passed")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen target(s); the exit status."""
    parser = argparse.ArgumentParser(prog="xtask.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, target in tasks.GENERATORS.items():
        commands.add_parser(name, help=(target.__doc__ or "").splitlines()[0])
    commands.add_parser("regen", help="all generators, in order")
    commands.add_parser("check", help="validate contracts; fail if anything generated is stale")
    args = parser.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8")
    if args.command == "check":
        return _run(list(tasks.CHECKS), check=True, root=ROOT)
    if args.command == "regen":
        return _run(list(tasks.GENERATORS), check=False, root=ROOT)
    return _run([args.command], check=False, root=ROOT)


if __name__ == "__main__":
    sys.exit(main())
