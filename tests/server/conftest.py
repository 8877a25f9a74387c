"""Fixtures for the HTTP shell: an in-process app and a client whose every response is
checked against the contracts with openapi-core (ORCH-2006, ORCH-3044)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from orchestratord_server.app import build_app
from orchestratord_server.auth import key_rings
from orchestratord_server.config import Config, parse_config
from orchestratord_server.state import ServerState
from tests.support.contract import assert_conforms

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

DATA_KEY = "data-key-for-tests"
CONTROL_KEY = "control-key-for-tests"
POOL_CONFIG: dict[str, Any] = {
    "id": "pool-a",
    "engine": "llamacpp",
    "model": "tiny",
    "ctx": 2048,
    "devices": [0],
    "replicas": [{"id": "r1", "url": "http://127.0.0.1:9"}],
}


class CheckedClient:
    """A TestClient whose responses are validated against the contracts."""

    def __init__(self, client: TestClient, key: str | None, state: ServerState) -> None:
        self._client = client
        self._key = key
        self.app_state = state

    def running(self) -> TestClient:
        """The client as a context manager that runs the app's lifespan (runtime started)."""
        return self._client

    def request(self, method: str, path: str, *, key: str | None = "default", **kwargs: Any):
        headers = dict(kwargs.pop("headers", {}) or {})
        use = self._key if key == "default" else key
        if use is not None:
            headers.setdefault("Authorization", f"Bearer {use}")
        response = self._client.request(method, path, headers=headers, **kwargs)
        if not response.request.url.path.startswith(("/docs", "/openapi")):
            assert_conforms(response)
        return response

    def get(self, path: str, **kwargs: Any):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any):
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any):
        return self.request("DELETE", path, **kwargs)


def make_client(config: Config, key: str | None = DATA_KEY) -> CheckedClient:
    rings = key_rings(config.auth, environ={}) if config.auth.enabled else None
    state = ServerState(config=config, key_rings=rings)
    app = build_app(state)
    return CheckedClient(TestClient(app, raise_server_exceptions=False), key, state)


@pytest.fixture
def config() -> Config:
    data = {
        "auth": {"api_keys": [DATA_KEY], "control_api_keys": [CONTROL_KEY]},
        "pools": [POOL_CONFIG],
    }
    return parse_config(data)[0]


@pytest.fixture
def client(config: Config) -> Iterator[CheckedClient]:
    yield make_client(config)
