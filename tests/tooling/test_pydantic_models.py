"""Generated pydantic models: the schema mapping, examples accepted, bad payloads refused."""

from __future__ import annotations

import enum
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from codegen import contracts, layout, pydantic_models, tasks, validate
from codegen.errors import CodegenError
from tests.tooling.support import REPO, generated_sources, model_class_for

Loader = Callable[[str, str], ModuleType]
GOOD_THING: dict[str, Any] = {
    "thing_id": "6f1c2e0a-3b7d-4c59-9a8e-1d2f3c4b5a69",
    "count": 3,
    "name": "abc",
}


@pytest.fixture
def models(repo: Path, load_module: Loader) -> ModuleType:
    """The models generated from the fixture contracts, imported (with the vocabulary
    generated from the same contracts in place of the core's)."""
    load_module(tasks.vocabulary_output(repo).text, "fixture_vocabulary")
    source = generated_sources(repo)[layout.MODELS].replace(
        f"from {pydantic_models.VOCABULARY_MODULE} import", "from fixture_vocabulary import"
    )
    return load_module(source, "fixture_models")


def _errors(model: type[BaseModel], payload: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json.dumps(payload))
    return {".".join(str(p) for p in e["loc"]): e["type"] for e in info.value.errors()}


def test_every_schema_and_inline_body_gets_a_class(models: ModuleType) -> None:
    for name in ("Kind", "ThingRequest", "Ticket", "StartedEvent", "ErrorEnvelope", "FieldError"):
        assert hasattr(models, name), name
    assert issubclass(models.ThingRequestOptions, BaseModel)
    assert issubclass(models.DrainThingRequest, BaseModel)
    assert issubclass(models.StreamThingEndEvent, BaseModel)
    root = models.ListThingsResponse200.model_fields["root"]
    assert root.annotation == list[models.Ticket]  # type: ignore[name-defined]


def test_descriptions_become_docstrings_and_field_descriptions(models: ModuleType) -> None:
    assert models.Kind.__doc__ == "A colour \u2013 red or dark blue."
    name = models.ThingRequest.model_fields["name"]
    assert name.description == "Lower-case letters only, \u2264 8 of them."


def test_string_enums_are_str_enums_with_upper_snake_members(models: ModuleType) -> None:
    assert issubclass(models.Kind, enum.StrEnum)
    assert [(m.name, m.value) for m in models.Kind] == [("RED", "red"), ("DARK_BLUE", "dark-blue")]


def test_additional_properties_false_forbids_unknown_fields_else_allows(models: ModuleType) -> None:
    assert models.ThingRequest.model_config["extra"] == "forbid"
    assert models.Ticket.model_config["extra"] == "allow"
    ticket = models.Ticket.model_validate(
        {"thing_id": GOOD_THING["thing_id"], "position": 1, "later": True}
    )
    assert ticket.model_extra == {"later": True}


def test_defaults_nullable_and_optional_fields(models: ModuleType) -> None:
    thing = models.ThingRequest.model_validate_json(json.dumps(GOOD_THING))
    assert thing.kind is models.Kind.RED
    assert thing.enabled is True
    assert thing.note is None and thing.budget_ms is None
    assert isinstance(thing.thing_id, uuid.UUID)
    assert models.ThingRequest.model_validate({**GOOD_THING, "note": None}).note is None
    assert "kind" in _errors(models.ThingRequest, {**GOOD_THING, "kind": None})


def test_keyword_and_non_identifier_properties_get_aliases(models: ModuleType) -> None:
    fields = models.ThingRequest.model_fields
    assert fields["class_"].alias == "class"
    assert fields["model_ref"].alias == "model-ref"
    thing = models.ThingRequest.model_validate({**GOOD_THING, "class": "c", "model-ref": "m"})
    assert (thing.class_, thing.model_ref) == ("c", "m")
    assert thing.model_dump(by_alias=True, exclude_none=True)["model-ref"] == "m"


def test_format_bounds_merge_with_minimum_and_maximum(models: ModuleType) -> None:
    meta = {type(m).__name__: m for m in models.ThingRequest.model_fields["count"].metadata}
    assert (meta["Ge"].ge, meta["Le"].le) == (1, 2**31 - 1)
    budget = {type(m).__name__: m for m in models.ThingRequest.model_fields["budget_ms"].metadata}
    assert (budget["Ge"].ge, budget["Le"].le) == (0, 3_600_000)
    ratio = {type(m).__name__: m for m in models.ThingRequest.model_fields["ratio"].metadata}
    assert (ratio["Ge"].ge, ratio["Lt"].lt) == (0, 1)


