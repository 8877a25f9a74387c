"""Model digests in the ``sha256:<hex>`` form model references use (ORCH-3032, ORCH-3037).

A model is a file (GGUF) or a directory (Hugging Face format: config, tokenizer and
weight files). A file's digest is the SHA-256 of its bytes. A directory's digest is the
SHA-256 of one line per regular file, in sorted order of their paths relative to the
directory: ``<relative path>\\0<sha256 hex of the file>\\n``; hidden files are skipped. So
renaming, adding or changing any file changes the digest, and the same tree has the same
digest on every machine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PREFIX = "sha256:"


def _file_hex(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of the file at ``path``; blocking, run it off the event loop."""
    return PREFIX + _file_hex(path)


def sha256_path(path: Path) -> str:
    """The digest of a model file or directory (see the module doc); blocking."""
    if not path.is_dir():
        return sha256_file(path)
    tree = hashlib.sha256()
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    for file in files:
        tree.update(f"{file.relative_to(path).as_posix()}\0{_file_hex(file)}\n".encode())
    return PREFIX + tree.hexdigest()
