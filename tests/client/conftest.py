"""Fixtures of the client tests: the tiny long-context model, a daemon per module, cleanup.

The model fixture is the integration suite's own (imported, so both suites build it the
same way). Each test module starts one real daemon with one slot and a queue of one, so
two long tasks fill it and a third is refused with 429. After each test every task it
admitted is canceled and the pool is idle again. A test that drains or reloads the pool
(ORCH-2101, ORCH-2102) asks for `in_service`, which afterwards brings a drained pool back
with a reload to its own model and waits until it is Ready on it, so the pool is left as
the module's other tests expect it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import long_model
from tests.integration.support import (
    MODEL_REF,
    POOL_ID,
    Client,
    Daemon,
    daemon_config,
    running_daemon,
    tiny_pool_config,
    wait_until,
)

__all__ = ["long_model"]

SLOTS = 1
CAPACITY = 1
#: A reload of the tiny model takes well under a second; this bounds the wait for one.
RELOAD_TIMEOUT_S = 30.0


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


def serving(client: Client) -> bool:
    """Ready, not draining, and no reload under way (the desired model is applied)."""
    health = client.health()
    return bool(
        health["ready"]
        and not health["draining"]
        and health["desired_model_ref"] == health["applied_model_ref"]
    )


def wait_serving(client: Client) -> None:
    wait_until(
        lambda: serving(client),
        timeout=RELOAD_TIMEOUT_S,
        interval=0.05,
        what="the pool to be Ready on its model",
    )


@pytest.fixture
def in_service(tracker: Client) -> Iterator[Client]:
    """The tracker; afterwards the pool is back in service on its configured model."""
    yield tracker
    if tracker.health()["draining"]:
        response = tracker.post(f"/v1/pools/{POOL_ID}/reload", json={"new_model_ref": MODEL_REF})
        assert response.status_code == 202, response.text
    wait_serving(tracker)
