"""Opt-in retries of backpressure: wait as long as the daemon says, then send again.

`retrying(lambda: client.submit(request))` calls again after a 429 or 503 whose envelope
says `retriable`, sleeping the refusal's `backoff_ms` (ORCH-2007, ORCH-3025); without a
hint it backs off exponentially. Each wait is stretched by a random share of up to
`jitter` (25 % by default, never shorter than the daemon asked unless that is beyond
`max_wait_s`), so clients refused together do not all come back in the same instant. Any
other error, or the last refusal once `attempts` calls were made, is raised.
`retrying_async` does the same for coroutines.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from orchestratord_client.errors import Backpressure

T = TypeVar("T")

DEFAULT_ATTEMPTS = 5
#: The longest single wait, whatever the daemon suggests, in seconds.
DEFAULT_MAX_WAIT_S = 30.0
#: Wait before the first retry when the daemon gave no hint, doubled each time.
FALLBACK_WAIT_S = 0.5
#: Shortest wait, so a hint of 0 ms does not turn into a busy loop.
MIN_WAIT_S = 0.01
#: Largest random stretch of a wait, as a share of it.
DEFAULT_JITTER = 0.25

_random = random.Random()

OnRetry = Callable[[Backpressure, float], None]


def wait_for(
    refusal: Backpressure,
    attempt: int,
    max_wait_s: float,
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the `attempt`-th refusal (1-based).

    The daemon's hint (or the exponential fallback) stretched by a random share of up to
    `jitter`, never shorter than the hint; a hint at or beyond `max_wait_s` gives a wait
    spread just below `max_wait_s` instead, so capped clients do not return together.
    """
    if refusal.backoff_ms is not None:
        wait = refusal.backoff_ms / 1000
    elif refusal.retry_after is not None:
        wait = float(refusal.retry_after)
    else:
        wait = FALLBACK_WAIT_S * 2 ** (attempt - 1)
    wait = max(wait, MIN_WAIT_S)
    high = min(wait * (1 + jitter), max_wait_s)
    low = wait if wait < max_wait_s else max_wait_s / (1 + jitter)
    return (rng or _random).uniform(low, high)


def _give_up(refusal: Backpressure, attempt: int, attempts: int) -> bool:
    return attempt >= attempts or not refusal.retriable


def retrying(
    send: Callable[[], T],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    jitter: float = DEFAULT_JITTER,
    on_retry: OnRetry | None = None,
) -> T:
    """`send()`, called up to `attempts` times while it is refused for backpressure.

    `on_retry(refusal, wait_s)` is told before each wait; `jitter=0` waits exactly as
    long as the daemon asked.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return send()
        except Backpressure as refusal:
            if _give_up(refusal, attempt, attempts):
                raise
            wait = wait_for(refusal, attempt, max_wait_s, jitter)
            if on_retry is not None:
                on_retry(refusal, wait)
            time.sleep(wait)


async def retrying_async(
    send: Callable[[], Awaitable[T]],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    jitter: float = DEFAULT_JITTER,
    on_retry: OnRetry | None = None,
) -> T:
    """`await send()`, retried like `retrying`."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await send()
        except Backpressure as refusal:
            if _give_up(refusal, attempt, attempts):
                raise
            wait = wait_for(refusal, attempt, max_wait_s, jitter)
            if on_retry is not None:
                on_retry(refusal, wait)
            await asyncio.sleep(wait)
