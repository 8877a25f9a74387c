"""Fixtures of the client tests: the tiny long-context model, a daemon per module, cleanup.

The model fixture is the integration suite's own (imported, so both suites build it the
same way). Each test module starts one real daemon with one slot and a queue of one, so
two long tasks fill it and a third is refused with 429. After each test every task it
admitted is canceled and the pool is idle again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import long_model
from tests.integration.support import (
    Client,
    Daemon,
    daemon_config,
    running_daemon,
    tiny_pool_config,
)

__all__ = ["long_model"]

SLOTS = 1
CAPACITY = 1


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, long_model: Path) -> Iterator[Daemon]:
    config = daemon_config(tiny_pool_config(long_model, slots=SLOTS, capacity=CAPACITY))
    with running_daemon(tmp_path_factory.mktemp("client-daemon"), config) as started:
        yield started


@pytest.fixture
def tracker(daemon: Daemon) -> Iterator[Client]:
    """The contract-checked test client; tasks whose ids go in `submitted` are canceled."""
    client = daemon.client()
    client.wait_idle()
    yield client
    client.cancel_all()
    client.wait_idle()
