"""GPU telemetry from NVML (ORCH-3028, ORCH-2103): readings, their absence, the gauges and
pool health.

The fake NVML below has the names, return types and errors of `pynvml` itself: its
utilisation and memory answers are pynvml's own ctypes structs, its failures pynvml's own
`NVMLError` subclasses with NVML's error codes.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pynvml
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from orchestrator_core.vocabulary import GpuTelemetryStatus
from orchestratord_server.config import Config, ReplicaConfig, parse_config
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime.gauges import Gauges
from orchestratord_server.runtime.gpu_telemetry import (
    CPU_POOL,
    NOT_READ_YET,
    REMOTE_ONLY,
    GpuMonitor,
    Nvml,
    on_this_host,
)
from orchestratord_server.runtime.pool_specs import core

from .conftest import CONTROL_KEY, DATA_KEY, POOL_CONFIG, make_client

GIB = 1024**3


@dataclass
class FakeDevice:
    """One GPU as the fake NVML reports it."""

    name: str
    uuid: str
    busy_percent: int
    total: int
    used: int
    #: NVML error code of every call on this device (a lost GPU), if any.
    failure: int | None = None
    #: NVML error code of the utilisation query alone, if any.
    utilization_failure: int | None = None


@dataclass(frozen=True)
class Handle:
    index: int


class FakeNvml(ModuleType):
    """A module with pynvml's API over `devices`, by NVML index."""

    NVMLError = pynvml.NVMLError

    def __init__(self, devices: dict[int, FakeDevice], init_failure: int | None = None) -> None:
        super().__init__("pynvml")
        self.devices = devices
        self.init_failure = init_failure
        self.calls: list[str] = []

    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if self.init_failure is not None:
            raise pynvml.NVMLError(self.init_failure)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self.calls.append("nvmlDeviceGetHandleByIndex")
        if index not in self.devices:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return Handle(index)

    def _device(self, handle: Handle) -> FakeDevice:
        device = self.devices[handle.index]
        if device.failure is not None:
            raise pynvml.NVMLError(device.failure)
        return device

    def nvmlDeviceGetName(self, handle: Handle) -> str:
        return self._device(handle).name

    def nvmlDeviceGetUUID(self, handle: Handle) -> str:
        return self._device(handle).uuid

    def nvmlDeviceGetUtilizationRates(self, handle: Handle) -> Any:
        device = self._device(handle)
        if device.utilization_failure is not None:
            raise pynvml.NVMLError(device.utilization_failure)
        return pynvml.c_nvmlUtilization_t(gpu=device.busy_percent, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: Handle) -> Any:
        device = self._device(handle)
        free = device.total - device.used
        return pynvml.c_nvmlMemory_t(total=device.total, free=free, used=device.used)


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def two_gpus() -> dict[int, FakeDevice]:
    return {
        0: FakeDevice("NVIDIA L4", "GPU-aaaa", 87, 24 * GIB, 18 * GIB),
        1: FakeDevice("NVIDIA L4", "GPU-bbbb", 3, 24 * GIB, 2 * GIB),
    }


def gpu_config(*replicas: dict[str, Any], devices: list[int] | None = None) -> Config:
    pool = {**POOL_CONFIG, "devices": devices or [0, 1], "tensor_split": None}
    if len(pool["devices"]) > 1:
        pool["tensor_split"] = [1 / len(pool["devices"])] * len(pool["devices"])
    pool["replicas"] = list(replicas) or POOL_CONFIG["replicas"]
    return parse_config(
        {
            "auth": {"api_keys": [DATA_KEY], "control_api_keys": [CONTROL_KEY]},
            "allow_cpu_pools": True,
            "pools": [
                pool,
                {
                    **POOL_CONFIG,
                    "id": "pool-cpu",
                    "device_kind": "cpu",
                    "replicas": [{"id": "c1", "url": "http://127.0.0.1:9"}],
                },
            ],
        }
    )[0]


# -- Nvml: one device at a time -------------------------------------------------------


