"""Values derived from a task's id: its default seed (ORCH-3045), its canary bucket
(ORCH-3033).

Both come from SHA-256 of the id, so the same id yields the same value on every run,
machine and Python version (no use of the salted built-in `hash`).
"""

from __future__ import annotations

import hashlib

SEED_MASK = (1 << 63) - 1


def _head(task_id: str) -> int:
    """The first 8 bytes of SHA-256 of the id, big-endian."""
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "big")


def derive_seed(task_id: str) -> int:
    """The id's hash head, cut to a non-negative int64."""
    return _head(task_id) & SEED_MASK


def canary_bucket(task_id: str) -> int:
    """The id's hash head modulo 100: a task is a canary task when this is below the
    canary weight, reproducibly."""
    return _head(task_id) % 100
