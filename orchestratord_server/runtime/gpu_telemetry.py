"""GPU telemetry from NVML for the GPU pools of this host (ORCH-3028, ORCH-2103).

`Nvml` reads one device by its NVML index (the index `nvidia-smi` shows, which device
masks use): utilisation, memory, name and UUID. It initialises NVML once, on first use,
through the `pynvml` module of the `nvidia-ml-py` package, and keeps each reading for
`MAX_AGE_S`, so scrapes and health reads in the same second cost one round of NVML calls.
`GpuMonitor` knows which devices each replica of a GPU pool uses and answers per pool from
the last round of readings, which a sampler thread takes every `MAX_AGE_S`: NVML calls
can take seconds (initialisation on a host without persistence mode, a GPU fallen off the
bus), and a scrape or a health read must never make the event loop wait for them.
What NVML cannot give is absent, never zero, and the reason is kept: no package, no
driver, a device index that does not exist, a figure the device does not support.

Only replicas on this host are read: one the daemon starts, or one reached at a loopback
URL. An engine elsewhere runs on GPUs this host's NVML cannot see.
"""

from __future__ import annotations

import importlib
import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from orchestrator_core.vocabulary import GpuTelemetryStatus
from orchestratord_server.config import Config, DeviceKind, PoolConfig, ReplicaConfig

#: How long a device's reading is reused before NVML is asked again.
MAX_AGE_S = 1.0

#: Why a CPU pool has no GPU telemetry.
CPU_POOL = "a CPU pool has no GPUs"

#: Why a GPU pool whose engines all run elsewhere has none.
REMOTE_ONLY = "no replica of the pool runs on this host"

#: Why a GPU pool has no figures yet: the sampler has not finished its first round.
NOT_READ_YET = "NVML has not been read yet"


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """One device as NVML reported it; a figure it could not give is None, and `error`
    says why."""

    index: int
    name: str | None = None
    uuid: str | None = None
    utilization: float | None = None
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    memory_total_bytes: int | None = None
    error: str | None = None


