"""The replica life cycle as one transition table (ORCH-3002, ORCH-3038, ORCH-3053).

Theory of operation
-------------------
A replica of a pool that preloads starts PRELOADING: the server verifies, starts and
self-tests its engine and reports the outcome. A replica of a `preload: false` pool waits
DEFERRED until the first task is routed to the pool.

A successful preload makes it READY: it takes work and is probed every health interval. A
failed probe takes it out of placement at once (SUSPECT); two good probes in a row bring it
back, three failed ones in a row mean it is lost. A lost replica, like one whose preload
failed, waits BACKING_OFF until its next attempt (exponential backoff); when the circuit
breaker trips it waits BREAKER_OPEN instead, and the attempt after that is the half-open
trial. A stream that breaks on the replica, or its engine exiting, loses it at once.

A reload HOLDs every replica of its pool (its engine stopped) and then LOADs them one by
one; the same happens for a rollback. Every change goes through `advance_replica`; an
event the table does not allow raises `IllegalTransition`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from orchestrator_core.errors import IllegalTransition


class ReplicaState(StrEnum):
    """Where a replica is in its life."""

    DEFERRED = "deferred"
    PRELOADING = "preloading"
    READY = "ready"
    SUSPECT = "suspect"
    BACKING_OFF = "backing_off"
    BREAKER_OPEN = "breaker_open"
    HELD = "held"


class ReplicaEvent(StrEnum):
    """What can happen to a replica."""

    WANTED = "wanted"
    ATTEMPT = "attempt"
    LOAD = "load"
    PRELOADED = "preloaded"
    PRELOAD_FAILED = "preload_failed"
    PRELOAD_TRIPPED = "preload_tripped"
    PROBE_OK = "probe_ok"
    PROBE_FAILED = "probe_failed"
    RECOVERED = "recovered"
    LOST = "lost"
    TRIPPED = "tripped"
    HOLD = "hold"


_DEF, _PRE, _RDY = ReplicaState.DEFERRED, ReplicaState.PRELOADING, ReplicaState.READY
_SUS, _BACK, _OPEN = ReplicaState.SUSPECT, ReplicaState.BACKING_OFF, ReplicaState.BREAKER_OPEN
_HELD = ReplicaState.HELD

#: A replica in these states has an engine the pool manager keeps probing.
PROBED: frozenset[ReplicaState] = frozenset({_RDY, _SUS})
#: A replica in these states waits for a timer to start its next attempt.
WAITING: frozenset[ReplicaState] = frozenset({_BACK, _OPEN})

_E = ReplicaEvent
_TABLE: dict[tuple[ReplicaState, ReplicaEvent], ReplicaState] = {
    (_DEF, _E.WANTED): _PRE,
    (_BACK, _E.ATTEMPT): _PRE,
    (_OPEN, _E.ATTEMPT): _PRE,
    (_HELD, _E.LOAD): _PRE,
    (_PRE, _E.PRELOADED): _RDY,
    (_PRE, _E.PRELOAD_FAILED): _BACK,
    (_PRE, _E.PRELOAD_TRIPPED): _OPEN,
    (_RDY, _E.PROBE_OK): _RDY,
    (_RDY, _E.PROBE_FAILED): _SUS,
    (_SUS, _E.PROBE_OK): _SUS,
    (_SUS, _E.PROBE_FAILED): _SUS,
    (_SUS, _E.RECOVERED): _RDY,
    (_RDY, _E.LOST): _BACK,
    (_SUS, _E.LOST): _BACK,
    (_RDY, _E.TRIPPED): _OPEN,
    (_SUS, _E.TRIPPED): _OPEN,
}
for _state in ReplicaState:
    _TABLE[_state, _E.HOLD] = _HELD

TRANSITIONS: Mapping[tuple[ReplicaState, ReplicaEvent], ReplicaState] = MappingProxyType(_TABLE)


def advance_replica(state: ReplicaState, event: ReplicaEvent) -> ReplicaState:
    """The state `event` leads to from `state`, or raise IllegalTransition."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(state.value, event.value, "replica") from None
