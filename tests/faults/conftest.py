"""Fixtures of the fault-injection tier: the tiny models, and pools on fake engines.

Each scenario module starts its own real daemon (``orchestratord serve``) with the
configuration its faults need: a llama.cpp server the daemon launches on a tiny GGUF, or
a misbehaving stand-in from :mod:`tests.support.fake_engines` reached by URL. The figures
each scenario records (``record_property("figures", ...)``) are listed at the end of the
run, for RELIABILITY.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import long_model, tiny_model
from tests.integration.support import tiny_pool_config
from tests.support.fake_engines import FakeLlamaCpp

__all__ = ["fake_pool_config", "long_model", "tiny_model"]


def fake_pool_config(engine: FakeLlamaCpp, **settings: Any) -> dict[str, Any]:
    """A pool whose one replica is ``engine``, with the standard tiny pool's other fields."""
    pool = tiny_pool_config(Path("/nonexistent"), **settings)
    pool["replicas"] = [{"id": "r0", "url": engine.base_url}]
    return pool


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the figures each passing scenario recorded (for RELIABILITY.md)."""
    lines = [
        f"{report.nodeid}: {value}"
        for report in terminalreporter.getreports("passed")
        for name, value in report.user_properties
        if name == "figures"
    ]
    if lines:
        terminalreporter.section("reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
