"""Format generated Python with `ruff format`, using the repository's own ruff config.

The formatter runs on the text through stdin, named as the file it will become, so that
ruff applies the same configuration it would apply to that file on disk and a later
`ruff format --check` of the repository leaves generated files alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from codegen.errors import CodegenError


def ruff_format(source: str, root: Path, rel_path: str) -> str:
    """`source` formatted as ruff would format `root/rel_path`."""
    cmd = [
        sys.executable,
        "-m",
        "ruff",
        "format",
        "--stdin-filename",
        str(root / rel_path),
        "-",
    ]
    try:
        proc = subprocess.run(
            cmd, input=source, capture_output=True, text=True, cwd=root, check=False
        )
    except OSError as exc:
        raise CodegenError(f"cannot run ruff to format {rel_path}: {exc}") from exc
    if proc.returncode != 0:
        raise CodegenError(f"ruff format failed on generated {rel_path}: {proc.stderr.strip()}")
    return proc.stdout
