"""An engine server the daemon starts from a configured command line (ORCH-3038).

Any engine (vLLM, Triton, a llama.cpp binary) can be supervised this way: the replica's
``command`` runs in its own process group with the daemon's environment plus the
replica's ``env``; its output is kept as a tail for error messages and each line is
logged as an ``engine.output`` record (:mod:`~orchestratord_server.engines.output`).
Readiness is not this module's business: the replica's adapter polls the engine's
health. Stopping sends SIGTERM to the whole group (engines spawn workers), then SIGKILL
after a grace period, so no engine process outlives its replica. On Linux the direct child
is also told to exit if the daemon dies without stopping it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO

from orchestratord_server.engines.output import NOT_A_REPLICA, EngineOutput, Stream, read_lines

log = logging.getLogger("orchestratord.engines.command")

_TAIL_LINES = 200
_POLL_S = 0.05
_PR_SET_PDEATHSIG = 1


#: libc's prctl, looked up here: the child of a threaded daemon must not dlopen after fork.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the daemon's thread that spawned us ends."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


class CommandProcess:
    """One engine process started from ``argv``: ``start()``, ``stop()``, ``running``; its
    output is logged as coming from ``output``'s pool and replica."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        name: str,
        stop_grace_s: float = 10.0,
        output: EngineOutput = NOT_A_REPLICA,
    ) -> None:
        self.argv = tuple(argv)
        self.env = dict(env)
        self.name = name
        self.stop_grace_s = stop_grace_s
        self.output = output
        self._popen: subprocess.Popen[bytes] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._threads: list[threading.Thread] = []

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

    def output_tail(self, lines: int = 30) -> str:
        """The last lines the engine wrote (stdout and stderr interleaved)."""
        return "\n".join(list(self._tail)[-lines:])

    def settle_output(self, timeout_s: float) -> None:
        """Give the reader a moment to take in what an exited engine wrote last (its
        children may hold the pipe open, so this waits at most ``timeout_s``)."""
        for thread in self._threads:
            thread.join(timeout=timeout_s)

    def start(self) -> None:
        """Spawn the command; OSError if it cannot be executed."""
        if self.running:
            return
        self._tail.clear()
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **self.env},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        streams: tuple[tuple[Stream, IO[bytes] | None], ...] = (
            ("stdout", self._popen.stdout),
            ("stderr", self._popen.stderr),
        )
        self._threads = []
        for stream, pipe in streams:
            assert pipe is not None
            thread = threading.Thread(
                target=read_lines,
                args=(pipe, functools.partial(self._take, stream)),
                name=f"engine-{self.name}-{stream}-{self._popen.pid}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        log.info("engine %s started: pid %s", self.name, self._popen.pid)

    def _take(self, stream: Stream, line: str) -> None:
        self._tail.append(line)
        self.output.log(stream, line)

    async def stop(self) -> int | None:
        """SIGTERM the process group, SIGKILL it after the grace period; the exit status."""
        popen = self._popen
        if popen is None:
            return None
        self._signal_group(popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        while popen.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
        if popen.poll() is None:
            log.warning("engine %s ignored SIGTERM; killing it", self.name)
        # Workers of the group may outlive the leader; the group goes in any case.
        self._signal_group(popen.pid, signal.SIGKILL)
        while popen.poll() is None:
            await asyncio.sleep(_POLL_S)
        await asyncio.to_thread(self._join)
        return popen.returncode

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=1.0)
