"""The task life cycle as one transition table (ORCH-3016, ORCH-3017, ORCH-3026).

Theory of operation
-------------------
A task is admitted into QUEUED. A dispatch places it on a replica slot (DISPATCHED); its
first token makes it STREAMING, and further tokens keep it there. Every task ends in exactly
one terminal state and never leaves it:

* ENDED    — the engine finished (finish reason `stop` or `length`);
* CANCELED — the client canceled it (or left its stream for good), or a drain did, in
             any non-terminal state;
* FAILED   — with an ErrorKind: evicted from a full queue, the pool was lost while it
             waited, the watchdog fired, the task's own deadline ran out (queued or
             running), the worker reset, the adapter reported a fault, or the daemon shut
             down before the task could end (queued or running).

The facade never assigns a state itself: every change goes through `advance`, so this
table is the whole life cycle. Events that arrive after a terminal state (a late token
after a cancel, say) are dropped by the facade before they reach the table; an event that
the table does not allow in a live state raises `IllegalTransition`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from orchestrator_core.errors import IllegalTransition
from orchestrator_core.vocabulary import TaskState

#: Where a task is in its life: the contract's TaskState, which the control-plane event
#: stream reports as it is.
State = TaskState


class Event(StrEnum):
    """What can happen to a task."""

    DISPATCH = "dispatch"
    TOKEN = "token"
    FINISH = "finish"
    CANCEL = "cancel"
    DRAIN = "drain"
    FAIL = "fail"
    EVICT = "evict"
    POOL_LOST = "pool_lost"
    TIMEOUT = "timeout"
    DEADLINE = "deadline"
    WORKER_RESET = "worker_reset"
    SHUTDOWN = "shutdown"


_Q, _D, _S = State.QUEUED, State.DISPATCHED, State.STREAMING
_END, _CAN, _FAIL = State.ENDED, State.CANCELED, State.FAILED

TRANSITIONS: Mapping[tuple[State, Event], State] = MappingProxyType(
    {
        (_Q, Event.DISPATCH): _D,
        (_Q, Event.CANCEL): _CAN,
        (_Q, Event.DRAIN): _CAN,
        (_Q, Event.EVICT): _FAIL,
        (_Q, Event.POOL_LOST): _FAIL,
        (_Q, Event.DEADLINE): _FAIL,
        (_Q, Event.SHUTDOWN): _FAIL,
        (_D, Event.TOKEN): _S,
        (_D, Event.FINISH): _END,
        (_D, Event.CANCEL): _CAN,
        (_D, Event.DRAIN): _CAN,
        (_D, Event.FAIL): _FAIL,
        (_D, Event.TIMEOUT): _FAIL,
        (_D, Event.DEADLINE): _FAIL,
        (_D, Event.WORKER_RESET): _FAIL,
        (_D, Event.SHUTDOWN): _FAIL,
        (_S, Event.TOKEN): _S,
        (_S, Event.FINISH): _END,
        (_S, Event.CANCEL): _CAN,
        (_S, Event.DRAIN): _CAN,
        (_S, Event.FAIL): _FAIL,
        (_S, Event.TIMEOUT): _FAIL,
        (_S, Event.DEADLINE): _FAIL,
        (_S, Event.WORKER_RESET): _FAIL,
        (_S, Event.SHUTDOWN): _FAIL,
    }
)

TERMINAL: frozenset[State] = frozenset({_END, _CAN, _FAIL})
RUNNING: frozenset[State] = frozenset({_D, _S})


def advance(state: State, event: Event) -> State:
    """Return the state that `event` leads to from `state`, or raise IllegalTransition."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(state.value, event.value) from None
