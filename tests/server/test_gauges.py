"""Scrape-time gauges never leave a stale series behind (ORCH-3028).

An alert that sums `queue_depth` or reads `slo_attainment_ratio` must not see a frozen
series of a label set that no longer exists, such as the engine version a pool ran
before it was upgraded.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry

from orchestrator_core import Orchestrator, PoolView
from orchestratord_server.config import parse_config
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime.gauges import Gauges
from orchestratord_server.runtime.gpu_telemetry import GpuMonitor
from orchestratord_server.runtime.pool_specs import core

from .conftest import POOL_CONFIG


class _Upgraded:
    """The real core, but its pools report `version` as their engine version."""

    def __init__(self, real: Orchestrator, version: str) -> None:
        self._real = real
        self.version = version
        self.pool_ids = real.pool_ids

    def pool_view(self, pool_id: str, now_ms: int) -> PoolView:
        return replace(self._real.pool_view(pool_id, now_ms), engine_version=self.version)

    def slo(self, pool_id: str, now_ms: int) -> Any:
        return self._real.slo(pool_id, now_ms)


def _depth_versions(registry: CollectorRegistry) -> set[str]:
    return {
        sample.labels["engine_version"]
        for family in registry.collect()
        if family.name == "queue_depth"
        for sample in family.samples
    }


def test_orch_3028_a_new_engine_version_replaces_the_old_series() -> None:
    config, _ = parse_config({"allow_cpu_pools": True, "pools": [POOL_CONFIG]})
    registry = CollectorRegistry()
    gauges = Gauges(Metrics(registry), GpuMonitor(config, background=False))
    engine = _Upgraded(core(config), "b100")
    gauges.refresh(engine, 0)  # type: ignore[arg-type]
    assert _depth_versions(registry) == {"b100"}
    engine.version = "b200"
    gauges.refresh(engine, 1_000)  # type: ignore[arg-type]
    assert _depth_versions(registry) == {"b200"}
