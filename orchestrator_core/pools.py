"""The runtime state of one pool: phase, model, replicas, queue, watchdog, service model, limits.

A pool is *live* when any replica is live, and *Ready* when it is in a serving phase
(`pool_states`) and at least one replica is usable (see `placement`). Admission refuses a
pool that is not live with POOL_UNAVAILABLE and one that is live but not Ready with
POOL_UNREADY (ORCH-3018); the retry hint is when the next replica attempt is due, else the
pool's configured hint, and for a draining pool at least the rest of the drain window.

The pool serves `model_ref`, the model *as applied now*: the configured one until a
reload swaps it (ORCH-2102). `desired_ref` is what the last reload asked for; while a
reload runs, `reload` holds its progress.

Readiness, the pinned engine version and the list of usable replicas only change when a
replica's state changes or the pool changes phase; `refresh` recomputes them then, and
the slot totals of usable replicas are kept up to date on every dispatch and release, so
admission and dispatch read them without scanning. `refresh` also keeps the slots of the
widest replica, the concurrency the forecast takes a busy replica's tasks to run at
(slot counts change only with a preload, which a refresh follows).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from orchestrator_core.backlog import Backlog
from orchestrator_core.placement import ReplicaSetKey, choose_replica, pin_version, usable
from orchestrator_core.pool_states import SERVING
from orchestrator_core.prediction import ArrivalRun, ServiceModel
from orchestrator_core.queue import PoolQueue
from orchestrator_core.ratelimit import TokenBuckets
from orchestrator_core.replica import Replica
from orchestrator_core.slo_book import set_scope
from orchestrator_core.specs import PoolSpec
from orchestrator_core.vocabulary import PoolPhase, Priority, Workload
from orchestrator_core.watchdog import Watchdog

#: How many recent starts of waiting tasks pool health's prediction error is taken over.
ETA_ERRORS_KEPT = 128


@dataclass(slots=True)
class ReloadProgress:
    """A reload under way (ORCH-2102): where it goes, where it came from, what waits.

    `target` is the model being loaded (the previous one while rolling back); `loading`
    the replicas still to load, in order; `pending` a newer request that runs once this
    one has finished; `hold` an operator's drain that arrived meanwhile, honoured at the
    end.
    """

    target: str
    previous: str
    loading: list[str] = field(default_factory=list)
    pending: str | None = None
    hold: bool = False


class Pool:
    """One configured pool and everything the core tracks about it."""

    __slots__ = (
        "arrivals",
        "backlog",
        "buckets",
        "desired_ref",
        "drain_deadline_ms",
        "draining",
        "eta_errors",
        "ever_ready",
        "free_slots",
        "is_live",
        "is_ready",
        "last_error",
        "mask",
        "model_ref",
        "phase",
        "pinned_version",
        "queue",
        "reload",
        "replicas",
        "running",
        "service",
        "spec",
        "tenants",
        "total_slots",
        "usable_replicas",
        "watchdog",
        "widest_slots",
    )

    def __init__(self, spec: PoolSpec, rate_limit_clients: int) -> None:
        self.spec = spec
        self.mask = frozenset(spec.devices)
        self.replicas: dict[str, Replica] = {
            r.replica_id: Replica(r, spec.devices, spec.restart) for r in spec.replicas
        }
        self.queue = PoolQueue(
            spec.capacity,
            spec.interactive.queue_capacity,
            spec.batch.queue_capacity,
            spec.interactive_burst,
        )
        # Only completions stream tokens; an embedding or rerank answers at once at its
        # end, so the idle limit would be a second, shorter wall limit (ORCH-3016).
        streams = spec.workload is Workload.COMPLETION
        idle_ms = spec.idle_timeout_ms if streams else spec.wall_timeout_ms
        self.watchdog = Watchdog(spec.wall_timeout_ms, idle_ms)
        self.service = ServiceModel(spec.initial_service_ms, spec.ewma_alpha)
        self.backlog = Backlog()
        self.arrivals = ArrivalRun()
        self.eta_errors: deque[tuple[int, int]] = deque(maxlen=ETA_ERRORS_KEPT)
        self.buckets: dict[Priority, TokenBuckets] = {}
        for priority in Priority:
            limits = spec.limits(priority)
            if limits.rate_limit_rps is not None:
                self.buckets[priority] = TokenBuckets(
                    limits.rate_limit_rps, limits.burst, rate_limit_clients
                )
        self.tenants: dict[str, OrderedDict[str, None]] = {}
        self.phase = PoolPhase.STARTING
        self.ever_ready = False
        self.model_ref = spec.model_ref
        self.desired_ref = spec.model_ref
        self.last_error: str | None = None
        self.reload: ReloadProgress | None = None
        self.pinned_version: str | None = None
        self.draining = False
        self.drain_deadline_ms = 0
        self.running = 0
        self.usable_replicas: tuple[Replica, ...] = ()
        self.is_live = False
        self.is_ready = False
        self.total_slots = 0
        self.free_slots = 0
        self.widest_slots = 1
        self.refresh()

    @property
    def pool_id(self) -> str:
        """The pool's configured id."""
        return self.spec.pool_id

    def refresh(self) -> None:
        """Recompute the pin, the usable replicas, liveness and readiness."""
        replicas = self.replicas.values()
        self.pinned_version = pin_version(replicas, self.mask, self.pinned_version)
        self.usable_replicas = tuple(
            r
            for r in replicas
            if usable(r, self.mask, self.pinned_version, self.spec.require_same_engine_version)
        )
        for replica in replicas:
            replica.usable = replica in self.usable_replicas
            replica.slo_scopes = (self.pool_id, set_scope(self.key_of(replica).set_id))
        self.total_slots = sum(r.slots_total for r in self.usable_replicas)
        self.free_slots = sum(r.slots_free for r in self.usable_replicas)
        self.widest_slots = max(1, max((r.slots_total for r in replicas), default=1))
        self.is_live = any(r.live for r in replicas)
        self.draining = self.phase not in SERVING
        self.is_ready = bool(self.usable_replicas) and not self.draining

    def slots(self) -> tuple[int, int]:
        """(total, free) slots over usable replicas: the prediction's S and F."""
        return self.total_slots, self.free_slots

    def occupy(self, replica: Replica, task_id: str) -> None:
        """A task was placed on `replica` (a usable one with a free slot)."""
        replica.busy += 1
        replica.running[task_id] = None
        self.running += 1
        self.free_slots -= 1

    def vacate(self, replica: Replica, task_id: str) -> None:
        """A task left `replica`'s slot."""
        before = replica.slots_free
        replica.busy -= 1
        del replica.running[task_id]
        self.running -= 1
        if replica.usable:
            self.free_slots += replica.slots_free - before

    def place(self, prefer: Replica | None) -> Replica | None:
        """The replica for the next task, or None when no usable replica has a free slot.

        The caller never places on a draining pool (ORCH-3010).
        """
        return choose_replica(self.usable_replicas, prefer)

    def retry_hint_ms(self, now_ms: int) -> int:
        """How long a refused client should wait for this pool to take work again."""
        hint = self.spec.unready_retry_ms
        if self.draining:
            return max(hint, self.drain_deadline_ms - now_ms)
        due = [r.retry_at_ms for r in self.replicas.values() if r.retry_at_ms is not None]
        if due:
            return max(1, min(due) - now_ms)
        return hint

    def key_of(self, replica: Replica) -> ReplicaSetKey:
        """The replica-set key of one of this pool's replicas."""
        spec = self.spec
        return ReplicaSetKey(
            spec.engine,
            self.model_ref,
            spec.quant,
            spec.ctx_limit,
            replica.engine_version,
            spec.sampler_profile_version,
        )
