"""The one clock the runtime hands to orchestrator_core: monotonic milliseconds."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds on a monotonic clock (never goes back)."""
    return time.monotonic_ns() // 1_000_000