def test_typed_additional_properties_and_free_form_objects(models: ModuleType) -> None:
    thing = models.ThingRequest.model_validate(
        {**GOOD_THING, "labels": {"a": 1}, "free": {"x": [1, {"y": None}]}}
    )
    assert thing.labels == {"a": 1}
    assert thing.free == {"x": [1, {"y": None}]}
    assert "labels.a" in _errors(models.ThingRequest, {**GOOD_THING, "labels": {"a": "1"}})


def test_every_example_of_the_fixture_contracts_is_accepted(repo: Path, models: ModuleType) -> None:
    checked = 0
    for contract in contracts.load(repo).contracts:
        for example in validate.examples(contract):
            model = model_class_for(contract, example, models)
            if model is not None:
                TypeAdapter(model).validate_json(json.dumps(example.value))
                checked += 1
    assert checked == 6


def test_a_bad_payload_is_refused_naming_every_bad_field(models: ModuleType) -> None:
    bad = {
        "thing_id": "not-a-uuid",
        "count": 0,
        "budget_ms": "5",
        "ratio": 1.0,
        "name": "ABC",
        "kind": "green",
        "tags": [],
        "options": {"depth": 2**31, "deeper": 1},
        "enabled": "yes",
        "surprise": 1,
    }
    assert _errors(models.ThingRequest, bad) == {
        "thing_id": "uuid_parsing",
        "count": "greater_than_equal",
        "budget_ms": "int_type",
        "ratio": "less_than",
        "name": "string_pattern_mismatch",
        "kind": "enum",
        "tags": "too_short",
        "options.depth": "less_than_equal",
        "options.deeper": "extra_forbidden",
        "enabled": "bool_type",
        "surprise": "extra_forbidden",
    }


def test_missing_required_fields_are_each_reported(models: ModuleType) -> None:
    assert _errors(models.ThingRequest, {}) == {
        "thing_id": "missing",
        "count": "missing",
        "name": "missing",
    }


def test_scalars_are_never_coerced(models: ModuleType) -> None:
    errors = _errors(models.ThingRequest, {**GOOD_THING, "count": 3.0, "name": 5})
    assert errors == {"count": "int_type", "name": "string_type"}


def test_codegen_is_deterministic(repo: Path) -> None:
    assert generated_sources(repo) == generated_sources(repo)


def test_generated_python_passes_ruff_check(repo: Path) -> None:
    sources = generated_sources(repo)
    for rel in (layout.MODELS, layout.OPERATIONS):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--stdin-filename", str(repo / rel), "-"],
            input=sources[rel],
            capture_output=True,
            text=True,
            cwd=repo,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def _render(schemas: dict[str, Any]) -> str:
    builder = pydantic_models.ModelBuilder(schemas)
    builder.add_components()
    return builder.render("# header\n")


def test_unsupported_keywords_are_refused_not_ignored() -> None:
    with pytest.raises(CodegenError, match="'uniqueItems' is not supported"):
        _render({"Tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}})


def test_required_names_without_a_property_fail() -> None:
    with pytest.raises(CodegenError, match=r"required names no property: \['b'\]"):
        _render({"A": {"type": "object", "required": ["b"], "properties": {"a": {}}}})


def test_refs_to_unknown_schemas_fail() -> None:
    with pytest.raises(CodegenError, match="names no schema"):
        _render({"A": {"type": "object", "properties": {"b": {"$ref": "#/components/schemas/B"}}}})


def test_recursive_schemas_are_rebuilt(load_module: Loader) -> None:
    source = _render(
        {
            "Node": {
                "type": "object",
                "properties": {
                    "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}
                },
            }
        }
    )
    assert "Node.model_rebuild()" in source
    module = load_module(source, "recursive_models")
    tree = module.Node.model_validate({"children": [{"children": []}]})
    assert tree.children[0].children == []


def test_all_of_merges_object_parts() -> None:
    source = _render(
        {
            "Base": {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}},
            "Both": {
                "allOf": [
                    {"$ref": "#/components/schemas/Base"},
                    {"type": "object", "properties": {"b": {"type": "boolean"}}},
                ],
                "additionalProperties": False,
            },
        }
    )
    assert "class Both(BaseModel):" in source
    assert "    a: str\n" in source
    assert "    b: StrictBool | None = None\n" in source


def test_real_contract_examples_are_accepted_by_models_generated_from_them(
    load_module: Loader,
) -> None:
    loaded = contracts.load(REPO)
    models = load_module(generated_sources(REPO)[layout.MODELS], "real_models")
    checked = 0
    for contract in loaded.contracts:
        for example in validate.examples(contract):
            model = model_class_for(contract, example, models)
            if model is not None:
                TypeAdapter(model).validate_json(json.dumps(example.value))
                checked += 1
    assert checked > 0
