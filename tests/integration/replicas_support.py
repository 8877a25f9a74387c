"""Helpers for integration tests of pools with several replicas (ORCH-3008, ORCH-3038).

- :func:`replica_pool` turns the one-replica tiny pool of ``support`` into a pool of
  several replicas, each a llama.cpp server the daemon launches and supervises itself.
- :func:`engine_pid` finds the OS process serving one replica: the daemon logs each
  replica's engine URL (``replica.start``, again after every restart); the process among
  the daemon's engine children that listens on that URL's port is the one. A pid found
  this way is added to the daemon's tracked engines, so the daemon's teardown checks that
  a restarted engine is gone too.
- :class:`OpenStreams` keeps task streams open for the length of a scenario (a stream
  closed early would cancel its task, ORCH-3017) and reads each one's ``started`` frame.
- Small readers of ``GET /v1/pools/{id}/health``'s per-replica figures.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tests.integration.support import (
    ENGINE_MARKER,
    POOL_ID,
    READY_TIMEOUT_S,
    Client,
    Daemon,
    Stream,
    child_pids,
    command_line,
    long_task_body,
    tiny_pool_config,
    wait_until,
)

#: TCP state code of a listening socket in /proc/net/tcp.
_LISTEN = "0A"


def replica_pool(
    model_path: Path,
    replica_ids: tuple[str, ...] = ("r0", "r1"),
    **pool_options: Any,
) -> dict[str, Any]:
    """The tiny pool with one launched llama.cpp replica per id, all configured alike."""
    pool = tiny_pool_config(model_path, **pool_options)
    launch = pool["replicas"][0]["launch"]
    pool["replicas"] = [{"id": replica_id, "launch": dict(launch)} for replica_id in replica_ids]
    return pool


# -- the engine process behind a replica ------------------------------------------------


def engine_url(daemon: Daemon, replica_id: str) -> str | None:
    """The URL the daemon last logged for ``replica_id``'s launched engine, if any."""
    url = None
    for record in daemon.log_records():
        if record.get("event") == "replica.start" and record.get("replica_id") == replica_id:
            url = str(record["url"])
    return url


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (IPv4, any address)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
            inodes.add(inode)
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in (Path("/proc") / str(pid) / "fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    return inodes


def _serving_pid(daemon: Daemon, replica_id: str) -> int | None:
    url = engine_url(daemon, replica_id)
    if url is None:
        return None
    port = urlsplit(url).port
    assert port is not None, url
    listening = _listening_inodes(port)
    for pid in child_pids(daemon.pid):
        if ENGINE_MARKER in command_line(pid) and _socket_inodes(pid) & listening:
            return pid
    return None


def engine_pid(daemon: Daemon, replica_id: str, timeout: float = READY_TIMEOUT_S) -> int:
    """The pid of the engine process serving ``replica_id`` now (tracked for teardown)."""
    pid: int = wait_until(
        lambda: _serving_pid(daemon, replica_id),
        timeout=timeout,
        interval=0.1,
        what=f"the engine process of replica {replica_id}",
    )
    if pid not in daemon.engine_pids:
        daemon.engine_pids.append(pid)
    return pid


# -- pool health per replica --------------------------------------------------------------


def replica_health(client: Client, replica_id: str, pool_id: str = POOL_ID) -> dict[str, Any]:
    """One replica's entry of the pool's health (live, ready, slots, running)."""
    for replica in client.health(pool_id)["metrics"]["replicas"]:
        if replica["replica_id"] == replica_id:
            found: dict[str, Any] = replica
            return found
    raise AssertionError(f"pool {pool_id} reports no replica {replica_id}")


def replicas_ready(client: Client, replica_ids: tuple[str, ...], pool_id: str = POOL_ID) -> bool:
    """Whether every named replica reports Ready in the pool's health."""
    return all(replica_health(client, r, pool_id)["ready"] for r in replica_ids)


def wait_replicas_ready(
    client: Client,
    replica_ids: tuple[str, ...] = ("r0", "r1"),
    pool_id: str = POOL_ID,
    timeout: float = READY_TIMEOUT_S,
) -> None:
    wait_until(
        lambda: replicas_ready(client, replica_ids, pool_id),
        timeout=timeout,
        interval=0.1,
        what=f"replicas {', '.join(replica_ids)} of {pool_id} to be Ready",
    )


# -- streams held open for a scenario ---------------------------------------------------


class OpenStreams:
    """Task streams kept open until the block ends (then closed, canceling their tasks)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> OpenStreams:
        self._stack.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stack.__exit__(kind, error, trace)

    def open(self, task_id: str) -> Stream:
        """Open the task's stream; it stays open until the block ends."""
        return self._stack.enter_context(self.client.open_stream(task_id))

    def start(self, body: dict[str, Any]) -> tuple[Stream, dict[str, Any]]:
        """Admit ``body``, open its stream and return it with the ``started`` frame's data.

        Blocks until the task is dispatched, so only use it when a slot is free.
        """
        self.client.admit(body)
        stream = self.open(str(body["task_id"]))
        frame = stream.next_frame()
        assert frame.event == "started", f"expected started, got {frame.event}: {frame.data}"
        return stream, frame.data

    def occupy(self) -> tuple[Stream, str]:
        """Start a long task; return its stream and the replica it was placed on."""
        stream, started = self.start(long_task_body())
        return stream, str(started["replica_id"])


def release(client: Client, stream: Stream) -> None:
    """Cancel a running task and read its stream to the terminal ``end`` (canceled)."""
    assert client.cancel(stream.task_id).status_code == 204
    transcript = stream.read_all()
    assert transcript.terminal.event == "end", transcript.terminal.data
    assert transcript.terminal.data["finish_reason"] == "canceled"
