"""Fixtures of the integration suite: tiny models and real daemons (issue 5).

Every daemon is the real ``orchestratord serve --config FILE`` subprocess, launching its
own llama.cpp server on a tiny random-weight GGUF. Daemon starts are few: one shared
``main_daemon`` for the whole session, and a module-scoped one wherever a scenario needs
a different configuration. On teardown each daemon gets SIGTERM and must exit 0 without
leaving its engine process behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import (
    Client,
    Daemon,
    daemon_config,
    running_daemon,
    tiny_pool_config,
)
from tests.support import tiny_gguf

#: Training context written into the long tiny model: llama.cpp caps a slot's context at
#: the model's training context, and the standard tiny model's 4096 tokens decode in a
#: second or two. 64k lets a task run for a minute, time enough to cancel or abandon it.
LONG_TRAIN_CTX = 65_536


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The standard tiny GGUF (training context 4096)."""
    return tiny_gguf.write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GGUF with a long training context, so that generations can run long."""
    path = tmp_path_factory.mktemp("models") / "tiny-long.gguf"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny_gguf, "TRAIN_CTX", LONG_TRAIN_CTX)
        return tiny_gguf.write_tiny_gguf(path)


@pytest.fixture(scope="session")
def main_daemon(tmp_path_factory: pytest.TempPathFactory, long_model: Path) -> Iterator[Daemon]:
    """Two slots, a queue of 4 (reject), pool ctx equal to each slot's ctx."""
    config = daemon_config(tiny_pool_config(long_model, slots=2, capacity=4))
    with running_daemon(tmp_path_factory.mktemp("main-daemon"), config) as daemon:
        yield daemon


@pytest.fixture
def client(main_daemon: Daemon) -> Iterator[Client]:
    """A checked client of the main daemon; its tasks are canceled after the test."""
    client = main_daemon.client()
    yield client
    client.cancel_all()
    client.wait_idle()
