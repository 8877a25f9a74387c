"""Generate-or-check, shared by every target: compare rendered text with disk, then act.

In write mode a differing file is written; in check mode it is reported as stale (or
missing) with a short unified-diff summary. Files in a directory that codegen owns but no
longer produces are removed (write) or reported (check).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

State = Literal["unchanged", "written", "stale", "missing", "unexpected", "removed"]
FAILING_STATES: frozenset[State] = frozenset({"stale", "missing", "unexpected"})
DIFF_LINES = 24


@dataclass(frozen=True)
class Output:
    """A file a target produces: repo-relative path and full text."""

    path: str
    text: str


@dataclass(frozen=True)
class Outcome:
    """What happened to (or would happen to) one output file."""

    path: str
    state: State
    detail: str = ""

    @property
    def failed(self) -> bool:
        """True when check mode must fail because of this file."""
        return self.state in FAILING_STATES


def diff_summary(old: str, new: str, path: str, max_lines: int = DIFF_LINES) -> str:
    """`+A -R lines` and the first `max_lines` lines of the unified diff on-disk -> fresh."""
    diff = list(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{path} (on disk)",
            tofile=f"{path} (generated)",
            n=1,
        )
    )
    added = sum(1 for line in diff if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in diff if line.startswith("-") and not line.startswith("---"))
    shown = "".join(diff[:max_lines]).rstrip("\n")
    more = f"\n... {len(diff) - max_lines} more diff lines" if len(diff) > max_lines else ""
    return f"+{added} -{removed} lines\n{shown}{more}"


def _read(path: Path) -> str | None:
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8")


def apply(
    root: Path, outputs: Iterable[Output], *, check: bool, owned_dir: str | None = None
) -> list[Outcome]:
    """Write (or, with `check`, compare) every output; sweep `owned_dir` of leftovers."""
    outcomes: list[Outcome] = []
    produced: set[str] = set()
    for output in outputs:
        produced.add(output.path)
        target = root / output.path
        current = _read(target)
        if current == output.text:
            outcomes.append(Outcome(output.path, "unchanged"))
        elif check:
            state: State = "missing" if current is None else "stale"
            detail = "" if current is None else diff_summary(current, output.text, output.path)
            outcomes.append(Outcome(output.path, state, detail))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("w", encoding="utf-8", newline="\n") as handle:
                handle.write(output.text)
            outcomes.append(Outcome(output.path, "written"))
    if owned_dir is not None:
        outcomes += _sweep(root, owned_dir, produced, check=check)
    return outcomes


def _sweep(root: Path, owned_dir: str, produced: set[str], *, check: bool) -> list[Outcome]:
    directory = root / owned_dir
    if not directory.is_dir():
        return []
    outcomes: list[Outcome] = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or "__pycache__" in path.parts or rel in produced:
            continue
        if check:
            outcomes.append(Outcome(rel, "unexpected", "not produced by codegen"))
        else:
            path.unlink()
            outcomes.append(Outcome(rel, "removed"))
    return outcomes
