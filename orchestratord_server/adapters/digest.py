"""Model file digests in the ``sha256:<hex>`` form model references use (ORCH-3032)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of the file at ``path``; blocking, run it off the event loop."""
    with path.open("rb") as handle:
        return f"sha256:{hashlib.file_digest(handle, 'sha256').hexdigest()}"
