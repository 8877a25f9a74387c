"""Values derived from a task's id: its default seed (ORCH-3045), its canary bucket
(ORCH-3033).

Both come from SHA-256 of the id (the bucket with a prefix of its own), so the same id
yields the same value on every run, machine and Python version (no use of the salted
built-in `hash`).
"""

from __future__ import annotations

from hashlib import sha256

SEED_MASK = (1 << 63) - 1


def _head(data: bytes) -> int:
    """The first 8 bytes of SHA-256 of ``data``, big-endian."""
    return int.from_bytes(sha256(data).digest()[:8], "big")


def derive_seed(task_id: str) -> int:
    """The id's hash head (`_head`, inlined: one seed per task), cut to a non-negative
    int64."""
    return int.from_bytes(sha256(task_id.encode()).digest()[:8], "big") & SEED_MASK


def canary_bucket(task_id: str) -> int:
    """A bucket from 0 to 99 for the id: a task is a canary task when its bucket is below
    the canary weight. Hashed apart from the seed (prefix ``canary\0``), so which tasks
    are canaries says nothing about their seeds."""
    return _head(b"canary\0" + task_id.encode()) % 100
