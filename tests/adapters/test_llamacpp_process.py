"""The supervised llama.cpp engine process (ORCH-3054) and what the adapter reports when
that process dies under a running stream (WORKER_RESET)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestratord_server.adapters.base import CompletionRequest, EngineError, TokenChunk
from orchestratord_server.engines.llamacpp_process import (
    EngineStartError,
    LlamaCppProcess,
    LlamaCppServerConfig,
)
from orchestratord_server.engines.output import EngineOutput
from tests.support.llamacpp import TEST_THREADS, adapter_for, llamacpp_server

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def config(model: Path, **overrides: object) -> LlamaCppServerConfig:
    fields: dict[str, object] = {"n_ctx": 1024, "n_parallel": 1, "threads": TEST_THREADS}
    fields.update(overrides)
    return LlamaCppServerConfig(model_path=model, **fields)  # type: ignore[arg-type]


def test_start_on_a_given_port_then_stop(tiny_model: Path) -> None:
    port = free_port()
    process = LlamaCppProcess(config(tiny_model, port=port))
    asyncio.run(process.start())
    try:
        assert process.base_url == f"http://127.0.0.1:{port}"
        assert process.pid is not None and alive(process.pid)
        assert process.running and process.returncode is None
        assert process.start_seconds is not None and process.start_seconds < 10
    finally:
        code = asyncio.run(process.stop())
    assert code == 0
    assert not process.running and process.returncode == 0


def test_unloadable_model_fails_start_with_the_engine_stderr(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(256))
    process = LlamaCppProcess(config(broken))
    with pytest.raises(EngineStartError) as caught:
        asyncio.run(process.start())
    message = str(caught.value)
    assert "exited with status 2" in message
    assert "failed to load model" in message  # llama.cpp's own words, from stderr
    assert "cannot start llama.cpp server" in message  # the runner's last words
    assert process.returncode == 2


def test_engine_output_is_logged_under_engine_to_its_last_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each line the engine writes is an `engine.output` record naming its pool and
    replica; the last words of an engine that dies are not lost."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(256))
    process = LlamaCppProcess(config(broken), EngineOutput("pool-a", "r1"))
    with caplog.at_level(logging.INFO, logger="engine"), pytest.raises(EngineStartError):
        asyncio.run(process.start())
    lines = [
        (r.getMessage(), r.fields)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "engine" and getattr(r, "event", None) == "engine.output"
    ]
    assert lines, "no engine output was logged"
    assert all((fields["pool_id"], fields["replica_id"]) == ("pool-a", "r1") for _, fields in lines)
    # The runner's reason is the last thing it writes before it exits; llama.cpp's own log
    # lines come from a thread of their own and may still land after it (or around it).
    reasons = [fields for message, fields in lines if "cannot start llama.cpp server" in message]
    assert [fields["stream"] for fields in reasons] == ["stderr"], lines[-5:]


def test_missing_model_fails_before_spawning(tmp_path: Path) -> None:
    process = LlamaCppProcess(config(tmp_path / "absent.gguf"))
    with pytest.raises(EngineStartError, match="model file not found"):
        asyncio.run(process.start())
    assert process.pid is None


def test_start_timeout_stops_the_process(tiny_model: Path) -> None:
    process = LlamaCppProcess(config(tiny_model, start_timeout_s=0.001))
    with pytest.raises(EngineStartError, match="within"):
        asyncio.run(process.start())
    assert process.returncode is not None


def test_stop_kills_an_engine_that_ignores_sigterm(tiny_model: Path) -> None:
    process = LlamaCppProcess(config(tiny_model))
    asyncio.run(process.start())
    assert process.pid is not None
    os.kill(process.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    began = time.monotonic()
    code = asyncio.run(process.stop(grace_s=0.3))
    assert code == -signal.SIGKILL
    assert 0.3 <= time.monotonic() - began < 5


def test_engine_killed_mid_stream_is_worker_reset(tiny_model: Path) -> None:
    with llamacpp_server(tiny_model, slots=1, ctx_per_slot=4096) as process:

        async def scenario() -> tuple[int, bool]:
            async with adapter_for(process) as adapter:
                stream = adapter.stream(CompletionRequest(prompt="x", max_tokens=4000, seed=1))
                received = 0
                with pytest.raises(EngineError) as caught:
                    async for chunk in stream:
                        assert isinstance(chunk, TokenChunk)
                        received += 1
                        if received == 3:
                            assert process.pid is not None
                            os.kill(process.pid, signal.SIGKILL)
                assert caught.value.kind == "WORKER_RESET"
                exit_code = await process.wait()
                with pytest.raises(EngineError) as refused:
                    await adapter.count_tokens("x")
                assert refused.value.kind == "WORKER_RESET"
                return exit_code, (await adapter.health()).live

        exit_code, live = asyncio.run(scenario())
    assert exit_code == -signal.SIGKILL
    assert not live


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_engine_exits_when_its_parent_dies(tiny_model: Path) -> None:
    parent = textwrap.dedent(
        f"""
        import asyncio, pathlib, time
        from orchestratord_server.engines.llamacpp_process import (
            LlamaCppProcess, LlamaCppServerConfig)
        process = LlamaCppProcess(LlamaCppServerConfig(
            model_path=pathlib.Path({str(tiny_model)!r}), n_ctx=512, threads=1))
        asyncio.run(process.start())
        print(process.pid, flush=True)
        time.sleep(60)
        """
    )
    daemon = subprocess.Popen(
        [sys.executable, "-c", parent], stdout=subprocess.PIPE, env=dict(os.environ), text=True
    )
    try:
        assert daemon.stdout is not None
        engine_pid = int(daemon.stdout.readline())
        assert alive(engine_pid)
    finally:
        daemon.kill()
        daemon.wait()
    deadline = time.monotonic() + 5
    while alive(engine_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(engine_pid)