class Nvml:
    """Device readings from NVML, initialised once on first use and cached per device."""

    def __init__(
        self, nvml: ModuleType | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """`nvml` is a module with pynvml's API; the real `pynvml` is imported when None."""
        self._nvml = nvml
        self._clock = clock
        self._started = False
        self._unavailable: str | None = None
        self._cache: dict[int, tuple[float, DeviceReading]] = {}

    @property
    def unavailable(self) -> str | None:
        """Why NVML cannot be used on this host, or None when it can."""
        self._start()
        return self._unavailable

    def read(self, index: int) -> DeviceReading:
        """Device `index` as NVML reports it (at most `MAX_AGE_S` old); without figures,
        saying why, when NVML cannot be used at all."""
        reason = self.unavailable
        if reason is not None:
            return DeviceReading(index, error=reason)
        now = self._clock()
        cached = self._cache.get(index)
        if cached is not None and now - cached[0] < MAX_AGE_S:
            return cached[1]
        reading = self._measure(index)
        self._cache[index] = (now, reading)
        return reading

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError:
                self._unavailable = "NVML unavailable: the nvidia-ml-py package is not installed"
                return
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            self._unavailable = f"NVML unavailable: {exc}"

    def _measure(self, index: int) -> DeviceReading:
        nvml = self._nvml
        assert nvml is not None
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except nvml.NVMLError as exc:
            return DeviceReading(index, error=f"device {index}: {exc}")
        problems: list[str] = []

        def ask(what: str, call: Callable[[Any], Any]) -> Any:
            try:
                return call(handle)
            except nvml.NVMLError as exc:
                problems.append(f"{what}: {exc}")
                return None

        name = ask("name", nvml.nvmlDeviceGetName)
        uuid = ask("uuid", nvml.nvmlDeviceGetUUID)
        rates = ask("utilization", nvml.nvmlDeviceGetUtilizationRates)
        memory = ask("memory", nvml.nvmlDeviceGetMemoryInfo)
        return DeviceReading(
            index,
            name=name,
            uuid=uuid,
            utilization=None if rates is None else rates.gpu / 100,
            memory_used_bytes=None if memory is None else int(memory.used),
            memory_free_bytes=None if memory is None else int(memory.free),
            memory_total_bytes=None if memory is None else int(memory.total),
            error="; ".join(problems) or None,
        )


@dataclass(frozen=True, slots=True)
class PoolDevice:
    """One device of a pool and the replicas that use it."""

    reading: DeviceReading
    replicas: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PoolGpus:
    """A pool's GPU telemetry, for its health: devices only when `available`."""

    status: GpuTelemetryStatus
    reason: str | None = None
    devices: tuple[PoolDevice, ...] = ()


def on_this_host(replica: ReplicaConfig) -> bool:
    """The replica's engine runs here: the daemon starts it, or its URL is loopback."""
    if replica.managed:
        return True
    host = replica.url.host if replica.url is not None else None
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def replica_devices(pool: PoolConfig) -> dict[str, tuple[int, ...]]:
    """The devices of each replica of a GPU pool that runs on this host."""
    if pool.device_kind is not DeviceKind.gpu:
        return {}
    return {r.id: r.devices or pool.devices for r in pool.replicas if on_this_host(r)}


#: One round of readings: why NVML cannot be used (None when it can), and each device's.
Round = tuple[str | None, dict[int, DeviceReading]]


class GpuMonitor:
    """The GPU telemetry of every pool of one daemon.

    With `background` (the daemon's way) the first question starts a sampler thread that
    reads every device of this host's GPU pools once per `MAX_AGE_S`, and answers come from
    its last round (none before the first one ends). Without it, each question reads NVML
    inline (tests, scripts).
    """

    def __init__(self, config: Config, nvml: Nvml | None = None, background: bool = True) -> None:
        self._nvml = nvml or Nvml()
        self._kinds = {pool.id: pool.device_kind for pool in config.pools}
        self._replicas = {pool.id: replica_devices(pool) for pool in config.pools}
        self._indices = sorted(
            {index for devices in self._replicas.values() for d in devices.values() for index in d}
        )
        self._background = background
        self._round: Round | None = None
        self._sampler: threading.Thread | None = None
        self._starting = threading.Lock()

    def sample(self) -> None:
        """Read every device of this host's GPU pools once."""
        reason = self._nvml.unavailable
        readings = {} if reason is not None else {i: self._nvml.read(i) for i in self._indices}
        self._round = (reason, readings)

    def _last_round(self) -> Round | None:
        if not self._background:
            self.sample()
        elif self._sampler is None and self._indices:
            with self._starting:
                if self._sampler is None:
                    self._sampler = threading.Thread(
                        target=self._sample_forever, name="nvml-sampler", daemon=True
                    )
                    self._sampler.start()
        return self._round

    def _sample_forever(self) -> None:
        while True:
            self.sample()
            time.sleep(MAX_AGE_S)

    def pool(self, pool_id: str) -> PoolGpus:
        """A pool's devices as NVML last reported them, or why there are none."""
        if self._kinds[pool_id] is not DeviceKind.gpu:
            return PoolGpus(GpuTelemetryStatus.NOT_APPLICABLE, CPU_POOL)
        replicas = self._replicas[pool_id]
        if not replicas:
            return PoolGpus(GpuTelemetryStatus.NOT_APPLICABLE, REMOTE_ONLY)
        last = self._last_round()
        if last is None:
            return PoolGpus(GpuTelemetryStatus.UNAVAILABLE, NOT_READ_YET)
        reason, readings = last
        if reason is not None:
            return PoolGpus(GpuTelemetryStatus.UNAVAILABLE, reason)
        users: dict[int, list[str]] = {}
        for replica_id, indices in replicas.items():
            for index in indices:
                users.setdefault(index, []).append(replica_id)
        devices = tuple(PoolDevice(readings[index], tuple(users[index])) for index in sorted(users))
        return PoolGpus(GpuTelemetryStatus.AVAILABLE, devices=devices)

    def readings(self, pool_id: str) -> Iterator[tuple[str, DeviceReading]]:
        """(replica id, reading) for each device of each replica of the pool on this
        host, from the last round; nothing while NVML cannot be used or was not read."""
        last = self._last_round() if self._replicas[pool_id] else None
        if last is None or last[0] is not None:
            return
        for replica_id, devices in self._replicas[pool_id].items():
            for device in devices:
                yield replica_id, last[1][device]
