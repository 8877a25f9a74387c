"""Gauges set from the core's views and NVML when `/metrics` is scraped (ORCH-3022,
ORCH-3028, ORCH-3041).

Queue depth per priority, KV-cache usage per replica (from its last probe; no sample when
the engine reports none), SLO attainment per objective (no sample when a ratio cannot be
computed yet) and, for GPU pools on this host, each device's utilisation and used memory
(no sample when NVML cannot give it). Each refresh sets the series it knows and removes
every series of the previous refresh it did not set again, so a value that became unknown
or a label that changed (a new engine version, a replica gone) never leaves a stale
series behind.
"""

from __future__ import annotations

import contextlib
from typing import Any

from orchestrator_core import Orchestrator, PoolView, Priority
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime.gpu_telemetry import GpuMonitor
from orchestratord_server.runtime.recording import UNKNOWN_VERSION

Labels = tuple[str, ...]


class _Round:
    """One gauge's series across refreshes: the ones not set again are removed."""

    def __init__(self, gauge: Any) -> None:
        self._gauge = gauge
        self._shown: set[Labels] = set()
        self._set: set[Labels] = set()

    def set(self, labels: Labels, value: float) -> None:
        self._gauge.labels(*labels).set(value)
        self._set.add(labels)

    def finish(self) -> None:
        """Remove what the previous refresh set and this one did not."""
        for labels in self._shown - self._set:
            with contextlib.suppress(KeyError):
                self._gauge.remove(*labels)
        self._shown, self._set = self._set, set()


class Gauges:
    """Sets the scraped gauges of one daemon."""

    def __init__(self, metrics: Metrics, gpus: GpuMonitor) -> None:
        self._gpus = gpus
        self._queue = _Round(metrics["queue_depth"])
        self._slo = _Round(metrics["slo_attainment_ratio"])
        self._kv = _Round(metrics["kv_cache_usage_ratio"])
        self._utilization = _Round(metrics["gpu_utilization"])
        self._vram = _Round(metrics["vram_used_bytes"])

    def refresh(self, core: Orchestrator, now_ms: int) -> None:
        """Every gauge, from the core as it stands at ``now_ms`` and NVML's last reading."""
        for pool_id in core.pool_ids:
            view = core.pool_view(pool_id, now_ms)
            version = view.engine_version or UNKNOWN_VERSION
            where = (view.engine.value, version, pool_id)
            self._queue.set((*where, "interactive"), view.queue_depth_interactive)
            self._queue.set((*where, "batch"), view.queue_depth_batch)
            self._slo_of(core, view, now_ms)
            self._replicas(view)
        for gauge in (self._queue, self._slo, self._kv, self._utilization, self._vram):
            gauge.finish()

    def _slo_of(self, core: Orchestrator, view: PoolView, now_ms: int) -> None:
        snapshot = core.slo(view.pool_id, now_ms)
        where = (view.engine.value, view.engine_version or UNKNOWN_VERSION, view.pool_id)
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
                if ratio is not None:
                    self._slo.set((*where, priority.value, objective), ratio)

    def _replicas(self, view: PoolView) -> None:
        versions: dict[str, str] = {}
        for replica in view.replicas:
            version = replica.engine_version or UNKNOWN_VERSION
            versions[replica.replica_id] = version
            if replica.kv_usage is not None:
                kv = (view.engine.value, version, view.pool_id, replica.replica_id)
                self._kv.set(kv, replica.kv_usage)
        for replica_id, reading in self._gpus.readings(view.pool_id):
            labels = (
                view.engine.value,
                versions.get(replica_id, UNKNOWN_VERSION),
                view.pool_id,
                replica_id,
                str(reading.index),
            )
            if reading.utilization is not None:
                self._utilization.set(labels, reading.utilization)
            if reading.memory_used_bytes is not None:
                self._vram.set(labels, reading.memory_used_bytes)
