"""Readiness (ORCH-3002): /readyz is 503 until a pool is Ready, 200 after.

The start-up of every daemon is watched: its /readyz answers are recorded from the moment
it listens. A daemon whose only engine never answers stays 503 and refuses tasks with 503
and retry hints (ORCH-3018, ORCH-2007).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from orchestratord_server.generated.models import Readiness
from tests.integration.support import (
    POOL_ID,
    Client,
    Daemon,
    assert_conforms,
    daemon_config,
    free_port,
    running_daemon,
    task_body,
    tiny_pool_config,
)

pytestmark = pytest.mark.integration


def test_readyz_is_503_until_the_pool_is_ready_then_200(
    client: Client, main_daemon: Daemon
) -> None:
    """ORCH-3002: while the engine starts and preloads /readyz is 503, then 200.

    The 503 window lasts the engine start and preload (a few hundred ms); the start-up
    poll of the fixture recorded every answer, each checked against the contract.
    """
    answers = [response for _, response in main_daemon.readyz_history if response is not None]
    statuses = [response.status_code for response in answers]
    assert statuses[-1] == 200
    assert set(statuses[:-1]) <= {503}, statuses
    for response in answers:
        assert_conforms(response)
        body = Readiness.model_validate_json(response.content)
        assert body.ready is (response.status_code == 200)
        assert [p.pool_id for p in body.pools] == [POOL_ID]
        assert body.pools[0].ready is body.ready
    now = client.get("/readyz", key=None)
    assert now.status_code == 200
    assert now.json() == {"ready": True, "pools": [{"pool_id": POOL_ID, "ready": True}]}


@pytest.fixture(scope="module")
def unready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A daemon whose only replica is a URL where nothing listens."""
    pool = tiny_pool_config(tmp_path_factory.getbasetemp(), slots=1)
    pool["replicas"] = [{"id": "r0", "url": f"http://127.0.0.1:{free_port()}", "slots": 1}]
    workdir = tmp_path_factory.mktemp("unready-daemon")
    with running_daemon(workdir, daemon_config(pool), wait_ready=False) as daemon:
        yield daemon.client()


def test_readyz_stays_503_while_no_engine_answers(unready: Client) -> None:
    """ORCH-3002: no Ready pool, so /readyz is 503 with the pool listed as not ready."""
    response = unready.get("/readyz", key=None)
    assert response.status_code == 503
    assert response.json() == {"ready": False, "pools": [{"pool_id": POOL_ID, "ready": False}]}
    health = unready.health()
    assert (health["live"], health["ready"]) == (False, False)


def test_tasks_for_a_pool_that_is_down_get_503_with_retry_hints(unready: Client) -> None:
    """ORCH-3018, ORCH-2007: nothing is queued for a pool that is down; 503 + backoff."""
    response = unready.submit(task_body())
    assert response.status_code == 503, response.text
    envelope = response.json()
    assert envelope["code"] in ("POOL_UNAVAILABLE", "POOL_UNREADY")
    assert envelope["retriable"] is True
    backoff = int(response.headers["X-Backoff-Ms"])
    assert backoff >= 1
    assert envelope["retry_after_ms"] == backoff
    assert int(response.headers["Retry-After"]) == max(1, math.ceil(backoff / 1000))
