"""Prometheus metrics registered from the metrics contract (ORCH-3028).

Names, types, label sets, help texts and histogram buckets all come from
`contracts/metrics.yaml` (served from its generated JSON copy), so `/metrics` cannot
drift from the contract. Handlers and the runtime reach a family by its exposed name:
`metrics["tasks_enqueued_total"].labels(...).inc()`, or a child through
`metrics.labeled(name, *values)`, which keeps it. A histogram takes its own
`buckets`, else the bucket list of the unit its name ends with (`histogram_buckets_ms`,
`histogram_buckets_seconds`).
Families marked `source: scrape` are not registered here: a collector computes them from
the core's views at each scrape (`orchestratord_server.runtime.collector`). Labels never
carry task, session or client ids or prompt text.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]


def metrics_contract() -> dict[str, Any]:
    """The metrics contract, as generated from contracts/metrics.yaml."""
    text = resources.files("orchestratord_server.generated").joinpath("metrics_contract.json")
    contract: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return contract


class Metrics:
    """Every metric family of the contract, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        contract = metrics_contract()
        self._families: dict[str, MetricWrapperBase] = {}
        self._scrape_entries: dict[str, dict[str, Any]] = {}
        self._children: dict[tuple[str, ...], Any] = {}
        for entry in contract["metrics"]:
            if entry.get("source") == "scrape":
                self._scrape_entries[entry["name"]] = entry
                continue
            name, labels, help_text = entry["name"], entry["labels"], entry["help"]
            family: MetricWrapperBase
            if entry["type"] == "counter":
                family = Counter(name.removesuffix("_total"), help_text, labels, registry=registry)
            elif entry["type"] == "gauge":
                family = Gauge(name, help_text, labels, registry=registry)
            else:
                unit = name.rsplit("_", 1)[-1]
                bounds = entry.get("buckets") or contract[f"histogram_buckets_{unit}"]
                buckets = [float(b) for b in bounds]
                family = Histogram(name, help_text, labels, buckets=buckets, registry=registry)
            self._families[name] = family

    def __getitem__(self, name: str) -> Any:
        return self._families[name]

    def labeled(self, name: str, *values: str) -> Any:
        """The child of family `name` for label `values`, looked up once: prometheus_client
        checks and locks on every `labels()` call, a per-task cost on the hot path. For
        families whose children are never removed (the counters and histograms the
        recorder moves); the scrape-time gauges remove theirs and use `labels()`."""
        key = (name, *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._families[name].labels(*values)
        return child

    def scrape_entries(self) -> dict[str, dict[str, Any]]:
        """The contract entries of the `source: scrape` families, by name (a collector
        serves them)."""
        return dict(self._scrape_entries)

    def names(self) -> tuple[str, ...]:
        """The exposed names of every family."""
        return tuple(self._families)
