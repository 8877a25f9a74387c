"""Fixtures for the adapter tests: the tiny model and a real llama.cpp server on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestratord_server.engines.llamacpp_process import LlamaCppProcess
from tests.support.llamacpp import llamacpp_server
from tests.support.tiny_gguf import write_tiny_gguf

#: Context of one slot of the shared tiny engine.
TINY_CTX = 4096


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="module")
def tiny_engine(tiny_model: Path) -> Iterator[LlamaCppProcess]:
    """A two-slot llama.cpp server on the tiny model, shared by one test module."""
    with llamacpp_server(tiny_model, slots=2, ctx_per_slot=TINY_CTX) as process:
        yield process
