"""The config JSON Schema, rendered from the pydantic Config model."""

from __future__ import annotations

import json

import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import BaseModel, ConfigDict

from codegen import config_schema
from codegen.errors import CodegenError


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depth: int = 1


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    inner: _Inner = _Inner()


def test_the_schema_is_sorted_indented_and_names_its_source() -> None:
    text = config_schema.render(_Config, "pkg/config.py")
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "pkg/config.py (_Config)" in doc["$comment"]
    assert doc["required"] == ["name"]


def test_the_schema_rejects_unknown_fields_at_any_depth() -> None:
    schema = json.loads(config_schema.render(_Config))
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({"name": "n", "inner": {"depth": 2}})
    assert not validator.is_valid({"name": "n", "colour": 1})
    assert not validator.is_valid({"name": "n", "inner": {"depth": 2, "x": 0}})


def test_the_real_config_schema_refuses_unknown_fields_in_every_section() -> None:
    """ORCH-3030: config files validate against a schema in which unknown fields are errors."""
    schema = json.loads(config_schema.render(config_schema.load_model()))
    objects = [schema, *schema.get("$defs", {}).values()]
    sections = [o for o in objects if o.get("type") == "object" and "properties" in o]
    assert sections
    assert all(o.get("additionalProperties") is False for o in sections)


def test_a_wrong_model_spec_is_named() -> None:
    with pytest.raises(CodegenError, match="cannot import no_such_module"):
        config_schema.load_model("no_such_module:Config")
    with pytest.raises(CodegenError, match="json:dumps is not a pydantic model class"):
        config_schema.load_model("json:dumps")
