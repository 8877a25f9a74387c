"""The peer: LiteLLM's proxy in front of the same llama.cpp engine, for bench/streaming.py.

LiteLLM (`litellm[proxy]` from PyPI) lives in its own virtual environment, never in the
project's: `LITELLM_VENV` (default /tmp/litellm-venv) is created with `python3 -m venv`
and filled with `pip install 'litellm[proxy]'` the first time, then reused. Its proxy
runs on loopback with one worker (as orchestratord is one process), a master key (auth
on, as ours), no database, and one model whose route is the engine's OpenAI-compatible
`/v1/completions` (`text-completion-openai/` provider, `api_base` = engine + `/v1`).
The remote model-cost map is not fetched (`LITELLM_LOCAL_MODEL_COST_MAP`).

Clients of both the peer and the engine's own OpenAI route speak the same protocol, so
one client (`openai_stream`) measures both: `POST /v1/completions` with `stream: true`,
`data: {"choices": [{"text": ...}]}` chunks, ending with `data: [DONE]`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import yaml

from orchestratord_server.adapters.base import SAMPLER_PROFILE_V1

VENV = Path(os.environ.get("LITELLM_VENV", "/tmp/litellm-venv"))
MASTER_KEY = "sk-bench-litellm"
MODEL = "bench-peer-model"


class PeerUnavailable(RuntimeError):
    """LiteLLM could not be installed or started here; the message says why."""


def ensure_venv() -> Path:
    """The `litellm` executable of the peer's own venv, creating the venv if needed."""
    exe = VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    steps = (
        [sys.executable, "-m", "venv", str(VENV)],
        [str(VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise PeerUnavailable(f"`{' '.join(step)}` failed: {' / '.join(tail)}")
    if not exe.exists():
        raise PeerUnavailable(f"pip installed litellm[proxy] but {exe} is missing")
    return exe


def version(exe: Path) -> str:
    """The installed LiteLLM version, read from the venv's package metadata."""
    python = exe.with_name("python")
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    return subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def _config(engine: str) -> dict[str, object]:
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"text-completion-openai/{MODEL}",
                    "api_base": f"{engine}/v1",
                    "api_key": "unused",
                },
            }
        ],
        "litellm_settings": {"drop_params": True, "telemetry": False},
        "general_settings": {"master_key": MASTER_KEY},
    }


@contextlib.contextmanager
def litellm_proxy(engine: str, port: int, workdir: Path) -> Iterator[tuple[str, int]]:
    """Run the LiteLLM proxy in front of `engine`; yields its base URL and process id
    once it answers."""
    exe = ensure_venv()
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(_config(engine)))
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    env.pop("PYTHONPATH", None)
    log = (workdir / "litellm.log").open("w")
    command = [str(exe), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--num_workers", "1", "--telemetry", "False"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise PeerUnavailable(f"the LiteLLM proxy exited; see {workdir / 'litellm.log'}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base}/health/liveliness", timeout=1) as answer,
            ):
                if answer.status == 200:
                    break
            time.sleep(0.3)
        else:
            raise PeerUnavailable("the LiteLLM proxy did not answer within 120 s")
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def openai_body(prompt: str, tokens: int, seed: int) -> dict[str, object]:
    """A streamed OpenAI completion request; temperature and top_p of profile v1, as the
    other routes (the OpenAI protocol has no field for the rest of the profile), and
    llama.cpp's prompt cache off, as orchestratord asks for (LiteLLM passes the field
    through: the engine's prompt-token counter shows the prompt evaluated every time)."""
    return {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": tokens,
        "stream": True,
        "seed": seed,
        "temperature": SAMPLER_PROFILE_V1.temperature,
        "top_p": SAMPLER_PROFILE_V1.top_p,
        "cache_prompt": False,
    }


async def openai_stream(
    http: aiohttp.ClientSession, url: str, body: dict[str, object], headers: dict[str, str]
) -> tuple[float | None, int]:
    """Send one streamed completion to `url`; (seconds to the first text, text chunks)."""
    start = time.perf_counter()
    first = None
    count = 0
    async with http.post(url, json=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {await response.text()}")
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            if line.startswith(b"data: [DONE]"):
                break
            choices = json.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("text"):
                count += 1
                if first is None:
                    first = time.perf_counter() - start
    return first, count
