"""How the real daemon picks its log format and level, and its opt-in access log.

- With no format anywhere it writes JSON lines when standard error is a file and readable
  text when it is a terminal; both carry a UTC timestamp.
- `--log-format` / `--log-level` beat `ORCHD_LOG_FORMAT` / `ORCHD_LOG_LEVEL`, which beat
  the config file; config warnings come out in the chosen format.
- `--access-log` logs each request once, with its route template, status and duration.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.support import (
    DAEMON_ENV_UNSET,
    ENGINE_MARKER,
    POOL_ID,
    STOP_TIMEOUT_S,
    Daemon,
    child_pids,
    command_line,
    daemon_config,
    long_task_body,
    orchestratord_command,
    process_alive,
    running_daemon,
    task_body,
    tiny_pool_config,
    wait_until,
)

pytestmark = pytest.mark.integration

TEXT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\w+) +(\S+): ")


def config_without_log_settings(pool: dict[str, Any], **server: Any) -> dict[str, Any]:
    """The standard test config, its server section holding only the port and `server`."""
    config = daemon_config(pool)
    config["server"] = {"port": config["server"]["port"], **server}
    return config


def small_pool(model: Path) -> dict[str, Any]:
    return tiny_pool_config(model, pool_ctx=2048, slots=1, ctx_per_slot=2048, capacity=2)


def utc(stamp: str) -> datetime:
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == timedelta(0), stamp
    return parsed


def json_lines(daemon: Daemon) -> list[dict[str, Any]]:
    """Every stderr line, each of which must be a JSON record with a UTC timestamp."""
    records = []
    for line in daemon.stderr_text().splitlines():
        record = json.loads(line)
        assert {"ts", "level", "logger", "event", "message"} <= set(record), line
        assert abs(utc(record["ts"]) - datetime.now(UTC)) < timedelta(minutes=10), line
        records.append(record)
    return records


# -- no format configured, stderr a file; the level from the environment ---------------


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Daemon]:
    """No log_format anywhere, ORCHD_LOG_LEVEL=warning, and a config with one unknown
    field in compat mode (a warning logged while the daemon starts)."""
    config = config_without_log_settings(small_pool(tiny_model), unknown_knob=1)
    config["mode"] = "compat"
    env = {"ORCHD_LOG_LEVEL": "warning"}
    with running_daemon(tmp_path_factory.mktemp("quiet"), config, env=env) as daemon:
        yield daemon


def test_orch_3027_logs_are_json_lines_with_utc_timestamps_when_stderr_is_not_a_terminal(
    quiet: Daemon,
) -> None:
    assert quiet.stderr_text().strip(), "the daemon logged nothing"
    assert json_lines(quiet)


def test_the_environment_level_drops_info_records_and_config_warnings_are_json(
    quiet: Daemon,
) -> None:
    quiet.client().run(task_body())
    records = json_lines(quiet)
    assert {r["level"] for r in records} <= {"warning", "error"}, records
    warning = next(r for r in records if r["event"] == "config.warning")
    assert "unknown_knob" in warning["message"]


# -- flags over environment over config ------------------------------------------------


@dataclass
class Streamed:
    task_id: str
    #: Seconds from the stream's response headers to its last byte, as the client saw it.
    seconds: float


@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory, long_model: Path) -> Iterator[Daemon]:
    """The config says text, the environment says text at error level, the flags say
    JSON at info level with the access log on."""
    pool = tiny_pool_config(long_model, slots=1, capacity=2)
    config = config_without_log_settings(pool, log_format="text", log_level="error")
    env = {"ORCHD_LOG_FORMAT": "text", "ORCHD_LOG_LEVEL": "error"}
    args = ["--log-format", "json", "--log-level", "info", "--access-log"]
    with running_daemon(tmp_path_factory.mktemp("flagged"), config, env=env, args=args) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def streamed(flagged: Daemon) -> Streamed:
    """A long task whose stream is read for a while, then canceled."""
    client = flagged.client()
    body = long_task_body()
    client.admit(body)
    with client.open_stream(body["task_id"]) as stream:
        began = time.monotonic()
        stream.read_until(lambda f: f.event == "token" and f.data["i"] == 200)
        assert client.cancel(body["task_id"]).status_code == 204
        stream.read_until(lambda f: f.event in ("end", "error"))
        # Up to the terminal frame: checking the whole transcript afterwards is the
        # client's own time, not the stream's.
        seconds = time.monotonic() - began
        stream.read_all()
    client.wait_idle()
    return Streamed(body["task_id"], seconds)


def access_records(daemon: Daemon) -> list[dict[str, Any]]:
    return [r for r in json_lines(daemon) if r["event"] == "http.request"]


def test_orch_3027_flags_beat_the_environment_and_the_config(flagged: Daemon) -> None:
    records = json_lines(flagged)
    assert any(r["level"] == "info" and r["event"] == "pool.ready" for r in records)


def test_orch_3027_the_access_log_has_route_templates_statuses_and_durations(
    flagged: Daemon, streamed: Streamed
) -> None:
    client = flagged.client()
    assert client.get("/no/such/route", check=False).status_code == 404
    assert client.get("/readyz", key=None).status_code == 200
    records = wait_until(
        lambda: (found := access_records(flagged)) and found[-1]["route"] == "/readyz" and found,
        timeout=5,
        what="the access records",
    )
    routes = {(r["method"], r["route"], r["status"]) for r in records}
    assert ("POST", "/v1/tasks", 202) in routes
    assert ("POST", "/v1/tasks/{id}/cancel", 204) in routes
    assert ("GET", None, 404) in routes
    assert ("GET", "/readyz", 200) in routes
    for record in records:
        assert record["logger"] == "orchestratord.access"
        assert streamed.task_id not in json.dumps(record)
        assert record["client_id"] is None or record["client_id"].startswith("key-")
    submit = next(r for r in records if r["route"] == "/v1/tasks")
    assert submit["client_id"] is not None
    assert next(r for r in records if r["route"] == "/readyz")["client_id"] is None
    stream = next(r for r in records if r["route"] == "/v1/tasks/{id}/stream")
    assert stream["status"] == 200
    # Timed to the stream's end, not to its headers.
    assert stream["duration_ms"] >= streamed.seconds * 1000 * 0.9


# -- a terminal ------------------------------------------------------------------------


@contextlib.contextmanager
def daemon_on_a_terminal(workdir: Path, config: dict[str, Any]) -> Iterator[_Terminal]:
    """``orchestratord serve`` with stdout and stderr on a pseudo-terminal; on exit it is
    stopped with SIGTERM and its engine is checked to be gone."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    parent, child = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in DAEMON_ENV_UNSET}
    process = subprocess.Popen(
        [*orchestratord_command(), "serve", "--config", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        env=env,
    )
    os.close(child)
    terminal = _Terminal(parent, process)
    try:
        yield terminal
    finally:
        engines = [p for p in child_pids(process.pid) if ENGINE_MARKER in command_line(p)]
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            terminal.read(0.1)
        if process.poll() is None:
            process.kill()
        process.wait()
        os.close(parent)
        wait_until(
            lambda: not any(process_alive(p, ENGINE_MARKER) for p in engines),
            timeout=10,
            what="the engine to exit with its daemon",
        )


class _Terminal:
    """The reading end of the daemon's terminal, read without blocking for long."""

    def __init__(self, fd: int, process: subprocess.Popen[bytes]) -> None:
        self.fd = fd
        self.process = process
        self.text = ""

    def read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            with contextlib.suppress(OSError):  # EIO once the daemon has closed it
                self.text += os.read(self.fd, 65536).decode("utf-8", "replace")

    def lines_until(self, needle: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            assert self.process.poll() is None, f"the daemon exited:\n{self.text}"
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout:g}s:\n{self.text}"
            self.read(0.1)
        return self.text.splitlines()


def test_orch_3027_logs_are_timestamped_text_on_a_terminal(
    tmp_path: Path, tiny_model: Path
) -> None:
    config = config_without_log_settings(small_pool(tiny_model))
    with daemon_on_a_terminal(tmp_path, config) as terminal:
        lines = terminal.lines_until("pool.ready", timeout=60)
    for line in lines:
        match = TEXT_LINE.match(line)
        assert match is not None, f"not a timestamped text line: {line!r}"
        assert abs(utc(match.group(1)) - datetime.now(UTC)) < timedelta(minutes=10), line
    ready = next(line for line in lines if " pool.ready: " in line)
    assert f"pool_id={POOL_ID}" in ready
