"""Fixtures of the cluster tier: real NATS JetStream, real llama.cpp, real daemons.

Every test gets its own `nats-server -js` (or three-node cluster) with a fresh store, and
daemons (`orchestratord serve`) whose config puts their state on it. The engine is one
real llama.cpp server on the tiny long-context model, started once for the module and
reached by URL by every instance, as engines are shared in `nats` mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestratord_server.engines.llamacpp_process import LlamaCppProcess
from tests.faults.conftest import pytest_terminal_summary
from tests.integration.conftest import long_model
from tests.integration.support import daemon_config, tiny_pool_config
from tests.support.llamacpp import llamacpp_server
from tests.support.nats import NatsNode, nats_single

__all__ = ["long_model", "pytest_terminal_summary"]

#: Lease TTL of the test instances: failover is measured against the ≤ 3 s goal.
LEASE_TTL_MS = 2_000


@pytest.fixture(scope="module")
def engine(long_model: Path) -> Iterator[LlamaCppProcess]:
    """One llama.cpp server every instance of a test reaches by URL."""
    with llamacpp_server(long_model, slots=4, ctx_per_slot=16_384) as process:
        yield process


@pytest.fixture
def nats_node(tmp_path: Path) -> Iterator[NatsNode]:
    with nats_single(tmp_path / "nats") as node:
        yield node


def cluster_config(
    engine: LlamaCppProcess, servers: list[str], *, capacity: int = 64, **nats: Any
) -> dict[str, Any]:
    """A daemon config: the tiny pool on ``engine`` by URL, state on NATS ``servers``."""
    pool = tiny_pool_config(Path("/nonexistent"), capacity=capacity)
    pool["replicas"] = [{"id": "r0", "url": engine.base_url}]
    config = daemon_config(pool)
    config["state"] = {
        "backend": "nats",
        "nats": {"servers": servers, "lease_ttl_ms": LEASE_TTL_MS, **nats},
    }
    return config


def instance_config(base: dict[str, Any], port: int) -> dict[str, Any]:
    """``base`` for another instance: the same state and pools, its own port."""
    return {**base, "server": {**base["server"], "port": port}}
