"""Metric families computed from the core's views at each scrape (ORCH-3028, ORCH-3038,
ORCH-3053).

A prometheus_client collector, the kube-state-metrics way: every `/metrics` scrape reads
the pools and replicas as the core sees them and yields their families afresh, so a pool
or replica that is gone has no series and nothing goes stale. It serves the contract's
`source: scrape` families (names, labels and help from `contracts/metrics.yaml`): pool
readiness, running tasks, slots, queue capacity; each replica's life-cycle and breaker
state (one series per state, 1 for the current one), its restarts and what it runs; and
the build of this installation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator_core import PoolView
from orchestratord_server.runtime.recording import UNKNOWN_VERSION
from orchestratord_server.versions import BuildVersions


class _Scrape:
    """The scrape families of one collection, filled by label name."""

    def __init__(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        self._entries = entries
        self.families = {name: _family(entry) for name, entry in entries.items()}

    def add(self, name: str, value: float, **labels: str) -> None:
        names = self._entries[name]["labels"]
        self.families[name].add_metric([labels[label] for label in names], value)

    def states(self, name: str, current: StrEnum, **labels: str) -> None:
        """The enum pattern: one series per state of ``current``'s enum, 1 for it."""
        for state in type(current):
            self.add(name, float(state is current), state=state.value, **labels)


def _family(entry: Mapping[str, Any]) -> GaugeMetricFamily | CounterMetricFamily:
    name, help_text, labels = entry["name"], entry["help"], entry["labels"]
    if entry["type"] == "counter":
        return CounterMetricFamily(name, help_text, labels=labels)
    return GaugeMetricFamily(name, help_text, labels=labels)


class ScrapeCollector(Collector):
    """Yields the scrape-time families from the pools as the core sees them now."""

    def __init__(
        self,
        pool_views: Callable[[], Iterable[PoolView]],
        queue_capacities: Mapping[str, int],
        build: BuildVersions,
        entries: Mapping[str, Mapping[str, Any]],
    ) -> None:
        """`entries` are the contract's `source: scrape` families, by name."""
        self._pool_views = pool_views
        self._capacities = dict(queue_capacities)
        self._build = build
        self._entries = entries

    def describe(self) -> Iterator[Metric]:
        """The families without samples: registration learns their names from them."""
        return iter(_Scrape(self._entries).families.values())

    def collect(self) -> Iterator[Metric]:
        scrape = _Scrape(self._entries)
        build = self._build
        scrape.add(
            "orchestratord_build_info",
            1,
            version=build.version,
            python_version=build.python,
            llamacpp_runtime=build.llamacpp_runtime or "",
        )
        for view in self._pool_views():
            self._pool(scrape, view)
        return iter(scrape.families.values())

    def _pool(self, scrape: _Scrape, view: PoolView) -> None:
        pool = {"engine": view.engine.value, "pool_id": view.pool_id}
        scrape.add("orchestratord_pool_ready", float(view.ready), **pool)
        scrape.add("orchestratord_pool_running_tasks", view.running, **pool)
        scrape.add("orchestratord_pool_slots", view.slots_total, **pool)
        scrape.add("orchestratord_pool_free_slots", view.slots_free, **pool)
        scrape.add("orchestratord_pool_queue_capacity", self._capacities[view.pool_id], **pool)
        for replica in view.replicas:
            where = {"pool_id": view.pool_id, "replica_id": replica.replica_id}
            scrape.states("orchestratord_replica_state", replica.state, **where)
            scrape.states("orchestratord_replica_breaker_state", replica.breaker, **where)
            scrape.add("orchestratord_replica_restarts_total", replica.restarts, **where)
            scrape.add(
                "orchestratord_replica_info",
                1,
                engine=view.engine.value,
                engine_version=replica.engine_version or UNKNOWN_VERSION,
                model_digest=replica.model_digest or UNKNOWN_VERSION,
                **where,
            )
