"""The "before" side of a same-run comparison: an older commit's daemon or core.

A bench that compares with a baseline checks the commit out with `git worktree add
--detach` (removed afterwards) and runs that tree's code with this venv's Python: a
daemon through `ORCHD_BENCH_DAEMON` (bench/admission.py), with the tree first on
`PYTHONPATH` and as working directory, and a launcher that reports which files it
imported, so a run stops rather than label the working tree's code as the baseline.
In-process benches run their measuring function in a subprocess the same way
(`tree_python`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: A command to run instead of the installed `orchestratord` (for A/B experiments on a
#: patched daemon, and for the baseline); it is given `serve --config FILE`.
DAEMON_ENV = "ORCHD_BENCH_DAEMON"
#: The commit before the speed work of issue 18: what its figures are compared with.
SPEED_BASELINE_REV = "3ec0743"

LAUNCHER = """\
import sys
import orchestrator_core
import orchestratord_server
print("bench-baseline-imports", orchestrator_core.__file__, orchestratord_server.__file__,
      file=sys.stderr, flush=True)
from orchestratord_server.cli import main
sys.exit(main())
"""
IMPORTS_MARK = "bench-baseline-imports"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "--no-optional-locks", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def working_tree() -> str:
    """The working tree's HEAD, and whether it holds changes not committed."""
    # Benches rewrite RESULTS.md as they go; only a change to the code is worth saying.
    changed = _git("status", "--porcelain", "--", ".", ":(exclude)bench/RESULTS.md")
    dirty = ", with uncommitted changes" if changed else ""
    return f"the working tree (HEAD `{_git('rev-parse', '--short', 'HEAD')}`{dirty})"


@contextlib.contextmanager
def baseline_tree(rev: str, parent: Path) -> Iterator[tuple[Path, str]]:
    """`git worktree add --detach` of `rev` under `parent`; yields (tree, short hash) and
    removes the worktree afterwards."""
    tree = parent / "baseline"
    short = _git("rev-parse", "--short", f"{rev}^{{commit}}")
    _git("worktree", "add", "--detach", str(tree), short)
    try:
        yield tree, short
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
            capture_output=True,
            check=False,
        )


def tree_python(tree: Path) -> list[str]:
    """The command prefix that runs this venv's Python on `tree`'s code: the tree first
    on PYTHONPATH and as working directory (an engine runner the daemon starts with
    `python -m` puts its working directory first on its path)."""
    return ["env", f"--chdir={tree}", f"PYTHONPATH={tree}", sys.executable]


def baseline_command(tree: Path, launcher: Path) -> str:
    """The ORCHD_BENCH_DAEMON value that runs the tree's daemon through `launcher`."""
    return shlex.join([*tree_python(tree), str(launcher)])


@contextlib.contextmanager
def daemon_command(command: str | None) -> Iterator[None]:
    """Set ORCHD_BENCH_DAEMON to `command` (None: leave it as it is) for the block."""
    if command is None:
        yield
        return
    old = os.environ.get(DAEMON_ENV)
    os.environ[DAEMON_ENV] = command
    try:
        yield
    finally:
        if old is None:
            del os.environ[DAEMON_ENV]
        else:
            os.environ[DAEMON_ENV] = old


def check_imports(log: Path, tree: Path) -> str:
    """The files the baseline daemon imported (from its log); raises unless they lie in
    `tree`."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(IMPORTS_MARK):
            files = line.split()[1:]
            if files and all(Path(f).resolve().is_relative_to(tree.resolve()) for f in files):
                return " ".join(files)
            raise RuntimeError(f"baseline daemon imported {files}, not from {tree}")
    raise RuntimeError(f"baseline daemon did not report its imports; see {log}")


@dataclass(frozen=True)
class Baseline:
    """A checked-out baseline: its tree, short hash and the daemon command that runs it."""

    tree: Path
    short: str
    command: str


@contextlib.contextmanager
def checked_out(rev: str, work: Path) -> Iterator[Baseline]:
    """`rev` checked out under `work` with a launcher beside it, for the block."""
    launcher = work / "launch_daemon.py"
    launcher.write_text(LAUNCHER)
    with baseline_tree(rev, work) as (tree, short):
        yield Baseline(tree, short, baseline_command(tree, launcher))


#: The first line `own_bench` has the baseline's Python print: the core it imported.
_IMPORTS = "bench-own-imports"


def own_bench(rev: str, args: list[str]) -> tuple[str, str]:
    """Run `python -m bench <args>` of commit `rev` on its own tree (for in-process
    benches, whose measuring code is that commit's too); its short hash and standard
    output. Raises unless it imported that tree's core."""
    with (
        tempfile.TemporaryDirectory(prefix="orchd-bench-own-") as tmp,
        baseline_tree(rev, Path(tmp)) as (tree, short),
    ):
        code = (
            "import sys, orchestrator_core, orchestratord_server; "
            f"print({_IMPORTS!r}, orchestrator_core.__file__, orchestratord_server.__file__, "
            "flush=True); "
            f"from bench.__main__ import main; sys.exit(main({args!r}))"
        )
        out = subprocess.run(
            [*tree_python(tree), "-c", code], capture_output=True, text=True, check=True
        ).stdout
        first, _, rest = out.partition("\n")
        files = first.split()[1:] if first.startswith(_IMPORTS) else []
        if not files or not all(Path(f).resolve().is_relative_to(tree.resolve()) for f in files):
            raise RuntimeError(f"the baseline's bench imported {files}, not from {tree}")
    return short, rest
