"""One vocabulary: the contracts' enums exist once, in `orchestrator_core.vocabulary`, and
every layer uses those very classes (ORCH-2006, ORCH-2008).

The generated models re-export the vocabulary's classes (the same objects, not copies),
the config and the adapters are typed with them, and no module of the project defines an
enum with the values of a contract enum of its own. The client, which installs without
the core, has exactly one generated copy (`orchestratord_client.generated.vocabulary`)
that agrees with the core's, and its models use that copy.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import orchestrator_core
import orchestratord_client
import orchestratord_server
from orchestrator_core import vocabulary
from orchestratord_client.generated import models as client_models
from orchestratord_client.generated import vocabulary as client_vocabulary
from orchestratord_server import config
from orchestratord_server.adapters.base import EngineAdapter, EngineError, FinalChunk
from orchestratord_server.errors import RETRIABLE
from orchestratord_server.generated import models


def _enums_of(module: ModuleType) -> list[type[enum.Enum]]:
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, enum.Enum)
        and value.__module__ == module.__name__
    ]


CONTRACT_ENUMS = _enums_of(vocabulary)
CLIENT_ENUMS = _enums_of(client_vocabulary)


def _modules(package: ModuleType) -> list[ModuleType]:
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.endswith("__main__"):  # running it would start the CLI
            found.append(importlib.import_module(info.name))
    return found


def test_the_vocabulary_holds_every_contract_enum() -> None:
    names = {e.__name__ for e in CONTRACT_ENUMS}
    assert {
        "Engine",
        "ErrorKind",
        "FinishReason",
        "KvHint",
        "PoolPhase",
        "Priority",
        "QueuePolicy",
        "Workload",
    } <= names


@pytest.mark.parametrize("kind", CONTRACT_ENUMS, ids=lambda e: e.__name__)
def test_the_models_use_the_vocabulary_itself(kind: type[enum.Enum]) -> None:
    assert getattr(models, kind.__name__) is kind


def test_the_clients_copy_agrees_with_the_vocabulary_and_its_models_use_it() -> None:
    assert {e.__name__: [(m.name, m.value) for m in e] for e in CLIENT_ENUMS} == {
        e.__name__: [(m.name, m.value) for m in e] for e in CONTRACT_ENUMS
    }
    for kind in CLIENT_ENUMS:
        assert getattr(client_models, kind.__name__) is kind


def test_no_layer_keeps_a_copy_of_a_contract_enum() -> None:
    contract_values = {frozenset(m.value for m in e): e for e in CONTRACT_ENUMS}
    layers = (
        (orchestrator_core, CONTRACT_ENUMS),
        (orchestratord_server, CONTRACT_ENUMS),
        (orchestratord_client, CLIENT_ENUMS),
    )
    for package, vocabulary_enums in layers:
        for module in _modules(package):
            for value in vars(module).values():
                if not (inspect.isclass(value) and issubclass(value, enum.Enum)):
                    continue
                if value.__module__ != module.__name__ or value in vocabulary_enums:
                    continue
                values = frozenset(m.value for m in value)
                assert values not in contract_values, (
                    f"{module.__name__}.{value.__name__} copies {contract_values[values].__name__}"
                )


def test_config_and_adapters_are_typed_with_the_vocabulary() -> None:
    assert config.PoolConfig.model_fields["engine"].annotation is vocabulary.Engine
    assert config.QueueConfig.model_fields["full_policy"].annotation is vocabulary.QueuePolicy
    assert config.PriorityConfig.model_fields["name"].annotation is vocabulary.Priority
    hints = inspect.get_annotations(EngineAdapter, eval_str=True)
    assert hints["engine"] is vocabulary.Engine
    assert inspect.get_annotations(FinalChunk, eval_str=True)["finish_reason"] is (
        vocabulary.FinishReason
    )
    error = EngineError(vocabulary.ErrorKind.ENGINE_ERROR, "x")
    assert error.kind is vocabulary.ErrorKind.ENGINE_ERROR
    with pytest.raises(ValueError):
        EngineError(vocabulary.ErrorKind.NOT_FOUND, "an engine does not say this")


def test_retriable_codes_are_the_cores() -> None:
    """ORCH-3025: one notion of which errors invite a retry."""
    assert RETRIABLE == orchestrator_core.RETRIABLE
    assert models.ErrorKind.DECODE_TIMEOUT not in RETRIABLE