def test_readings_come_from_nvml_and_utilisation_is_a_ratio() -> None:
    reading = Nvml(FakeNvml(two_gpus())).read(0)
    assert reading.index == 0
    assert (reading.name, reading.uuid) == ("NVIDIA L4", "GPU-aaaa")
    assert reading.utilization == pytest.approx(0.87)
    assert reading.memory_used_bytes == 18 * GIB
    assert reading.memory_free_bytes == 6 * GIB
    assert reading.memory_total_bytes == 24 * GIB
    assert reading.error is None


def test_nvml_that_cannot_start_gives_no_figures_and_says_why() -> None:
    fake = FakeNvml(two_gpus(), init_failure=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    nvml = Nvml(fake)
    assert nvml.unavailable == "NVML unavailable: NVML Shared Library Not Found"
    reading = nvml.read(0)
    figures = (reading.utilization, reading.memory_used_bytes, reading.memory_total_bytes)
    assert figures == (None, None, None)
    assert reading.error == "NVML unavailable: NVML Shared Library Not Found"
    nvml.read(1)
    assert fake.calls == ["nvmlInit"]  # initialised once, never retried, nothing else asked


def test_a_driver_that_is_not_loaded_is_named() -> None:
    nvml = Nvml(FakeNvml({}, init_failure=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert nvml.unavailable == "NVML unavailable: Driver Not Loaded"


def test_without_the_package_nvml_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # what a missing module looks like
    nvml = Nvml()
    assert nvml.unavailable == "NVML unavailable: the nvidia-ml-py package is not installed"


def test_a_device_nvml_does_not_have_is_absent_alone() -> None:
    nvml = Nvml(FakeNvml(two_gpus()))
    missing = nvml.read(3)
    assert missing.error == "device 3: Invalid Argument"
    assert (missing.name, missing.utilization, missing.memory_used_bytes) == (None, None, None)
    assert nvml.read(1).utilization == pytest.approx(0.03)


def test_a_figure_the_device_cannot_give_is_absent_and_the_rest_stay() -> None:
    gpus = two_gpus()
    gpus[0].utilization_failure = pynvml.NVML_ERROR_NOT_SUPPORTED
    reading = Nvml(FakeNvml(gpus)).read(0)
    assert reading.utilization is None
    assert reading.memory_used_bytes == 18 * GIB
    assert reading.error == "utilization: Not Supported"


def test_a_lost_gpu_has_no_figures() -> None:
    gpus = two_gpus()
    gpus[0].failure = pynvml.NVML_ERROR_GPU_IS_LOST
    reading = Nvml(FakeNvml(gpus)).read(0)
    assert (reading.name, reading.utilization, reading.memory_used_bytes) == (None, None, None)
    assert reading.error is not None and "GPU is lost" in reading.error


def test_readings_are_reused_for_a_second() -> None:
    gpus = two_gpus()
    fake, clock = FakeNvml(gpus), Clock()
    nvml = Nvml(fake, clock=clock)
    assert nvml.read(0).utilization == pytest.approx(0.87)
    gpus[0].busy_percent = 50
    clock.now += 0.5
    assert nvml.read(0).utilization == pytest.approx(0.87)
    assert fake.calls.count("nvmlDeviceGetHandleByIndex") == 1
    clock.now += 0.5
    assert nvml.read(0).utilization == pytest.approx(0.5)
    assert fake.calls.count("nvmlDeviceGetHandleByIndex") == 2


# -- GpuMonitor: pools, replicas and devices ------------------------------------------


@pytest.mark.parametrize(
    ("url", "here"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://127.3.4.5:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("http://10.0.0.5:8080", False),
        ("http://gpu-box.internal:8080", False),
    ],
)
def test_only_engines_on_this_host_are_read(url: str, here: bool) -> None:
    config = gpu_config({"id": "r1", "url": url})
    assert on_this_host(config.pools[0].replicas[0]) is here


def test_an_engine_the_daemon_starts_is_on_this_host_whatever_its_url() -> None:
    replica = ReplicaConfig.model_validate(
        {"id": "r1", "url": "http://10.0.0.5:8080", "command": ["serve-engine"]}
    )
    assert on_this_host(replica) is True


def test_a_cpu_pool_has_no_gpu_telemetry() -> None:
    fake = FakeNvml(two_gpus())
    gpus = GpuMonitor(gpu_config(), Nvml(fake), background=False).pool("pool-cpu")
    assert (gpus.status, gpus.reason, gpus.devices) == (
        GpuTelemetryStatus.NOT_APPLICABLE,
        CPU_POOL,
        (),
    )
    assert fake.calls == []  # NVML is not even started for it


def test_a_pool_whose_engines_run_elsewhere_has_none() -> None:
    config = gpu_config({"id": "r1", "url": "http://10.0.0.5:8080"})
    gpus = GpuMonitor(config, Nvml(FakeNvml(two_gpus())), background=False).pool("pool-a")
    assert (gpus.status, gpus.reason) == (GpuTelemetryStatus.NOT_APPLICABLE, REMOTE_ONLY)


def test_pool_devices_name_the_replicas_that_use_them() -> None:
    config = gpu_config(
        {"id": "r1", "url": "http://127.0.0.1:9001", "devices": [1]},
        {"id": "r2", "url": "http://127.0.0.1:9002"},
        {"id": "far", "url": "http://10.0.0.5:9003", "devices": [0]},
    )
    gpus = GpuMonitor(config, Nvml(FakeNvml(two_gpus())), background=False).pool("pool-a")
    assert gpus.status is GpuTelemetryStatus.AVAILABLE
    assert gpus.reason is None
    assert [(d.reading.index, d.replicas) for d in gpus.devices] == [
        (0, ("r2",)),
        (1, ("r1", "r2")),
    ]
    assert gpus.devices[1].reading.memory_used_bytes == 2 * GIB


def test_unavailable_nvml_makes_the_gpu_pool_unavailable() -> None:
    fake = FakeNvml({}, init_failure=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    gpus = GpuMonitor(gpu_config(), Nvml(fake), background=False).pool("pool-a")
    assert gpus.status is GpuTelemetryStatus.UNAVAILABLE
    assert gpus.reason == "NVML unavailable: NVML Shared Library Not Found"
    assert gpus.devices == ()


def test_the_daemons_monitor_never_waits_for_nvml() -> None:
    """NVML runs on the sampler thread: while its initialisation hangs (a host without
    persistence mode, a GPU fallen off the bus) the pool answers at once, saying why it
    has no figures, and it has them once NVML answers."""
    release = threading.Event()
    fake = FakeNvml(two_gpus())
    real_init = fake.nvmlInit

    def hanging_init() -> None:
        release.wait(10)
        real_init()

    fake.nvmlInit = hanging_init  # type: ignore[method-assign]
    monitor = GpuMonitor(gpu_config(), Nvml(fake))
    began = time.monotonic()
    waiting = monitor.pool("pool-a")
    assert time.monotonic() - began < 0.5
    assert (waiting.status, waiting.reason) == (GpuTelemetryStatus.UNAVAILABLE, NOT_READ_YET)
    assert list(monitor.readings("pool-a")) == []
    assert threading.current_thread() is threading.main_thread()
    release.set()
    deadline = time.monotonic() + 5
    while monitor.pool("pool-a").status is not GpuTelemetryStatus.AVAILABLE:
        assert time.monotonic() < deadline, "the sampler never read NVML"
        time.sleep(0.01)
    assert [(r, reading.index) for r, reading in monitor.readings("pool-a")] == [
        ("r1", 0),
        ("r1", 1),
    ]


# -- the gauges -----------------------------------------------------------------------


def test_orch_3028_gpu_gauges_follow_the_readings_and_go_when_a_reading_does() -> None:
    config = gpu_config(
        {"id": "r1", "url": "http://127.0.0.1:9001", "devices": [0]},
        {"id": "r2", "url": "http://127.0.0.1:9002", "devices": [1]},
    )
    gpus, clock = two_gpus(), Clock()
    registry = CollectorRegistry()
    monitor = GpuMonitor(config, Nvml(FakeNvml(gpus), clock=clock), background=False)
    gauges = Gauges(Metrics(registry), monitor)
    orchestrator = core(config)

    def sample(name: str, replica: str, device: str) -> float | None:
        labels = {
            "engine": "llamacpp",
            "engine_version": "unknown",
            "pool_id": "pool-a",
            "replica_id": replica,
            "device": device,
        }
        return registry.get_sample_value(name, labels)

    gauges.refresh(orchestrator, 0)
    assert sample("gpu_utilization", "r1", "0") == pytest.approx(0.87)
    assert sample("vram_used_bytes", "r1", "0") == 18 * GIB
    assert sample("gpu_utilization", "r2", "1") == pytest.approx(0.03)
    assert sample("vram_used_bytes", "r2", "1") == 2 * GIB
    assert sample("gpu_utilization", "r1", "1") is None  # r1 does not use device 1

    gpus[0].utilization_failure = pynvml.NVML_ERROR_NOT_SUPPORTED
    gpus[1].failure = pynvml.NVML_ERROR_GPU_IS_LOST
    clock.now += 1
    gauges.refresh(orchestrator, 1_000)
    assert sample("gpu_utilization", "r1", "0") is None
    assert sample("vram_used_bytes", "r1", "0") == 18 * GIB
    assert sample("gpu_utilization", "r2", "1") is None
    assert sample("vram_used_bytes", "r2", "1") is None


# -- the daemon: health and /metrics --------------------------------------------------


def _read_health(client: Any, pool_id: str) -> dict[str, Any]:
    """The pool's gpu_telemetry once the daemon's sampler thread has read NVML."""
    deadline = time.monotonic() + 10
    while True:
        body: dict[str, Any] = client.get(f"/v1/pools/{pool_id}/health", key=CONTROL_KEY).json()
        telemetry = body["gpu_telemetry"]
        if telemetry.get("reason") != NOT_READ_YET or time.monotonic() > deadline:
            return telemetry
        time.sleep(0.02)


def _gpu_samples(text: str) -> list[Any]:
    return [
        sample
        for family in text_string_to_metric_families(text)
        if family.name in {"gpu_utilization", "vram_used_bytes"}
        for sample in family.samples
    ]


def test_orch_3028_orch_2103_daemon_with_fake_nvml_shows_gpus_in_health_and_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon imports `pynvml` itself; here it gets the fake one."""
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(two_gpus()))
    client = make_client(gpu_config())
    assert _read_health(client, "pool-a") == {
        "status": "available",
        "devices": [
            {
                "device": 0,
                "replicas": ["r1"],
                "name": "NVIDIA L4",
                "uuid": "GPU-aaaa",
                "utilization": 0.87,
                "memory_used_bytes": 18 * GIB,
                "memory_free_bytes": 6 * GIB,
                "memory_total_bytes": 24 * GIB,
            },
            {
                "device": 1,
                "replicas": ["r1"],
                "name": "NVIDIA L4",
                "uuid": "GPU-bbbb",
                "utilization": 0.03,
                "memory_used_bytes": 2 * GIB,
                "memory_free_bytes": 22 * GIB,
                "memory_total_bytes": 24 * GIB,
            },
        ],
    }
    samples = _gpu_samples(client.get("/metrics", key=None).text)
    assert {(s.name, s.labels["replica_id"], s.labels["device"]) for s in samples} == {
        ("gpu_utilization", "r1", "0"),
        ("gpu_utilization", "r1", "1"),
        ("vram_used_bytes", "r1", "0"),
        ("vram_used_bytes", "r1", "1"),
    }
    assert {s.labels["pool_id"] for s in samples} == {"pool-a"}


@pytest.mark.skipif(
    Nvml().unavailable is None, reason="NVML works on this host; this test is for hosts without"
)
def test_orch_3028_orch_2103_daemon_without_nvml_says_why_and_exports_no_gpu_series() -> None:
    """On this GPU-less host: the real pynvml, the real daemon."""
    client = make_client(gpu_config())
    gpu_pool = _read_health(client, "pool-a")
    assert gpu_pool["status"] == "unavailable"
    assert gpu_pool["reason"].startswith("NVML unavailable: ")
    assert "devices" not in gpu_pool
    cpu_pool = client.get("/v1/pools/pool-cpu/health", key=CONTROL_KEY).json()["gpu_telemetry"]
    assert cpu_pool == {"status": "not_applicable", "reason": CPU_POOL}
    assert _gpu_samples(client.get("/metrics", key=None).text) == []
