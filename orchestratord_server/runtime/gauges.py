"""Gauges set from the core's views when `/metrics` is scraped (ORCH-3022, ORCH-3028, ORCH-3041).

Queue depth per priority, KV-cache usage per replica (from its last probe; no sample when
the engine reports none) and SLO attainment per objective (no sample when a ratio cannot
be computed yet). A series whose value became unknown is removed rather than left stale.
"""

from __future__ import annotations

import contextlib

from orchestrator_core import Orchestrator, PoolView, Priority
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime.recording import UNKNOWN_VERSION


class Gauges:
    """Sets the scraped gauges of one daemon."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._kv_series: dict[tuple[str, str], tuple[str, str, str, str]] = {}

    def refresh(self, core: Orchestrator, now_ms: int) -> None:
        """Every gauge, from the core as it stands at ``now_ms``."""
        queue = self._metrics["queue_depth"]
        for pool_id in core.pool_ids:
            view = core.pool_view(pool_id, now_ms)
            version = view.engine_version or UNKNOWN_VERSION
            engine = view.engine.value
            queue.labels(engine, version, pool_id, "interactive").set(view.queue_depth_interactive)
            queue.labels(engine, version, pool_id, "batch").set(view.queue_depth_batch)
            self._slo(core, view, now_ms)
            self._kv(view)

    def _slo(self, core: Orchestrator, view: PoolView, now_ms: int) -> None:
        gauge = self._metrics["slo_attainment_ratio"]
        snapshot = core.slo(view.pool_id, now_ms)
        version = view.engine_version or UNKNOWN_VERSION
        for priority in Priority:
            figures = snapshot.of(priority)
            ratios = {
                "first_token_latency": figures.first_token_within,
                "decode_latency": figures.tokens_64_within,
                "errors": None if figures.error_rate is None else 1 - figures.error_rate,
                "throughput": None
                if figures.throughput_ratio is None
                else min(1.0, figures.throughput_ratio),
            }
            for objective, ratio in ratios.items():
                key = (view.engine.value, version, view.pool_id, priority.value, objective)
                if ratio is None:
                    with contextlib.suppress(KeyError):
                        gauge.remove(*key)
                else:
                    gauge.labels(*key).set(ratio)

    def _kv(self, view: PoolView) -> None:
        gauge = self._metrics["kv_cache_usage_ratio"]
        for replica in view.replicas:
            version = replica.engine_version or UNKNOWN_VERSION
            key = (view.engine.value, version, view.pool_id, replica.replica_id)
            shown = self._kv_series.get(key[2:])
            if shown is not None and (replica.kv_usage is None or shown != key):
                with contextlib.suppress(KeyError):
                    gauge.remove(*shown)
                del self._kv_series[key[2:]]
            if replica.kv_usage is not None:
                gauge.labels(*key).set(replica.kv_usage)
                self._kv_series[key[2:]] = key
