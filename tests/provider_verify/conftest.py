"""Fixtures of the provider verification: the daemons that stand in the provider states.

Two real ``orchestratord serve`` subprocesses, started only when a test needs them and
stopped (SIGTERM, no engine left behind) when the module ends:

- the *ready* daemon launches llama.cpp on the tiny long-context GGUF with one slot and a
  queue of one (policy reject), so two long tasks fill it;
- the *unready* daemon's only replica is a loopback URL where nothing listens, so no pool
  ever becomes Ready.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import (
    Daemon,
    daemon_config,
    free_port,
    running_daemon,
    tiny_pool_config,
)
from tests.provider_verify.states import QUEUE_CAPACITY, SLOTS
from tests.support import tiny_gguf

#: Training context of the model: long enough that a 16k-token task runs for tens of
#: seconds, so a running or queued task stays put while an interaction is replayed.
LONG_TRAIN_CTX = 65_536


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pact-models") / "tiny-long.gguf"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny_gguf, "TRAIN_CTX", LONG_TRAIN_CTX)
        return tiny_gguf.write_tiny_gguf(path)


@pytest.fixture(scope="module")
def ready_daemon(tmp_path_factory: pytest.TempPathFactory, long_model: Path) -> Iterator[Daemon]:
    pool = tiny_pool_config(long_model, slots=SLOTS, capacity=QUEUE_CAPACITY)
    with running_daemon(tmp_path_factory.mktemp("pact-ready"), daemon_config(pool)) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def unready_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    pool = tiny_pool_config(tmp_path_factory.getbasetemp(), slots=1)
    pool["replicas"] = [{"id": "r0", "url": f"http://127.0.0.1:{free_port()}", "slots": 1}]
    workdir = tmp_path_factory.mktemp("pact-unready")
    with running_daemon(workdir, daemon_config(pool), wait_ready=False) as daemon:
        yield daemon
