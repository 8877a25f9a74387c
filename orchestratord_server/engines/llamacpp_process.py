"""A real llama.cpp server as a supervised OS process (ORCH-3054).

:class:`LlamaCppProcess` starts llama.cpp's HTTP server (through
``python -m orchestratord_server.engines.xllamacpp_runner``) on 127.0.0.1 and a given or
free port, with the metrics, slots and props endpoints on, waits until ``/health`` is
ok, and stops it with SIGTERM, then SIGKILL after a grace period. If the process dies or
stays silent during start-up, :class:`EngineStartError` carries the tail of its stderr.
Every line the engine writes, but for the runner's ready line, is logged as an
``engine.output`` record (:mod:`~orchestratord_server.engines.output`).

The object holds no event-loop resources between calls (the child is a plain
``subprocess.Popen`` whose output is drained by two daemon threads), so a supervisor can
drive it from any loop, and a test can start it under one ``asyncio.run`` and stop it
under another. Call :meth:`LlamaCppProcess.start` from a long-lived thread: on Linux the
engine is told to exit when the thread that started it ends.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp

import orchestratord_server
from orchestratord_server.engines.output import NOT_A_REPLICA, EngineOutput, read_lines

log = logging.getLogger("orchestratord.engines.llamacpp")

RUNNER_MODULE = "orchestratord_server.engines.xllamacpp_runner"
_POLL_S = 0.01
_WAIT_POLL_S = 0.05
_TAIL_LINES = 200

_LineHandler = Callable[[str], None]


class EngineStartError(RuntimeError):
    """The engine did not become healthy; the message ends with its stderr tail."""


@dataclass(frozen=True, slots=True)
class LlamaCppServerConfig:
    """How to run one llama.cpp server.

    ``n_ctx`` is the total context, split evenly across the ``n_parallel`` slots (one
    request can use ``n_ctx // n_parallel`` tokens). ``port`` 0 lets the engine pick a
    free port. ``cache_ram_mib`` is llama.cpp's host-RAM prompt cache, off by default so
    the process's memory stays what the model and KV cache need.
    """

    model_path: Path
    n_ctx: int = 4096
    n_parallel: int = 1
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    host: str = "127.0.0.1"
    port: int = 0
    cache_ram_mib: int = 0
    start_timeout_s: float = 60.0
    #: Extra environment for the engine (device visibility, ORCH-3001).
    env: tuple[tuple[str, str], ...] = ()
    stop_grace_s: float = 5.0
    python: str = sys.executable
    #: Each visible device's share of the model, in device order (``--tensor-split``,
    #: ORCH-3012); empty on one device or the host, where nothing is split.
    tensor_split: tuple[float, ...] = ()
    #: Serve embeddings (llama.cpp's embedding mode, mean pooling) instead of completions.
    embedding: bool = False

    def command(self) -> list[str]:
        """The runner's argv for this configuration."""
        flags = ["--tensor-split", split_text(self.tensor_split)] if self.tensor_split else []
        if self.embedding:
            flags.append("--embedding")
        return [
            self.python,
            "-m",
            RUNNER_MODULE,
            "--model",
            str(self.model_path),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--ctx",
            str(self.n_ctx),
            "--parallel",
            str(self.n_parallel),
            "--threads",
            str(self.threads),
            "--cache-ram-mib",
            str(self.cache_ram_mib),
            *flags,
        ]


def split_text(shares: tuple[float, ...]) -> str:
    """Device shares as llama.cpp's ``--tensor-split`` takes them, e.g. ``0.6,0.4``."""
    return ",".join(f"{share:g}" for share in shares)


def _child_env() -> dict[str, str]:
    """The daemon's environment, with this package importable by the child."""
    env = dict(os.environ)
    package_root = str(Path(orchestratord_server.__file__).resolve().parent.parent)
    paths = [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class LlamaCppProcess:
    """One llama.cpp server process: ``await start()``, ``await stop()``; its output is
    logged as coming from ``output``'s pool and replica."""

    def __init__(self, config: LlamaCppServerConfig, output: EngineOutput = NOT_A_REPLICA) -> None:
        self.config = config
        self.output = output
        self._popen: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._ready = threading.Event()
        self._url: str | None = None
        self._engine_version: str | None = None
        self.start_seconds: float | None = None

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def returncode(self) -> int | None:
        """None while running (or never started); else the exit status (-N: signal N)."""
        return None if self._popen is None else self._popen.poll()

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def base_url(self) -> str:
        if self._url is None:
            raise RuntimeError("the engine has not reported its address yet")
        return self._url

    @property
    def engine_version(self) -> str | None:
        """The build as the runner names it (xllamacpp version + CPU kernel fingerprint)."""
        return self._engine_version

    def stderr_tail(self, lines: int = 30) -> str:
        return "\n".join(list(self._tail)[-lines:])

    async def start(self) -> None:
        """Spawn the engine and return once ``/health`` is ok; ``EngineStartError`` if not."""
        if self._popen is not None:
            raise RuntimeError("this engine process was already started")
        if not self.config.model_path.is_file():
            raise EngineStartError(f"model file not found: {self.config.model_path}")
        began = time.monotonic()
        deadline = began + self.config.start_timeout_s
        self._popen = subprocess.Popen(
            self.config.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_child_env() | dict(self.config.env),
        )
        self._drain(self._popen.stdout, self._read_stdout, "stdout")
        self._drain(self._popen.stderr, self._read_stderr, "stderr")
        try:
            await self._wait_ready(deadline)
            await self._wait_healthy(deadline)
        except BaseException:
            await self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        log.info(
            "llama.cpp engine pid %s ready at %s in %.2fs", self.pid, self._url, self.start_seconds
        )

    def _drain(self, stream: IO[bytes] | None, handle: _LineHandler, name: str) -> None:
        assert stream is not None
        thread = threading.Thread(
            target=read_lines,
            args=(stream, handle),
            name=f"llamacpp-{name}-{self.pid}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)

    def _read_stdout(self, line: str) -> None:
        if not self._ready.is_set():
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict) and message.get("event") == "ready":
                self._url = str(message["url"])
                self._engine_version = str(message["engine_version"])
                self._ready.set()
                return
        self._tail.append(line)
        self.output.log("stdout", line)

    def _read_stderr(self, line: str) -> None:
        self._tail.append(line)
        self.output.log("stderr", line)

    def _failure(self, what: str) -> EngineStartError:
        return EngineStartError(
            f"llama.cpp engine ({self.config.model_path.name}) {what}; "
            f"stderr tail:\n{self.stderr_tail()}"
        )

    async def _wait_ready(self, deadline: float) -> None:
        while not self._ready.is_set():
            if self.returncode is not None:
                await asyncio.to_thread(self._join_readers)
                raise self._failure(f"exited with status {self.returncode} during start-up")
            if time.monotonic() > deadline:
                raise self._failure(f"did not listen within {self.config.start_timeout_s:g}s")
            await asyncio.sleep(_POLL_S)

    async def _wait_healthy(self, deadline: float) -> None:
        url = self.base_url + "/health"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
            while True:
                if self.returncode is not None:
                    raise self._failure(f"exited with status {self.returncode} while loading")
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise self._failure(f"was not healthy within {self.config.start_timeout_s:g}s")
                await asyncio.sleep(_POLL_S)

    async def stop(self, grace_s: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after the grace period; returns the exit status."""
        popen = self._popen
        if popen is None:
            return None
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            grace = self.config.stop_grace_s if grace_s is None else grace_s
            deadline = time.monotonic() + grace
            while popen.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(_POLL_S)
            if popen.poll() is None:
                log.warning("llama.cpp engine pid %s ignored SIGTERM; killing it", popen.pid)
                popen.kill()
        await self.wait()
        await asyncio.to_thread(self._join_readers)
        return popen.returncode

    async def wait(self) -> int:
        """Return the exit status once the process has ended (a supervisor awaits this)."""
        popen = self._popen
        if popen is None:
            raise RuntimeError("this engine process was never started")
        while (code := popen.poll()) is None:
            await asyncio.sleep(_WAIT_POLL_S)
        return code

    def _join_readers(self) -> None:
        for thread in self._threads:
            thread.join(timeout=1.0)

    async def __aenter__(self) -> LlamaCppProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
