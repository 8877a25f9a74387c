"""Fixtures of the OpenAI-compatibility suite: a real daemon, a real engine, the SDK.

One daemon serves the tiny random GGUF (long training context, so a task can run long
enough to be refused behind, or abandoned): two slots and a queue of one, so two running
tasks and one queued fill it. Clients are the official `openai` package, unmodified, with
retries off so a refusal surfaces as the SDK's exception at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.support import (
    DATA_KEY,
    Client,
    Daemon,
    daemon_config,
    running_daemon,
    tiny_pool_config,
)
from tests.support import tiny_gguf

#: Training context of the tiny model here: a 16k-token task runs for tens of seconds.
LONG_TRAIN_CTX = 65_536


@pytest.fixture(scope="session")
def long_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("openai-models") / "tiny-long.gguf"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny_gguf, "TRAIN_CTX", LONG_TRAIN_CTX)
        return tiny_gguf.write_tiny_gguf(path)


@pytest.fixture(scope="session")
def openai_daemon(
    tmp_path_factory: pytest.TempPathFactory, long_tiny_model: Path
) -> Iterator[Daemon]:
    """Two slots and a queue of one (reject)."""
    config = daemon_config(tiny_pool_config(long_tiny_model, slots=2, capacity=1))
    with running_daemon(tmp_path_factory.mktemp("openai-daemon"), config) as daemon:
        yield daemon


@pytest.fixture
def orch(openai_daemon: Daemon) -> Iterator[Client]:
    """An OrchQueue client of the daemon; its tasks are canceled after the test and the
    pool is idle again before the next one."""
    client = openai_daemon.client()
    yield client
    client.cancel_all()
    client.wait_idle(timeout=30)


@pytest.fixture
def sdk(openai_daemon: Daemon, orch: Client) -> Iterator[openai.OpenAI]:
    """The official OpenAI client pointed at the daemon."""
    client = openai.OpenAI(base_url=openai_daemon.base_url + "/v1", api_key=DATA_KEY, max_retries=0)
    yield client
    client.close()
