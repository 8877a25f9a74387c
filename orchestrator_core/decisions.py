"""What the core decides: admission results and the actions the server carries out.

Every decision is a frozen, slotted dataclass. The server only renders them: a `Refused`
knows its HTTP status, whether a retry can help and the backoff headers (ORCH-2007,
ORCH-3025); a `Dispatch` names the replica and everything the `started` event needs
(ORCH-3029); the three terminal decisions map one-to-one to the stream's last event.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orchestrator_core.errors import HTTP_STATUS, RETRIABLE, ErrorKind
from orchestrator_core.specs import FinishReason, QueuePolicy


class CancelReason(StrEnum):
    """Who canceled a task: its client, or a drain of its pool."""

    CLIENT = "client"
    DRAIN = "drain"


class AbortReason(StrEnum):
    """Why the server must close a running task's upstream request."""

    CANCELED = "canceled"
    DRAINED = "drained"
    TIMEOUT = "timeout"


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


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Start a task on a replica; carries the `started` event's fields (ORCH-3029).

    The engine, model and request fields are the server's already (pool spec, request);
    this adds what only the core knows: the replica, its versions, seed, KV warmth and the
    queue figures.
    """

    task_id: str
    pool_id: str
    replica_id: str
    engine_version: str | None
    model_digest: str | None
    seed: int
    kv_warmth: bool
    queue_time_ms: int
    queue_position: int
    predicted_start_ms: int
    kv_migrated: bool = False


@dataclass(frozen=True, slots=True)
class TokenAccepted:
    """A token the server may emit, with its 0-based index (no gaps)."""

    task_id: str
    index: int


@dataclass(frozen=True, slots=True)
class TaskEnded:
    """The engine finished the task: the stream ends with `end`."""

    task_id: str
    pool_id: str
    replica_id: str
    finish_reason: FinishReason
    tokens_in: int
    tokens_out: int
    queue_time_ms: int
    decode_ms: int
    first_token_ms: int | None


@dataclass(frozen=True, slots=True)
class TaskCanceled:
    """The task was canceled: the stream ends with `end`, finish reason `canceled`."""

    task_id: str
    pool_id: str
    replica_id: str | None
    reason: CancelReason

    @property
    def finish_reason(self) -> FinishReason:
        """Always `canceled`; a canceled task's stream ends normally (ORCH-3017)."""
        return FinishReason.CANCELED


@dataclass(frozen=True, slots=True)
class TaskFailed:
    """The task failed: the stream ends with `error` carrying `kind`."""

    task_id: str
    pool_id: str
    replica_id: str | None
    engine: str
    kind: ErrorKind
    message: str

    @property
    def retriable(self) -> bool:
        """Whether a retry of the same work can help (ORCH-3025)."""
        return self.kind in RETRIABLE


@dataclass(frozen=True, slots=True)
class Abort:
    """Close the upstream engine request of a task that no longer runs."""

    task_id: str
    pool_id: str
    replica_id: str
    reason: AbortReason


@dataclass(frozen=True, slots=True)
class SessionEvicted:
    """Forget a session; tell the engine to drop its KV where it can (ORCH-2005, ORCH-3022)."""

    session_id: str
    reason: EvictionReason
    kv_bytes: int
    pool_id: str | None
    replica_id: str | None


@dataclass(frozen=True, slots=True)
class PoolDrained:
    """A draining pool has no task left; a reload may proceed (ORCH-2101)."""

    pool_id: str


Terminal = TaskEnded | TaskCanceled | TaskFailed
Action = Dispatch | TaskEnded | TaskCanceled | TaskFailed | Abort | SessionEvicted | PoolDrained


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
        headers = {"Retry-After": str(_retry_after_s(self.backoff_ms)),
                   "X-Backoff-Ms": str(self.backoff_ms)}
        if self.policy is not None:
            headers["X-Queue-ETA-Ms"] = str(self.backoff_ms)
        return headers


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
