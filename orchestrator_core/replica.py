"""One replica as the core knows it: slot accounting, life cycle, and its history.

A replica is one engine server of a pool. Its slot count comes from the engine when it
reports one (ORCH-3019), else from config, else 1. The core counts its own busy slots; the
engine's reported free slots only reveal work the core did not send (`external`), measured
at report time, so a report that lags behind a dispatch never frees a slot twice.

Its life cycle (`replica_states`) is driven by what the server reports back after carrying
out the core's actions: a preload's outcome (`ReplicaReport` or `PreloadFailure`), a
probe's answer (`ProbeReport`). Every report names the `generation` of the action it
answers; the generation changes with every new attempt and every stop, so a late answer
to an action the core has since moved past is recognised and dropped. `epoch` counts the
engine's lives: a replica that stops being live loses its KV cache, so a session's warm
replica is only warm while the epoch it ran on is current (ORCH-3009).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orchestrator_core.replica_states import ReplicaState
from orchestrator_core.restarts import RestartPolicy, RestartTracker
from orchestrator_core.specs import ReplicaSpec


class PreloadOutcome(StrEnum):
    """How a preload attempt ended (ORCH-3002); the preload-outcome metric's label."""

    SUCCESS = "success"
    CHECKSUM_MISMATCH = "checksum_mismatch"
    INSUFFICIENT_HEADROOM = "insufficient_headroom"
    ENGINE_START_FAILED = "engine_start_failed"
    HEALTH_TIMEOUT = "health_timeout"
    ENGINE_UNAVAILABLE = "engine_unavailable"
    ENGINE_MISMATCH = "engine_mismatch"
    SELFTEST_FAILED = "selftest_failed"


class FailureClass(StrEnum):
    """What a failed engine left behind says about why it failed (ORCH-3053)."""

    CRASH = "crash"
    DEVICE_OOM = "device_oom"
    HOST_OOM = "host_oom"
    DRIVER_RESET = "driver_reset"
    ECC_ERROR = "ecc_error"

    @property
    def device_fault(self) -> bool:
        """Driver resets and ECC errors: a device with a hardware fault."""
        return self in (FailureClass.DRIVER_RESET, FailureClass.ECC_ERROR)

    @property
    def out_of_memory(self) -> bool:
        """A device or host ran out of memory."""
        return self in (FailureClass.DEVICE_OOM, FailureClass.HOST_OOM)


@dataclass(frozen=True, slots=True)
class ReplicaReport:
    """What a successful preload learned about the engine (ORCH-3019, ORCH-3032).

    `slots_total` is the engine's (or the configured) slot count; `devices` the devices it
    really runs on, when known: a replica outside its pool's mask is never used (ORCH-3011).
    """

    engine_version: str | None = None
    model_digest: str | None = None
    slots_total: int | None = None
    devices: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class PreloadFailure:
    """A failed preload: the step that failed, why, and whether the engine still answers
    (an engine reached by URL may be live while it cannot take work)."""

    outcome: PreloadOutcome
    message: str
    live: bool = False


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """A health probe's answer. `exited`: an engine the daemon runs is gone (with the
    `failure_class` its last output shows); `slots_free`: the engine's own figure, when it
    reports one; `kv_usage`: the share of its KV cache in use, when it reports one."""

    live: bool
    ready: bool
    exited: bool = False
    failure_class: FailureClass | None = None
    slots_free: int | None = None
    kv_usage: float | None = None


class Replica:
    """The core's view of one replica: reported state, slot accounting, life cycle."""

    __slots__ = (
        "attempted",
        "busy",
        "configured_slots",
        "devices",
        "engine_version",
        "epoch",
        "external",
        "failure_class",
        "generation",
        "kv_usage",
        "last_error",
        "last_preload_outcome",
        "live",
        "managed",
        "model_digest",
        "model_ref",
        "probe_due_ms",
        "probe_failures",
        "probe_pending",
        "probe_successes",
        "replica_id",
        "reported_devices",
        "restarts",
        "retry_at_ms",
        "running",
        "slo_scopes",
        "slots_total",
        "state",
        "tracker",
        "usable",
    )

    def __init__(
        self, spec: ReplicaSpec, pool_devices: tuple[int, ...], policy: RestartPolicy
    ) -> None:
        self.replica_id = spec.replica_id
        self.devices = frozenset(spec.devices if spec.devices is not None else pool_devices)
        self.configured_slots = spec.slots_total
        self.slots_total = spec.slots_total if spec.slots_total is not None else 1
        self.managed = spec.managed
        # Only engines the daemon runs get a circuit breaker: one reached by URL is
        # re-probed, never restarted, so it cannot storm (ORCH-3053).
        self.tracker = RestartTracker(policy if spec.managed else policy.without_breaker())
        self.state = ReplicaState.DEFERRED
        self.generation = 0
        self.model_ref = ""
        self.usable = False
        self.live = False
        self.engine_version: str | None = None
        self.model_digest: str | None = None
        self.reported_devices: frozenset[int] | None = None
        self.retry_at_ms: int | None = None
        self.probe_due_ms: int | None = None
        #: A probe was sent and not answered yet.
        self.probe_pending = False
        self.probe_failures = 0
        self.probe_successes = 0
        self.external = 0
        self.busy = 0
        self.epoch = 0
        self.running: dict[str, None] = {}
        #: Where a task that ends here counts toward SLOs: its pool and its replica set.
        self.slo_scopes: tuple[str, ...] = ()
        self.kv_usage: float | None = None
        self.restarts = 0
        self.attempted = False
        self.last_error: str | None = None
        self.last_preload_outcome: PreloadOutcome | None = None
        self.failure_class: FailureClass | None = None

    @property
    def ready(self) -> bool:
        """Preloaded and answering its probes: it may take work."""
        return self.state is ReplicaState.READY

    @property
    def slots_free(self) -> int:
        """Slots the core may still fill (never negative)."""
        free = self.slots_total - self.busy - self.external
        return free if free > 0 else 0

    def within(self, mask: frozenset[int]) -> bool:
        """Whether every device this replica uses lies inside `mask` (ORCH-3011)."""
        used = self.reported_devices if self.reported_devices is not None else self.devices
        return used <= mask

    def set_live(self, live: bool) -> bool:
        """Record whether the engine answers; True when it just stopped (its KV is gone,
        a new epoch begins)."""
        stopped = self.live and not live
        if stopped:
            self.epoch += 1
        self.live = live
        if not live:
            self.external = 0
        return stopped

    def take_report(self, report: ReplicaReport) -> None:
        """What a successful preload learned: versions, slots, devices."""
        self.engine_version = report.engine_version
        self.model_digest = report.model_digest
        if report.slots_total is not None:
            self.slots_total = report.slots_total
        else:
            configured = self.configured_slots
            self.slots_total = configured if configured is not None else 1
        devices = report.devices
        self.reported_devices = None if devices is None else frozenset(devices)
        self.external = 0

    def take_slots(self, slots_free: int | None) -> None:
        """The engine's own free-slot figure: what it runs beyond our tasks (ORCH-3019)."""
        if slots_free is None:
            self.external = 0
        else:
            self.external = max(0, self.slots_total - slots_free - self.busy)

    def next_generation(self) -> int:
        """Start a new attempt or stop: answers to earlier actions become stale."""
        self.generation += 1
        return self.generation
