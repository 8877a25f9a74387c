"""orchestrator_core: the pure, sans-I/O core of orchestratord.

The server feeds the `Orchestrator` input events and the current time; it answers with
frozen decisions (admit or refuse, dispatch, abort, terminal outcomes, session evictions,
and what to do with engines: preload, stop, probe) that the server carries out and whose
outcomes it reports back as new inputs. Every rule lives here: tasks, queues, placement,
sessions, and the life cycles of pools and replicas. No I/O, no clock, no randomness, no
logging, no asyncio here, so a core's state is a function of its inputs: a run replays
(`journal`) and its state can be saved and restored (`persistence`).
"""

from orchestrator_core._state import TERMINAL, TRANSITIONS, Event, State, advance
from orchestrator_core.admission import not_served
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
    PoolChanged,
    Preload,
    Probe,
    Refused,
    ReplicaChanged,
    SessionEvicted,
    StopEngine,
    TaskCanceled,
    TaskEnded,
    TaskFailed,
    TaskFigures,
    Terminal,
    TokenAccepted,
)
from orchestrator_core.errors import (
    HTTP_STATUS,
    RETRIABLE,
    ConfigError,
    CoreError,
    IllegalTransition,
    InvalidArgument,
    UnknownPool,
    UnknownReplica,
)
from orchestrator_core.eta import informative_start
from orchestrator_core.inputs import Input, InputSink
from orchestrator_core.journal import Journal, replay
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.persistence import restore, snapshot
from orchestrator_core.placement import ReplicaSetKey
from orchestrator_core.pool_states import PoolEvent
from orchestrator_core.replica import (
    FailureClass,
    PreloadFailure,
    PreloadOutcome,
    ProbeReport,
    ReplicaReport,
)
from orchestrator_core.replica_states import ReplicaEvent, ReplicaState
from orchestrator_core.restarts import (
    BreakerState,
    RestartDecision,
    RestartPolicy,
    RestartTracker,
)
from orchestrator_core.seed import derive_seed
from orchestrator_core.sessions import SessionInfo
from orchestrator_core.slo import (
    GLOBAL_SCOPE,
    PriorityObjectives,
    PrioritySlo,
    SloObjectives,
    SloSnapshot,
    SloTracker,
)
from orchestrator_core.slo_book import set_scope
from orchestrator_core.specs import (
    CoreConfig,
    PoolSpec,
    PriorityLimits,
    ReplicaSpec,
    SessionConfig,
    TaskSpec,
)
from orchestrator_core.views import (
    PoolView,
    Readiness,
    ReplicaSetMember,
    ReplicaSetView,
    ReplicaView,
    Route,
    TaskView,
)
from orchestrator_core.vocabulary import (
    Determinism,
    Engine,
    ErrorKind,
    FinishReason,
    KvHint,
    PoolPhase,
    Priority,
    QueuePolicy,
    Workload,
)

__all__ = [
    "GLOBAL_SCOPE",
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
    "CoreConfig",
    "CoreError",
    "Determinism",
    "Dispatch",
    "Engine",
    "ErrorKind",
    "Event",
    "EvictionReason",
    "FailureClass",
    "FinishReason",
    "IllegalTransition",
    "Input",
    "InputSink",
    "InvalidArgument",
    "Journal",
    "KvHint",
    "Orchestrator",
    "PoolChanged",
    "PoolEvent",
    "PoolPhase",
    "PoolSpec",
    "PoolView",
    "Preload",
    "PreloadFailure",
    "PreloadOutcome",
    "Priority",
    "PriorityLimits",
    "PriorityObjectives",
    "PrioritySlo",
    "Probe",
    "ProbeReport",
    "QueuePolicy",
    "Readiness",
    "Refused",
    "ReplicaChanged",
    "ReplicaEvent",
    "ReplicaReport",
    "ReplicaSetKey",
    "ReplicaSetMember",
    "ReplicaSetView",
    "ReplicaSpec",
    "ReplicaState",
    "ReplicaView",
    "RestartDecision",
    "RestartPolicy",
    "RestartTracker",
    "Route",
    "SessionConfig",
    "SessionEvicted",
    "SessionInfo",
    "SloObjectives",
    "SloSnapshot",
    "SloTracker",
    "State",
    "StopEngine",
    "TaskCanceled",
    "TaskEnded",
    "TaskFailed",
    "TaskFigures",
    "TaskSpec",
    "TaskView",
    "Terminal",
    "TokenAccepted",
    "UnknownPool",
    "UnknownReplica",
    "Workload",
    "advance",
    "derive_seed",
    "informative_start",
    "not_served",
    "replay",
    "restore",
    "set_scope",
    "snapshot",
]
