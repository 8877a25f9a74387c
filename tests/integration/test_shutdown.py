"""Stopping the daemon: SIGTERM ends it promptly, and no engine outlives it.

Every daemon of the suite is stopped with SIGTERM by its fixture, which also checks that
the launched llama.cpp process is gone; these tests add the harder cases.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.support import (
    Daemon,
    daemon_config,
    long_task_body,
    tiny_pool_config,
    wait_until,
)

pytestmark = pytest.mark.integration

#: How long a daemon may take to stop on SIGTERM: generous for a loaded 2-core machine.
STOP_BOUND_S = 10.0


def test_sigkill_leaves_no_orphan_engine(tmp_path: Path, long_model: Path) -> None:
    """ORCH-3054: a daemon killed outright takes its launched engine with it."""
    daemon = Daemon(tmp_path, daemon_config(tiny_pool_config(long_model, slots=1)))
    daemon.start()
    assert daemon.process is not None
    try:
        assert daemon.live_engines()
        daemon.process.kill()
        daemon.process.wait(STOP_BOUND_S)
        wait_until(lambda: not daemon.live_engines(), timeout=STOP_BOUND_S, what="engine exit")
    finally:
        daemon.stop()
        daemon.kill_orphans()


def test_sigterm_with_an_open_stream_stops_promptly(tmp_path: Path, long_model: Path) -> None:
    """The daemon exits within a bounded time on SIGTERM, even while a client streams."""
    daemon = Daemon(tmp_path, daemon_config(tiny_pool_config(long_model, slots=1)))
    daemon.start()
    assert daemon.process is not None
    client = daemon.client()
    body = long_task_body()
    client.admit(body)
    try:
        with client.open_stream(body["task_id"]) as stream:
            stream.read_until(lambda f: f.event == "token")
            daemon.process.send_signal(signal.SIGTERM)
            try:
                daemon.process.wait(STOP_BOUND_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the daemon was still running {STOP_BOUND_S:g}s after SIGTERM")
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(STOP_BOUND_S)
        daemon.stop()
        orphans = daemon.kill_orphans()
    assert not orphans, f"orphaned engines: {orphans}"
