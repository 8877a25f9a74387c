"""An engine whose health check fails for a moment (ORCH-3010, ORCH-3038).

A busy engine can miss a health probe. The replica leaves placement at once (nothing is
dispatched to a replica that is not Ready) but is not restarted for one miss: two good
probes in a row put it back. Only a run of failed probes counts as a failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import fake_pool_config
from tests.integration.support import Daemon, daemon_config, running_daemon, task_body, wait_until
from tests.support.fake_engines import FakeLlamaCpp, fake_llamacpp

pytestmark = pytest.mark.integration


@pytest.fixture
def flapping() -> Iterator[FakeLlamaCpp]:
    with fake_llamacpp(token_text="flap") as engine:
        yield engine


@pytest.fixture
def daemon(tmp_path: Path, flapping: FakeLlamaCpp) -> Iterator[Daemon]:
    config = daemon_config(fake_pool_config(flapping))
    config["server"]["health_interval_ms"] = 300
    with running_daemon(tmp_path, config) as daemon:
        yield daemon


def test_one_missed_probe_takes_the_replica_out_without_a_restart(
    daemon: Daemon, flapping: FakeLlamaCpp
) -> None:
    """ORCH-3010: not Ready at once on a failed probe, Ready again after two good ones;
    ORCH-3038: no restart, no preload, for a single miss."""
    client = daemon.client()
    preloads = client.metrics().total("preload_outcomes_total", outcome="success")
    flapping.healthy = False
    wait_until(lambda: not client.health()["ready"], timeout=5, what="the replica out")
    refused = client.submit(task_body())
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "POOL_UNREADY"  # live, only not Ready
    flapping.healthy = True
    wait_until(lambda: client.health()["ready"], timeout=5, what="the replica back")
    replica = client.health()["metrics"]["replicas"][0]
    assert replica["restarts"] == 0
    assert client.metrics().total("preload_outcomes_total", outcome="success") == preloads
    transcript = client.run(task_body(max_tokens=4))
    assert transcript.terminal.event == "end"
    client.cancel_all()


def test_a_run_of_failed_probes_is_a_failure(daemon: Daemon, flapping: FakeLlamaCpp) -> None:
    """ORCH-3038: three failed probes in a row count as a failure; the replica is
    re-probed on the backoff and comes back through a full preload."""
    client = daemon.client()
    preloads = client.metrics().total("preload_outcomes_total", outcome="success")
    flapping.healthy = False
    wait_until(
        lambda: client.health()["metrics"]["replicas"][0]["restarts"] == 1,
        timeout=10,
        what="the failure to count",
    )
    flapping.healthy = True
    wait_until(lambda: client.health()["ready"], timeout=15, what="the replica back")
    assert client.metrics().total("preload_outcomes_total", outcome="success") == preloads + 1
