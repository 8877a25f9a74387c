"""Which adapter class speaks to which engine (ORCH-3054..3057)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from orchestratord_server.adapters.base import AdapterSettings, EngineAdapter, EngineName
from orchestratord_server.adapters.llamacpp import LlamaCppAdapter
from orchestratord_server.adapters.tgi import TgiAdapter
from orchestratord_server.adapters.triton import TritonAdapter
from orchestratord_server.adapters.vllm import VllmAdapter


def _llamacpp(settings: AdapterSettings) -> EngineAdapter:
    return LlamaCppAdapter(
        settings.base_url, model_path=settings.model_path, engine_version=settings.engine_version
    )


_FACTORIES: Mapping[EngineName, Callable[[AdapterSettings], EngineAdapter]] = {
    "llamacpp": _llamacpp,
    "tgi": TgiAdapter,
    "triton": TritonAdapter,
    "vllm": VllmAdapter,
}


def make_adapter(engine: EngineName, settings: AdapterSettings) -> EngineAdapter:
    """A new adapter for one replica of ``engine``; ``ValueError`` for an unknown engine."""
    try:
        factory = _FACTORIES[engine]
    except KeyError:
        raise ValueError(f"no adapter for engine {engine!r}") from None
    return factory(settings)
