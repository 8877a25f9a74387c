"""Fixtures of the fuzz suite: a live daemon on the tiny model, and the in-process app.

``fuzz_daemon`` is a real ``orchestratord serve`` subprocess on 127.0.0.1 launching
llama.cpp on the tiny GGUF (training context 4096), so any task the fuzzer gets admitted
streams to its end in a moment. ``app_client`` is the server suite's checked in-process
client (every response validated against the contracts) on a running app with a small
body limit.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

from orchestratord_server.app import build_app
from orchestratord_server.auth import key_rings
from orchestratord_server.config import Config, parse_config
from orchestratord_server.state import ServerState
from tests.integration.support import Daemon, daemon_config, running_daemon, tiny_pool_config
from tests.server.conftest import DATA_KEY, POOL_CONFIG, CheckedClient
from tests.support import tiny_gguf

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

#: The in-process app's body limit (the smallest the config allows).
MAX_BODY_BYTES = 1024
#: Context of the fuzz daemon's pool and of each of its two slots.
FUZZ_CTX = 2048


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    model = tiny_gguf.write_tiny_gguf(tmp_path_factory.mktemp("fuzz-model") / "tiny.gguf")
    pool = tiny_pool_config(model, pool_ctx=FUZZ_CTX, slots=2, ctx_per_slot=FUZZ_CTX, capacity=8)
    with running_daemon(tmp_path_factory.mktemp("fuzz-daemon"), daemon_config(pool)) as daemon:
        yield daemon


def app_config() -> Config:
    data = {
        "auth": {"api_keys": [DATA_KEY]},
        "server": {"max_body_bytes": MAX_BODY_BYTES},
        "pools": [POOL_CONFIG],
    }
    return parse_config(data)[0]


@pytest.fixture(scope="module")
def app_client() -> Iterator[CheckedClient]:
    """One running app (lifespan started) for the whole module, so it has to keep
    answering after every fuzzed request. Its pool's engine URL is dead."""
    config = app_config()
    state = ServerState(config=config, key_rings=key_rings(config.auth, environ={}))
    with TestClient(build_app(state), raise_server_exceptions=False) as http:
        yield CheckedClient(http, DATA_KEY, state)
