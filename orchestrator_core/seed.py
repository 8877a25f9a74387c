"""The default sampling seed of a task (ORCH-3045).

A task without a seed gets one derived from its id, so the same id yields the same seed on
every run, machine and Python version (no use of the salted built-in `hash`).
"""

from __future__ import annotations

import hashlib

SEED_MASK = (1 << 63) - 1


def derive_seed(task_id: str) -> int:
    """First 8 bytes of SHA-256 of the id, big-endian, cut to a non-negative int64."""
    digest = hashlib.sha256(task_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") & SEED_MASK
