"""Which adapter class speaks to which engine (ORCH-3054..3057)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from orchestrator_core import Engine
from orchestratord_server.adapters.base import AdapterSettings, EngineAdapter
from orchestratord_server.adapters.chat import Feature
from orchestratord_server.adapters.llamacpp import LlamaCppAdapter
from orchestratord_server.adapters.tgi import TgiAdapter
from orchestratord_server.adapters.triton import TritonAdapter
from orchestratord_server.adapters.vllm import VllmAdapter

_FACTORIES: Mapping[Engine, Callable[[AdapterSettings], EngineAdapter]] = {
    Engine.LLAMACPP: LlamaCppAdapter,
    Engine.TGI: TgiAdapter,
    Engine.TRITON: TritonAdapter,
    Engine.VLLM: VllmAdapter,
}


def make_adapter(engine: Engine, settings: AdapterSettings) -> EngineAdapter:
    """A new adapter for one replica of ``engine``; ``ValueError`` for an unknown engine."""
    try:
        factory = _FACTORIES[Engine(engine)]
    except (KeyError, ValueError):
        raise ValueError(f"no adapter for engine {engine!r}") from None
    return factory(settings)


def engine_features(engine: Engine) -> frozenset[Feature]:
    """What ``engine``'s adapter honours beyond text generation."""
    return _FEATURES[Engine(engine)]


_FEATURES: Mapping[Engine, frozenset[Feature]] = {
    Engine.LLAMACPP: LlamaCppAdapter.features,
    Engine.TGI: TgiAdapter.features,
    Engine.TRITON: TritonAdapter.features,
    Engine.VLLM: VllmAdapter.features,
}
