"""Fixtures of the vLLM tests: one real vLLM server per test module (ORCH-3055)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.vllm import VllmServer, vllm_server


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """A vLLM server on SmolLM2 for one test module; stopped with all its processes."""
    with vllm_server(tmp_path_factory.mktemp("vllm")) as server:
        print(f"\nvLLM ready after {server.startup_s:.1f} s")
        yield server
