"""What the core decides: admission results and the actions the server carries out.

Every decision is a frozen, slotted dataclass (built by `_records.quick_init`'s cheaper
`__init__`, as the core builds several per task). The server only renders them: a `Refused`
knows its HTTP status, whether a retry can help and the backoff headers (ORCH-2007,
ORCH-3025); a `Dispatch` names the replica and everything the `started` event needs
(ORCH-3029); the three terminal decisions map one-to-one to the stream's last event and
carry the task's figures (`TaskFigures`), measured on the core's one clock.

Pool and replica actions tell the server what to do with engines: `Preload` a replica
(verify, start, health, properties, self-test), `StopEngine`, `Probe` its health. Each
names the replica's `generation`, which its answer must quote. `ReplicaChanged` and
`PoolChanged` report life-cycle moves, for logs and operators; they need no answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orchestrator_core._records import quick_init
from orchestrator_core.errors import HTTP_STATUS, RETRIABLE
from orchestrator_core.replica import FailureClass, PreloadOutcome
from orchestrator_core.replica_states import ReplicaState
from orchestrator_core.restarts import BreakerState
from orchestrator_core.vocabulary import ErrorKind, FinishReason, PoolPhase, QueuePolicy


class CancelReason(StrEnum):
    """Who canceled a task: its client, its client going away, or a drain of its pool."""

    CLIENT = "client"
    DISCONNECT = "disconnect"
    DRAIN = "drain"


class AbortReason(StrEnum):
    """Why the server must close a running task's upstream request."""

    CANCELED = "canceled"
    DRAINED = "drained"
    TIMEOUT = "timeout"
    FAILED = "failed"
    SHUTDOWN = "shutdown"


class EvictionReason(StrEnum):
    """Why a session was forgotten (ORCH-3021, ORCH-3022)."""

    TTL = "ttl"
    TURNS = "turns"
    KV_BUDGET = "kv_budget"
    CAPACITY = "capacity"
    DELETED = "deleted"


class CancelStatus(StrEnum):
    """What a cancel request found (the server answers 404 only for UNKNOWN)."""

    UNKNOWN = "unknown"
    ALREADY_TERMINAL = "already_terminal"
    CANCELED_QUEUED = "canceled_queued"
    CANCELED_RUNNING = "canceled_running"


