"""Model references resolved to files the daemon can load and verify (ORCH-3031, ORCH-3037).

A pool names its model by reference: a catalog name from the config's ``models``, a
``sha256:<hex>`` digest of a catalog entry, or the built-in development model. Resolving
a reference gives the local path, the digest it must have (verified before every load)
and the engine's own name for it. References that name no file the daemon knows are
refused with :class:`UnknownModel`, so a reload to a typo never takes a pool down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestratord_server.adapters.digest import PREFIX as DIGEST_PREFIX
from orchestratord_server.config import EMBEDDED_MODEL_REF, Config, ModelEntry
from orchestratord_server.engines.models import smollm2_gguf_path


class UnknownModel(LookupError):
    """A model reference the catalog cannot resolve; the message says why."""


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """A model the daemon can load: its reference, file and expected digest."""

    ref: str
    path: Path
    expected_digest: str | None
    engine_model: str | None


class ModelCatalog:
    """The config's ``models`` plus the built-in development model."""

    def __init__(self, config: Config) -> None:
        self._entries: dict[str, ModelEntry] = {m.ref: m for m in config.models}

    def resolve(self, ref: str) -> ResolvedModel:
        """The model ``ref`` names; raises UnknownModel."""
        entry = self._entries.get(ref)
        if entry is None and ref.startswith(DIGEST_PREFIX):
            digest = ref.removeprefix(DIGEST_PREFIX)
            entry = next((m for m in self._entries.values() if m.sha256 == digest), None)
        if entry is not None:
            return self._resolved(entry, ref)
        if ref == EMBEDDED_MODEL_REF:
            try:
                path = smollm2_gguf_path()
            except (ImportError, FileNotFoundError) as exc:
                raise UnknownModel(f"{ref}: the built-in model is not installed ({exc})") from None
            return ResolvedModel(ref=ref, path=path, expected_digest=None, engine_model=None)
        known = ", ".join(sorted(self._entries)) or "none"
        raise UnknownModel(f"unknown model {ref!r} (catalog: {known})")

    @staticmethod
    def _resolved(entry: ModelEntry, ref: str) -> ResolvedModel:
        digest = f"{DIGEST_PREFIX}{entry.sha256}" if entry.sha256 else None
        return ResolvedModel(
            ref=ref, path=entry.path, expected_digest=digest, engine_model=entry.engine_model
        )
