"""The daemon of the security tier: separate data and control keys, a small body limit.

One real ``orchestratord serve`` for the whole tier, its pool served by a fake llama.cpp
engine (:mod:`tests.support.fake_engines`) whose generated text is a recognisable string,
so the tests can look for it, the keys and the prompts where they must never appear.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.faults.conftest import fake_pool_config
from tests.integration.support import DATA_KEY, Daemon, daemon_config, running_daemon
from tests.support.fake_engines import FakeLlamaCpp, fake_llamacpp

MAX_BODY_BYTES = 4096


@dataclass(frozen=True)
class Secured:
    """The running daemon, its engine, and the secrets it was given."""

    daemon: Daemon
    engine: FakeLlamaCpp
    data_key: str
    control_key: str


@pytest.fixture(scope="session")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    control_key = f"control-key-{uuid.uuid4().hex}"
    with fake_llamacpp(token_text=f"generated{uuid.uuid4().hex[:10]}") as engine:
        config = daemon_config(fake_pool_config(engine))
        config["auth"]["control_api_keys"] = [control_key]
        config["server"]["max_body_bytes"] = MAX_BODY_BYTES
        workdir = tmp_path_factory.mktemp("secured-daemon")
        with running_daemon(workdir, config) as daemon:
            yield Secured(daemon, engine, DATA_KEY, control_key)
