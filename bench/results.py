"""bench/RESULTS.md: each benchmark owns one `## ` section and rewrites only that one."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def conditions() -> str:
    """Machine, Python, date and load average, as one sentence for a section's header."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    today = datetime.date.today().isoformat()
    return (
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{sys.version.split()[0]}; run {today}, load average before it {load}."
    )


def write_section(heading: str, text: str) -> None:
    """Replace (or append) the section starting with `heading`, keeping the others."""
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmarks\n\n"
    start = old.find(heading)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(heading))
        rest = old[end + 1 :] if end >= 0 else ""
        new = old[:start] + text.rstrip("\n") + "\n\n" + rest
    RESULTS.write_text(new.rstrip("\n") + "\n", encoding="utf-8")
