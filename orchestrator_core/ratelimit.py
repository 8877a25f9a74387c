"""Per-client token buckets applied before enqueue (ORCH-3006).

A bucket holds up to `burst` tokens and refills at `rps` tokens per second; an admitted
task takes one token. Refusals do not take one, so a client that honours the backoff is
not punished twice. Levels are integers in nano-tokens (a rate is exact to 1e-6 tokens
per second), so the backoff is exact: the ms until the bucket holds a whole token. The
number of buckets is bounded: beyond `max_keys` the least recently used bucket is
forgotten, which only ever gives that client a full bucket again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

TOKEN = 1_000_000_000


class TokenBuckets:
    """Token buckets keyed by client, sharing one rate and burst."""

    __slots__ = ("_buckets", "_max_keys", "capacity", "refill_per_ms")

    def __init__(self, rps: float, burst: int, max_keys: int) -> None:
        self.refill_per_ms = max(1, round(rps * TOKEN / 1000))
        self.capacity = burst * TOKEN
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def _level(self, key: str, now_ms: int) -> int:
        state = self._buckets.get(key)
        if state is None:
            return self.capacity
        level, stamp = state
        return min(self.capacity, level + (now_ms - stamp) * self.refill_per_ms)

    def wait_ms(self, key: str, now_ms: int) -> int:
        """0 when `key` may take a token now, else the ms until it may."""
        missing = TOKEN - self._level(key, now_ms)
        if missing <= 0:
            return 0
        return -(-missing // self.refill_per_ms)

    def take(self, key: str, now_ms: int) -> None:
        """Take one token for `key` (call only after `wait_ms` returned 0)."""
        buckets = self._buckets
        buckets[key] = (self._level(key, now_ms) - TOKEN, now_ms)
        buckets.move_to_end(key)
        if len(buckets) > self._max_keys:
            buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)

    def export_state(self) -> list[list[Any]]:
        """Each client's (key, level, time of level), least recently used first."""
        return [[key, level, stamp] for key, (level, stamp) in self._buckets.items()]

    def restore_state(self, data: list[list[Any]]) -> None:
        """Take back what `export_state` gave."""
        self._buckets = OrderedDict((key, (level, stamp)) for key, level, stamp in data)
