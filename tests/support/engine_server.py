"""A real engine server run by a test: its own process group, a log file, a readiness
wait, a crash on demand and a stop that leaves no process behind.

vLLM and Triton both fork workers (engine core, backend stubs) that can outlive the
process the test started, so the server runs as the leader of a new process group and
every signal goes to the whole group. Subclasses say how to start the server
(`command`) and when it is ready (`ready`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


class EngineServer:
    """One engine server process group; `start()`, `kill()`, `stop()`."""

    name = "engine"
    start_timeout_s = 120.0
    stop_timeout_s = 20.0

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and the extra environment that start the server."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the server answers as ready now."""
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Spawn the server and wait until it is ready; on failure nothing is left."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv, extra = self.command()
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **extra},
                start_new_session=True,
            )
        try:
            self._wait_ready(began + self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began

    def _wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        while not self.ready():
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} was not ready in time:\n{self.log_tail()}")
            time.sleep(0.2)

    def group_alive(self) -> bool:
        """True while any process of the server's process group exists."""
        if self.process is None:
            return False
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the whole group at once: an engine crash."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(self.stop_timeout_s)

    def stop(self) -> None:
        """SIGTERM the group, wait; SIGKILL what is left. Leaves no process behind."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(self.stop_timeout_s)
        deadline = time.monotonic() + self.stop_timeout_s
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert not self.group_alive(), f"{self.name} left processes behind"


@contextlib.contextmanager
def running_together(servers: Sequence[EngineServer]) -> Iterator[Sequence[EngineServer]]:
    """Start ``servers`` at the same time (the wait is about one start-up), and stop them
    together on exit; if one fails to start, every one is stopped."""
    try:
        with ThreadPoolExecutor(max(1, len(servers))) as starting:
            for started in [starting.submit(server.start) for server in servers]:
                started.result()
        yield servers
    finally:
        with ThreadPoolExecutor(max(1, len(servers))) as stopping:
            for stopped in [stopping.submit(server.stop) for server in servers]:
                stopped.result()
