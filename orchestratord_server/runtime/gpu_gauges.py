"""The GPU gauges `gpu_utilization` and `vram_used_bytes`, set when `/metrics` is scraped
(ORCH-3028).

One series per replica and device of a GPU pool on this host, from NVML (`gpu_telemetry`).
A figure NVML cannot give has no sample; a series whose figure became absent, or whose
labels changed (a new engine version), is removed rather than left stale.
"""

from __future__ import annotations

from orchestrator_core import Orchestrator
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime.gpu_telemetry import GpuMonitor
from orchestratord_server.runtime.recording import UNKNOWN_VERSION

#: Labels of one series: engine, engine_version, pool_id, replica_id, device.
Labels = tuple[str, str, str, str, str]


class GpuGauges:
    """Sets the GPU gauges of one daemon from its `GpuMonitor`."""

    def __init__(self, metrics: Metrics, monitor: GpuMonitor) -> None:
        self._utilization = metrics["gpu_utilization"]
        self._vram = metrics["vram_used_bytes"]
        self._monitor = monitor
        self._shown_utilization: set[Labels] = set()
        self._shown_vram: set[Labels] = set()

    def refresh(self, core: Orchestrator, now_ms: int) -> None:
        """Every GPU series, from NVML now and the core's replicas at ``now_ms``."""
        utilization: set[Labels] = set()
        vram: set[Labels] = set()
        for pool_id in core.pool_ids:
            readings = list(self._monitor.readings(pool_id))
            if not readings:
                continue
            view = core.pool_view(pool_id, now_ms)
            versions = {r.replica_id: r.engine_version for r in view.replicas}
            for replica_id, reading in readings:
                version = versions.get(replica_id) or UNKNOWN_VERSION
                labels = (view.engine.value, version, pool_id, replica_id, str(reading.index))
                if reading.utilization is not None:
                    self._utilization.labels(*labels).set(reading.utilization)
                    utilization.add(labels)
                if reading.memory_used_bytes is not None:
                    self._vram.labels(*labels).set(reading.memory_used_bytes)
                    vram.add(labels)
        for labels in self._shown_utilization - utilization:
            self._utilization.remove(*labels)
        for labels in self._shown_vram - vram:
            self._vram.remove(*labels)
        self._shown_utilization, self._shown_vram = utilization, vram
