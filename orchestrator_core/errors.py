"""Error kinds, their HTTP status and retry class, and the core's exceptions.

`ErrorKind` is the closed set of error codes of the public contract (ORCH-2006), generated
into `vocabulary`. `HTTP_STATUS` says how the server renders each kind and `RETRIABLE`
which kinds invite a retry (ORCH-3025).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from orchestrator_core.vocabulary import ErrorKind

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
        ErrorKind.ENGINE_ERROR: 502,
        ErrorKind.SHUTTING_DOWN: 503,
        ErrorKind.SERVER_BUSY: 503,
        ErrorKind.REQUEST_TIMEOUT: 408,
        ErrorKind.HEADERS_TOO_LARGE: 431,
        ErrorKind.STATE_UNAVAILABLE: 503,
        ErrorKind.MIGRATION_FAILED: 503,
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
        ErrorKind.ENGINE_ERROR,
        ErrorKind.SHUTTING_DOWN,
        ErrorKind.SERVER_BUSY,
        ErrorKind.REQUEST_TIMEOUT,
        ErrorKind.STATE_UNAVAILABLE,
        ErrorKind.MIGRATION_FAILED,
    }
)


class CoreError(Exception):
    """Base of every exception the core raises; each one is a caller's mistake."""


class InvalidArgument(CoreError, ValueError):
    """An argument outside what the method accepts."""


class ConfigError(CoreError, ValueError):
    """A pool or session specification that cannot be used."""


class IllegalTransition(CoreError):
    """An event that a life cycle (of a task, a pool or a replica) does not allow in the
    current state."""

    def __init__(self, state: str, event: str, machine: str = "task") -> None:
        self.state = state
        self.event = event
        self.machine = machine
        super().__init__(f"{machine} event {event!r} is not allowed in state {state!r}")


class UnknownPool(CoreError, LookupError):
    """A pool id that is not configured."""


class UnknownReplica(CoreError, LookupError):
    """A replica id that the pool does not have."""
