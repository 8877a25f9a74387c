"""Retry waits: as long as the daemon asked, stretched by jitter so clients spread out."""

from __future__ import annotations

import random

from orchestratord_client.errors import Backpressure, TooManyRequests
from orchestratord_client.generated.models import ErrorEnvelope, ErrorKind
from orchestratord_client.retry import DEFAULT_JITTER, FALLBACK_WAIT_S, retrying, wait_for


def _refusal(backoff_ms: int | None = None, retry_after: int | None = None) -> Backpressure:
    envelope = ErrorEnvelope(code=ErrorKind.ADMISSION_REJECT, message="full", retriable=True)
    return TooManyRequests(429, envelope, backoff_ms=backoff_ms, retry_after=retry_after)


def test_waits_are_never_shorter_than_asked_and_spread_over_the_jitter() -> None:
    rng = random.Random(17)
    waits = [wait_for(_refusal(backoff_ms=400), 1, 30.0, rng=rng) for _ in range(200)]
    assert all(0.4 <= wait <= 0.4 * (1 + DEFAULT_JITTER) for wait in waits)
    assert len(set(waits)) == len(waits)
    # Spread over the whole window, not bunched: both ends of it are reached.
    assert min(waits) < 0.41 and max(waits) > 0.49


def test_without_a_hint_the_fallback_doubles_with_jitter() -> None:
    rng = random.Random(3)
    for attempt in (1, 2, 3):
        base = FALLBACK_WAIT_S * 2 ** (attempt - 1)
        wait = wait_for(_refusal(), attempt, 30.0, rng=rng)
        assert base <= wait <= base * (1 + DEFAULT_JITTER)
    assert wait_for(_refusal(retry_after=2), 1, 30.0, jitter=0) == 2.0


def test_no_jitter_waits_exactly_and_the_cap_holds() -> None:
    assert wait_for(_refusal(backoff_ms=250), 1, 30.0, jitter=0) == 0.25
    assert wait_for(_refusal(backoff_ms=0), 1, 30.0, jitter=0) == 0.01
    assert wait_for(_refusal(backoff_ms=90_000), 1, 5.0, jitter=0) == 5.0


def test_capped_waits_still_spread_below_the_cap() -> None:
    rng = random.Random(5)
    waits = [wait_for(_refusal(backoff_ms=90_000), 1, 5.0, rng=rng) for _ in range(100)]
    assert all(5.0 / (1 + DEFAULT_JITTER) <= wait <= 5.0 for wait in waits)
    assert max(waits) - min(waits) > 0.5
    near_cap = [wait_for(_refusal(backoff_ms=4_500), 1, 5.0, rng=rng) for _ in range(100)]
    assert all(4.5 <= wait <= 5.0 for wait in near_cap)


def test_retrying_reports_each_jittered_wait() -> None:
    refusals = [_refusal(backoff_ms=10), _refusal(backoff_ms=10)]
    told: list[float] = []

    def send() -> str:
        if refusals:
            raise refusals.pop()
        return "admitted"

    assert retrying(send, on_retry=lambda _r, wait: told.append(wait)) == "admitted"
    assert len(told) == 2
    assert all(0.01 <= wait <= 0.01 * (1 + DEFAULT_JITTER) for wait in told)