def _retry_after_s(backoff_ms: int) -> int:
    return max(1, -(-backoff_ms // 1000))


@quick_init
@dataclass(frozen=True, slots=True)
class TaskFigures:
    """A task's figures when it ended, all from the core's clock (ORCH-3027, ORCH-3041).

    `queue_time_ms`: admission to dispatch (to the end, for a task that never left the
    queue); `decode_ms`: dispatch to the end (None when never dispatched);
    `first_token_ms`: dispatch to the first token (None without a token); `tokens_in`:
    the prompt tokens the engine reported (None when it did not); `tokens_out`: the
    tokens the client was sent.
    """

    queue_time_ms: int
    decode_ms: int | None
    first_token_ms: int | None
    tokens_in: int | None
    tokens_out: int


@quick_init
@dataclass(frozen=True, slots=True)
class Dispatch:
    """Start a task on a replica; carries the `started` event's fields (ORCH-3029).

    The engine and request fields are the server's already (pool spec, request); this adds
    what only the core knows: the replica, the model it serves, its versions, the seed,
    KV warmth and the queue figures. `kv_migrated` is False when a returning session's turn
    runs cold (its KV stayed where its last turn ran, or was lost with that replica: KV is
    never migrated, ORCH-3023), None for a new session or a warm turn.
    """

    task_id: str
    pool_id: str
    replica_id: str
    model_ref: str
    engine_version: str | None
    model_digest: str | None
    seed: int
    kv_warmth: bool
    queue_time_ms: int
    queue_position: int
    predicted_start_ms: int
    kv_migrated: bool | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class TokenAccepted:
    """A token the server may emit, with its 0-based index (no gaps)."""

    task_id: str
    index: int


@quick_init
@dataclass(frozen=True, slots=True)
class TaskEnded:
    """The engine finished the task: the stream ends with `end`."""

    task_id: str
    pool_id: str
    replica_id: str
    finish_reason: FinishReason
    figures: TaskFigures


@quick_init
@dataclass(frozen=True, slots=True)
class TaskCanceled:
    """The task was canceled: the stream ends with `end`, finish reason `canceled`."""

    task_id: str
    pool_id: str
    replica_id: str | None
    reason: CancelReason
    figures: TaskFigures

    @property
    def finish_reason(self) -> FinishReason:
        """Always `canceled`; a canceled task's stream ends normally (ORCH-3017)."""
        return FinishReason.CANCELED


@quick_init
@dataclass(frozen=True, slots=True)
class TaskFailed:
    """The task failed: the stream ends with `error` carrying `kind`; `backoff_ms` > 0 is
    the hint of when a retry can succeed (rendered as the error's `retry_after_ms`)."""

    task_id: str
    pool_id: str
    replica_id: str | None
    engine: str
    kind: ErrorKind
    message: str
    figures: TaskFigures
    failure_class: FailureClass | None = None
    backoff_ms: int = 0

    @property
    def retriable(self) -> bool:
        """Whether a retry of the same work can help (ORCH-3025)."""
        return self.kind in RETRIABLE


@quick_init
@dataclass(frozen=True, slots=True)
class Abort:
    """Close the upstream engine request of a task that no longer runs."""

    task_id: str
    pool_id: str
    replica_id: str
    reason: AbortReason


@quick_init
@dataclass(frozen=True, slots=True)
class SessionEvicted:
    """Forget a session; tell the engine to drop its KV where it can (ORCH-2005, ORCH-3022)."""

    session_id: str
    reason: EvictionReason
    kv_bytes: int
    pool_id: str | None
    replica_id: str | None


@quick_init
@dataclass(frozen=True, slots=True)
class Preload:
    """Make a replica Ready on `model_ref`: verify the model (ORCH-3037), check headroom
    (ORCH-3003), start the engine if the daemon runs it, check health and properties, decode
    and self-test (ORCH-3002, ORCH-3049). Answer with the outcome, quoting `generation`."""

    pool_id: str
    replica_id: str
    generation: int
    model_ref: str


@quick_init
@dataclass(frozen=True, slots=True)
class StopEngine:
    """Stop the replica's engine if the daemon runs it (cancelling any preload of it under
    way); the next `Preload` of the replica starts it again."""

    pool_id: str
    replica_id: str


@quick_init
@dataclass(frozen=True, slots=True)
class Probe:
    """Ask the replica's engine for its health; answer quoting `generation`."""

    pool_id: str
    replica_id: str
    generation: int


@quick_init
@dataclass(frozen=True, slots=True)
class ReplicaChanged:
    """A replica moved in its life cycle (ORCH-3038, ORCH-3053): for logs and operators.

    `reason` says why (a failed preload's message, what a probe found, a broken stream);
    `retry_in_ms`, `breaker` and `attempt` describe the next attempt of a replica that
    failed; `failure_class` what its engine left behind; `outcome` the preload outcome
    when a preload ended.
    """

    pool_id: str
    replica_id: str
    state: ReplicaState
    previous: ReplicaState
    reason: str | None = None
    retry_in_ms: int | None = None
    breaker: BreakerState | None = None
    attempt: int | None = None
    failure_class: FailureClass | None = None
    outcome: PreloadOutcome | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class PoolChanged:
    """A pool moved in its life cycle (ORCH-2101, ORCH-2102): for logs and operators.

    `model_ref` is the model it serves; `detail` says what happened (a reload's progress,
    why it rolled back).
    """

    pool_id: str
    phase: PoolPhase
    previous: PoolPhase
    model_ref: str
    detail: str | None = None


Terminal = TaskEnded | TaskCanceled | TaskFailed
Action = (
    Dispatch
    | TaskEnded
    | TaskCanceled
    | TaskFailed
    | Abort
    | SessionEvicted
    | Preload
    | StopEngine
    | Probe
    | ReplicaChanged
    | PoolChanged
)


@quick_init
@dataclass(frozen=True, slots=True)
class Admitted:
    """The task is queued (HTTP 202).

    `backoff_ms` is 0 while the queue still has room after this admission; when this
    admission filled the queue (or had to evict another task to fit), it is the queue-full
    backoff a next newcomer would be told: a hint to slow down (ORCH-2007). `evicted` is
    the terminal decision of the task that made room (ORCH-3005).
    """

    task_id: str
    pool_id: str
    queue_position: int
    predicted_start_ms: int
    backoff_ms: int
    seed: int
    evicted: TaskFailed | None = None

    def headers(self) -> dict[str, str]:
        """The queue headers of the 202 response (ORCH-2007)."""
        return {
            "X-Queue-Position": str(self.queue_position),
            "X-Queue-ETA-Ms": str(self.predicted_start_ms),
        }


@quick_init
@dataclass(frozen=True, slots=True)
class Refused:
    """The task is not admitted; the server renders this as the error envelope.

    Retriable refusals carry `backoff_ms` >= 1 (rendered as `Retry-After` and
    `X-Backoff-Ms`); the others carry 0 and no backoff headers, since retrying cannot help.
    `field` names the offending request field of an INVALID_PARAMS refusal.
    """

    task_id: str
    kind: ErrorKind
    message: str
    backoff_ms: int
    pool_id: str | None = None
    engine: str | None = None
    policy: QueuePolicy | None = None
    field: str | None = None

    @property
    def status(self) -> int:
        """The HTTP status of this refusal."""
        return HTTP_STATUS[self.kind]

    @property
    def retriable(self) -> bool:
        """Whether coming back later can succeed (ORCH-3025)."""
        return self.kind in RETRIABLE

    @property
    def retry_after_s(self) -> int | None:
        """`Retry-After` in whole seconds (at least 1), or None when not retriable."""
        return _retry_after_s(self.backoff_ms) if self.retriable else None

    def headers(self) -> dict[str, str]:
        """The backpressure headers of this refusal (ORCH-2007); a queue-full refusal also
        says when the queue is predicted to have room (`X-Queue-ETA-Ms`)."""
        if not self.retriable:
            return {}
        headers = {
            "Retry-After": str(_retry_after_s(self.backoff_ms)),
            "X-Backoff-Ms": str(self.backoff_ms),
        }
        if self.policy is not None:
            headers["X-Queue-ETA-Ms"] = str(self.backoff_ms)
        return headers


@quick_init
@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """The result of a cancel request (ORCH-3017, ORCH-3026).

    `canceled` is the terminal decision when this call canceled the task; `abort` is set
    when the task was running and its upstream request must be closed; `terminal` is the
    earlier outcome when the task had already ended (None once it has been reaped).
    """

    status: CancelStatus
    canceled: TaskCanceled | None = None
    abort: Abort | None = None
    terminal: Terminal | None = None
