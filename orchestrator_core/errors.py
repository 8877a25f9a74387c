"""Error kinds, their HTTP status and retry class, and the core's exceptions.

`ErrorKind` is the closed set of error codes of the public contract (ORCH-2006): the nine
codes of OrchQueue v1 plus the additive ones this project needs. `HTTP_STATUS` says how the
server renders each kind and `RETRIABLE` which kinds invite a retry (ORCH-3025).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class ErrorKind(StrEnum):
    """Every error code a client can see, in a refusal or a stream's `error` event."""

    ADMISSION_REJECT = "ADMISSION_REJECT"
    QUEUE_FULL_DROP_LRU = "QUEUE_FULL_DROP_LRU"
    INVALID_PARAMS = "INVALID_PARAMS"
    POOL_UNREADY = "POOL_UNREADY"
    POOL_UNAVAILABLE = "POOL_UNAVAILABLE"
    REPLICA_EXHAUSTED = "REPLICA_EXHAUSTED"
    DECODE_TIMEOUT = "DECODE_TIMEOUT"
    WORKER_RESET = "WORKER_RESET"
    INTERNAL = "INTERNAL"
    NOT_FOUND = "NOT_FOUND"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    DUPLICATE_TASK = "DUPLICATE_TASK"
    RATE_LIMITED = "RATE_LIMITED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NOT_IMPLEMENTED = "NOT_IMPLEMENTED"


HTTP_STATUS: Mapping[ErrorKind, int] = MappingProxyType(
    {
        ErrorKind.ADMISSION_REJECT: 429,
        ErrorKind.QUEUE_FULL_DROP_LRU: 429,
        ErrorKind.INVALID_PARAMS: 400,
        ErrorKind.POOL_UNREADY: 503,
        ErrorKind.POOL_UNAVAILABLE: 503,
        ErrorKind.REPLICA_EXHAUSTED: 503,
        ErrorKind.DECODE_TIMEOUT: 504,
        ErrorKind.WORKER_RESET: 502,
        ErrorKind.INTERNAL: 500,
        ErrorKind.NOT_FOUND: 404,
        ErrorKind.UNAUTHORIZED: 401,
        ErrorKind.FORBIDDEN: 403,
        ErrorKind.DUPLICATE_TASK: 409,
        ErrorKind.RATE_LIMITED: 429,
        ErrorKind.QUOTA_EXCEEDED: 429,
        ErrorKind.METHOD_NOT_ALLOWED: 405,
        ErrorKind.NOT_IMPLEMENTED: 501,
    }
)

RETRIABLE: frozenset[ErrorKind] = frozenset(
    {
        ErrorKind.ADMISSION_REJECT,
        ErrorKind.QUEUE_FULL_DROP_LRU,
        ErrorKind.RATE_LIMITED,
        ErrorKind.QUOTA_EXCEEDED,
        ErrorKind.POOL_UNREADY,
        ErrorKind.POOL_UNAVAILABLE,
        ErrorKind.REPLICA_EXHAUSTED,
        ErrorKind.WORKER_RESET,
    }
)


class CoreError(Exception):
    """Base of every exception the core raises; each one is a caller's mistake."""


class InvalidArgument(CoreError, ValueError):
    """An argument outside what the method accepts."""


class ConfigError(CoreError, ValueError):
    """A pool or session specification that cannot be used."""


class IllegalTransition(CoreError):
    """An event that the task life cycle does not allow in the task's current state."""

    def __init__(self, state: str, event: str) -> None:
        self.state = state
        self.event = event
        super().__init__(f"event {event!r} is not allowed in state {state!r}")


class UnknownPool(CoreError, LookupError):
    """A pool id that is not configured."""


class UnknownReplica(CoreError, LookupError):
    """A replica id that the pool does not have."""


class PoolBusy(CoreError):
    """A pool that still holds queued or running tasks cannot be replaced."""
