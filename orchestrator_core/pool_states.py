"""The pool life cycle as one transition table (ORCH-2101, ORCH-2102, ORCH-3002, ORCH-3031).

Theory of operation
-------------------
A pool starts in STARTING: its replicas preload (or wait for the first task, with
`preload: false`). The first replica that becomes Ready makes it READY; when no replica is
Ready any more it is UNREADY, and READY again once one is. These three are the *serving*
phases: the pool admits and dispatches while it has a usable replica.

An operator's drain takes a serving pool to DRAINING: queued tasks are canceled at once,
running ones may finish until the deadline, then are canceled. Once nothing runs the pool
is DRAINED, and stays out of service until a reload brings it back.

A reload goes through three phases. RELOADING drains the pool (the pool's wall limit is
the deadline); once nothing runs, LOADING stops every engine and preloads the replicas on
the new model one after another. When all are Ready the pool serves the new model; when
one fails, ROLLING_BACK stops them again and preloads the previous model. Either way the
pool then returns to a serving phase (READY when its replicas are Ready, UNREADY when the
rollback failed too and they are restarting with backoff).

The facade never assigns a phase itself: every change goes through `advance_pool`, so this
table is the whole life cycle; an event the table does not allow raises
`IllegalTransition`. Replica changes reach the table only as REPLICA_READY / NO_REPLICA
events, which leave every non-serving phase as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from orchestrator_core.errors import IllegalTransition
from orchestrator_core.vocabulary import PoolPhase


class PoolEvent(StrEnum):
    """What can happen to a pool."""

    REPLICA_READY = "replica_ready"
    NO_REPLICA = "no_replica"
    DRAIN = "drain"
    IDLE = "idle"
    RELOAD = "reload"
    LOADED = "loaded"
    LOAD_FAILED = "load_failed"
    ROLLED_BACK = "rolled_back"


_ST, _RD, _UN = PoolPhase.STARTING, PoolPhase.READY, PoolPhase.UNREADY
_DRG, _DRD = PoolPhase.DRAINING, PoolPhase.DRAINED
_REL, _LOAD, _ROLL = PoolPhase.RELOADING, PoolPhase.LOADING, PoolPhase.ROLLING_BACK

SERVING: frozenset[PoolPhase] = frozenset({_ST, _RD, _UN})
RELOAD_PHASES: frozenset[PoolPhase] = frozenset({_REL, _LOAD, _ROLL})

_E = PoolEvent
_TABLE: dict[tuple[PoolPhase, PoolEvent], PoolPhase] = {
    (_ST, _E.REPLICA_READY): _RD,
    (_ST, _E.NO_REPLICA): _ST,
    (_RD, _E.REPLICA_READY): _RD,
    (_RD, _E.NO_REPLICA): _UN,
    (_UN, _E.REPLICA_READY): _RD,
    (_UN, _E.NO_REPLICA): _UN,
    (_DRG, _E.DRAIN): _DRG,
    (_DRG, _E.IDLE): _DRD,
    (_DRD, _E.DRAIN): _DRD,
    (_REL, _E.RELOAD): _REL,
    (_REL, _E.DRAIN): _REL,
    (_REL, _E.IDLE): _LOAD,
    (_LOAD, _E.RELOAD): _LOAD,
    (_LOAD, _E.DRAIN): _LOAD,
    (_LOAD, _E.LOADED): _UN,
    (_LOAD, _E.LOAD_FAILED): _ROLL,
    (_ROLL, _E.RELOAD): _ROLL,
    (_ROLL, _E.DRAIN): _ROLL,
    (_ROLL, _E.ROLLED_BACK): _UN,
}
for _phase in (_ST, _RD, _UN):
    _TABLE[_phase, _E.DRAIN] = _DRG
    _TABLE[_phase, _E.RELOAD] = _REL
for _phase in (_DRG, _DRD):
    _TABLE[_phase, _E.RELOAD] = _REL
for _phase in (_DRG, _DRD, _REL, _LOAD, _ROLL):
    # Replicas come and go while the pool is out of service; its phase does not change.
    _TABLE[_phase, _E.REPLICA_READY] = _phase
    _TABLE[_phase, _E.NO_REPLICA] = _phase

TRANSITIONS: Mapping[tuple[PoolPhase, PoolEvent], PoolPhase] = MappingProxyType(_TABLE)


def advance_pool(phase: PoolPhase, event: PoolEvent) -> PoolPhase:
    """The phase `event` leads to from `phase`, or raise IllegalTransition."""
    try:
        return TRANSITIONS[phase, event]
    except KeyError:
        raise IllegalTransition(phase.value, event.value, "pool") from None
