"""orchestrator_core: the pure, sans-I/O core of orchestratord.

The server feeds the `Orchestrator` events and the current time; it answers with frozen
decisions (admit or refuse, dispatch, abort, terminal outcomes, session evictions) that the
server carries out. No I/O, no clock, no randomness, no logging, no asyncio here.
"""

from orchestrator_core._state import TERMINAL, TRANSITIONS, Event, State, advance
from orchestrator_core.decisions import (
    Abort,
    AbortReason,
    Action,
    Admitted,
    CancelOutcome,
    CancelReason,
    CancelStatus,
    Dispatch,
    EvictionReason,
    PoolDrained,
    Refused,
    SessionEvicted,
    TaskCanceled,
    TaskEnded,
    TaskFailed,
    Terminal,
    TokenAccepted,
)
from orchestrator_core.errors import (
    HTTP_STATUS,
    RETRIABLE,
    ConfigError,
    CoreError,
    ErrorKind,
    IllegalTransition,
    InvalidArgument,
    PoolBusy,
    UnknownPool,
    UnknownReplica,
)
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.placement import ReplicaSetKey
from orchestrator_core.restarts import (
    BreakerState,
    RestartDecision,
    RestartPolicy,
    RestartTracker,
)
from orchestrator_core.seed import derive_seed
from orchestrator_core.sessions import SessionInfo
from orchestrator_core.snapshots import (
    PoolHealth,
    ReplicaHealth,
    ReplicaSetMember,
    ReplicaSetSnapshot,
    TaskView,
)
from orchestrator_core.specs import (
    FinishReason,
    KvHint,
    PoolSpec,
    Priority,
    PriorityLimits,
    QueuePolicy,
    ReplicaSpec,
    ReplicaStatus,
    SessionConfig,
    TaskSpec,
)

__all__ = [
    "HTTP_STATUS",
    "RETRIABLE",
    "TERMINAL",
    "TRANSITIONS",
    "Abort",
    "AbortReason",
    "Action",
    "Admitted",
    "BreakerState",
    "CancelOutcome",
    "CancelReason",
    "CancelStatus",
    "ConfigError",
    "CoreError",
    "Dispatch",
    "ErrorKind",
    "Event",
    "EvictionReason",
    "FinishReason",
    "IllegalTransition",
    "InvalidArgument",
    "KvHint",
    "Orchestrator",
    "PoolBusy",
    "PoolDrained",
    "PoolHealth",
    "PoolSpec",
    "Priority",
    "PriorityLimits",
    "QueuePolicy",
    "Refused",
    "ReplicaHealth",
    "ReplicaSetKey",
    "ReplicaSetMember",
    "ReplicaSetSnapshot",
    "ReplicaSpec",
    "ReplicaStatus",
    "RestartDecision",
    "RestartPolicy",
    "RestartTracker",
    "SessionConfig",
    "SessionEvicted",
    "SessionInfo",
    "State",
    "TaskCanceled",
    "TaskEnded",
    "TaskFailed",
    "TaskSpec",
    "TaskView",
    "Terminal",
    "TokenAccepted",
    "UnknownPool",
    "UnknownReplica",
    "advance",
    "derive_seed",
]
