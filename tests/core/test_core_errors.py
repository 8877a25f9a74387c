"""Error kinds, HTTP statuses and retry classes (ORCH-2006, ORCH-3025)."""

from __future__ import annotations

from orchestrator_core import HTTP_STATUS, RETRIABLE, ErrorKind

CONTRACT_CODES = {
    "ADMISSION_REJECT",
    "QUEUE_FULL_DROP_LRU",
    "INVALID_PARAMS",
    "POOL_UNREADY",
    "POOL_UNAVAILABLE",
    "REPLICA_EXHAUSTED",
    "DECODE_TIMEOUT",
    "WORKER_RESET",
    "INTERNAL",
    "NOT_FOUND",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "DUPLICATE_TASK",
    "RATE_LIMITED",
    "QUOTA_EXCEEDED",
    "METHOD_NOT_ALLOWED",
    "NOT_IMPLEMENTED",
    "ENGINE_ERROR",
    "SHUTTING_DOWN",
    "SERVER_BUSY",
    "REQUEST_TIMEOUT",
    "HEADERS_TOO_LARGE",
    "STATE_UNAVAILABLE",
    "MIGRATION_FAILED",
}


def test_orch_2006_error_kind_is_the_closed_set_of_24_codes() -> None:
    assert {k.value for k in ErrorKind} == CONTRACT_CODES
    assert all(k.value == k.name for k in ErrorKind)


def test_every_kind_has_a_status() -> None:
    assert set(HTTP_STATUS) == set(ErrorKind)
    assert HTTP_STATUS[ErrorKind.INVALID_PARAMS] == 400
    assert HTTP_STATUS[ErrorKind.DUPLICATE_TASK] == 409
    for kind in (ErrorKind.RATE_LIMITED, ErrorKind.QUOTA_EXCEEDED, ErrorKind.ADMISSION_REJECT):
        assert HTTP_STATUS[kind] == 429
    assert HTTP_STATUS[ErrorKind.POOL_UNAVAILABLE] == HTTP_STATUS[ErrorKind.POOL_UNREADY] == 503
    assert HTTP_STATUS[ErrorKind.ENGINE_ERROR] == 502  # an upstream's fault, never a 500
    assert HTTP_STATUS[ErrorKind.SHUTTING_DOWN] == HTTP_STATUS[ErrorKind.SERVER_BUSY] == 503
    assert HTTP_STATUS[ErrorKind.REQUEST_TIMEOUT] == 408
    assert HTTP_STATUS[ErrorKind.HEADERS_TOO_LARGE] == 431


def test_orch_3025_only_transient_kinds_invite_retries() -> None:
    assert {k.value for k in RETRIABLE} == {
        "ADMISSION_REJECT",
        "QUEUE_FULL_DROP_LRU",
        "RATE_LIMITED",
        "QUOTA_EXCEEDED",
        "POOL_UNREADY",
        "POOL_UNAVAILABLE",
        "REPLICA_EXHAUSTED",
        "WORKER_RESET",
        "ENGINE_ERROR",
        "SHUTTING_DOWN",
        "SERVER_BUSY",
        "REQUEST_TIMEOUT",
        "STATE_UNAVAILABLE",
        "MIGRATION_FAILED",
    }
