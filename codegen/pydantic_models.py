"""Render OpenAPI 3.0 schemas as pydantic v2 model source (`generated/models.py`) and
their string enums as the shared vocabulary (`orchestrator_core/vocabulary.py`).

Mapping: a string enum is an `enum.StrEnum`, rendered once into the vocabulary module,
which the core, the config, the adapters and the models import; an object is a
`BaseModel` that forbids unknown fields when `additionalProperties: false` and allows
them otherwise (typed through `__pydantic_extra__` when `additionalProperties` is a
schema); any other named schema is a `RootModel`. Scalars are strict (`StrictInt`,
`StrictFloat`, `StrictBool`) so a JSON body is never coerced; `int32`/`int64` bounds
merge with `minimum`/`maximum`; `uuid`, `date-time` and `date` map to their Python
types; `nullable` adds `| None`; a field that is not required defaults to its `default`,
else None. Inline objects in properties and operation bodies get classes named after
their parent. Keywords outside this mapping are refused rather than silently ignored, so
a model never accepts what its contract rejects.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from codegen import naming
from codegen.contracts import SCHEMA_REF_PREFIX
from codegen.errors import CodegenError

_ANNOTATION_KEYS = frozenset(
    {
        "description",
        "title",
        "example",
        "examples",
        "readOnly",
        "writeOnly",
        "deprecated",
        "externalDocs",
        "xml",
        "discriminator",
    }
)
_VALIDATION_KEYS = frozenset(
    {
        "$ref",
        "type",
        "format",
        "enum",
        "nullable",
        "default",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "allOf",
        "oneOf",
        "anyOf",
    }
)
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_STRING_FORMATS = {"uuid": "uuid.UUID", "date-time": "datetime.datetime", "date": "datetime.date"}
_SCALARS = {
    "integer": "StrictInt",
    "number": "StrictFloat",
    "boolean": "StrictBool",
    "string": "str",
}
_PYDANTIC_NAMES = (
    "BaseModel",
    "ConfigDict",
    "Field",
    "RootModel",
    "StrictBool",
    "StrictFloat",
    "StrictInt",
    "ValidationInfo",
    "field_validator",
)
_TYPING_NAMES = ("Annotated", "Any", "Literal")
_MODULES = ("datetime", "enum", "uuid")
_RESERVED = frozenset({*_PYDANTIC_NAMES, *_TYPING_NAMES, *_MODULES, "annotations"})


@dataclass
class _Class:
    """One generated class: its source lines, the generated classes it uses, its kind."""

    name: str
    lines: list[str]
    deps: set[str] = field(default_factory=set)
    is_model: bool = True


def _check_keywords(schema: Mapping[str, Any], where: str) -> None:
    for key in schema:
        if key in _VALIDATION_KEYS or key in _ANNOTATION_KEYS or key.startswith("x-"):
            continue
        raise CodegenError(f"{where}: schema keyword {key!r} is not supported by codegen")


def _absent_not_null(raw: Mapping[str, Any]) -> bool:
    """An optional property with no default that is not nullable: absent, never null."""
    schema = _unwrap_single_all_of(raw)
    nullable = raw.get("nullable") or schema.get("nullable")
    default = raw.get("default", schema.get("default"))
    return not nullable and default is None


def _is_object(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "object" or "properties" in schema


def _bound(values: Iterable[tuple[float, bool]], lower: bool) -> tuple[float, bool] | None:
    """The tightest of (value, exclusive) bounds: the largest lower or smallest upper one."""
    best: tuple[float, bool] | None = None
    for value, exclusive in values:
        if best is None:
            best = (value, exclusive)
            continue
        tighter = value > best[0] if lower else value < best[0]
        if tighter or (value == best[0] and exclusive):
            best = (value, exclusive)
    return best


def _numeric_constraints(schema: Mapping[str, Any]) -> list[str]:
    lows: list[tuple[float, bool]] = []
    highs: list[tuple[float, bool]] = []
    if schema.get("type") == "integer" and schema.get("format") in _INT_RANGES:
        format_low, format_high = _INT_RANGES[schema["format"]]
        lows.append((format_low, False))
        highs.append((format_high, False))
    for key, exclusive_key, bucket in (
        ("minimum", "exclusiveMinimum", lows),
        ("maximum", "exclusiveMaximum", highs),
    ):
        exclusive = schema.get(exclusive_key)
        if key in schema:
            bucket.append((schema[key], exclusive is True))
        if isinstance(exclusive, int | float) and not isinstance(exclusive, bool):
            bucket.append((exclusive, True))
    out: list[str] = []
    low = _bound(lows, lower=True)
    if low is not None:
        out.append(f"{'gt' if low[1] else 'ge'}={low[0]!a}")
    high = _bound(highs, lower=False)
    if high is not None:
        out.append(f"{'lt' if high[1] else 'le'}={high[0]!a}")
    if "multipleOf" in schema:
        out.append(f"multiple_of={schema['multipleOf']!a}")
    return out


def _constraints(schema: Mapping[str, Any]) -> list[str]:
    """Field(...) keyword arguments for the validation keywords of one scalar/array schema."""
    if "$ref" in schema:
        return []
    out = _numeric_constraints(schema)
    for key, arg in (
        ("minLength", "min_length"),
        ("maxLength", "max_length"),
        ("minItems", "min_length"),
        ("maxItems", "max_length"),
    ):
        if key in schema:
            out.append(f"{arg}={schema[key]!a}")
    if "pattern" in schema:
        out.append(f"pattern={naming.string_literal(schema['pattern'])}")
    return out


def _unwrap_single_all_of(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """`allOf: [X]` with only annotations beside it is X (the usual way to describe a $ref)."""
    parts = schema.get("allOf")
    if isinstance(parts, list) and len(parts) == 1:
        structural = set(schema) & _VALIDATION_KEYS - {"allOf", "nullable", "default"}
        if not structural:
            return parts[0]  # type: ignore[no-any-return]
    return schema


#: Where the server's generated models import the contracts' enums from: the core, the
#: lowest layer, so that every other one imports them.
VOCABULARY_MODULE = "orchestrator_core.vocabulary"


class ModelBuilder:
    """Collects the classes for a set of named schemas and renders them as one module."""

    def __init__(self, schemas: Mapping[str, Any]) -> None:
        self._schemas = schemas
        self._classes: dict[str, _Class] = {}
        self._component_class: dict[str, str] = {}
        self._taken: set[str] = set(_RESERVED)
        self._imports: set[str] = set()
        for schema_name in schemas:
            name = naming.class_name(schema_name)
            if name in self._taken:
                raise CodegenError(
                    f"schema {schema_name}: class name {name} clashes with another name"
                )
            self._taken.add(name)
            self._component_class[schema_name] = name
        self._built: set[str] = set()

    # Public API ---------------------------------------------------------------------------

    def add_components(self) -> None:
        """Generate a class for every components schema."""
        for schema_name in self._schemas:
            self.component(schema_name)

    def component(self, schema_name: str) -> str:
        """The class of a components schema, generating it on first use."""
        if schema_name not in self._schemas:
            raise CodegenError(f"$ref {SCHEMA_REF_PREFIX}{schema_name} names no schema")
        name = self._component_class[schema_name]
        if name not in self._built:
            self._built.add(name)
            self._named_class(name, self._schemas[schema_name], f"schema {schema_name}")
        return name

    def body_model(self, schema: Mapping[str, Any], hint: str, where: str, doc: str) -> str:
        """A BaseModel class for an operation body or SSE payload schema (a $ref or inline).

        An inline schema (or a $ref to an enum) gets a class named `hint`, documented by
        its own description or else by `doc`.
        """
        if "$ref" in schema and len(set(schema) & _VALIDATION_KEYS) == 1:
            target = self._ref(schema["$ref"], where)
            if self._classes[target].is_model:
                return target
        name = self._unique(naming.pascal(hint))
        self._named_class(name, {"description": doc, **schema}, where)
        return name

    def render(self, header: str, vocabulary_module: str = VOCABULARY_MODULE) -> str:
        """The models module source (unformatted; run it through ruff format). The enums
        are imported from `vocabulary_module`, rendered by `render_vocabulary`."""
        order, rebuild = self._order()
        enums = sorted(name for name, c in self._classes.items() if not c.is_model)
        modules = [m for m in _MODULES if m in self._imports and m != "enum"]
        out = [header, _MODULE_DOC, "", "from __future__ import annotations", ""]
        out += [f"import {m}" for m in modules]
        typing_names = [n for n in _TYPING_NAMES if n in self._imports]
        if typing_names:
            out.append(f"from typing import {', '.join(typing_names)}")
        out.append("")
        pyd = [n for n in _PYDANTIC_NAMES if n in self._imports]
        out.append(f"from pydantic import {', '.join(pyd)}")
        if enums:
            out.append("")
            out.append(f"from {vocabulary_module} import {', '.join(enums)}")
            out.append("")
            out.append(f"__all__ = [{', '.join(ascii(n) for n in sorted(self._classes))}]")
        for name in order:
            if self._classes[name].is_model:
                out += ["", "", *self._classes[name].lines]
        if rebuild:
            out += ["", ""]
            out += [f"{name}.model_rebuild()" for name in rebuild]
        return "\n".join(out) + "\n"

    def render_vocabulary(self, header: str) -> str:
        """The vocabulary module source: every string enum of the contracts, in name order
        (unformatted; run it through ruff format)."""
        enums = sorted(name for name, c in self._classes.items() if not c.is_model)
        out = [header, _VOCABULARY_DOC, "", "from __future__ import annotations", "", "import enum"]
        for name in enums:
            out += ["", "", *self._classes[name].lines]
        return "\n".join(out) + "\n"

    # Classes ------------------------------------------------------------------------------

    def _unique(self, hint: str) -> str:
        name, n = hint, 2
        while name in self._taken:
            name, n = f"{hint}{n}", n + 1
        self._taken.add(name)
        return name

    def _use(self, *names: str) -> None:
        self._imports.update(names)

    def _doc(self, schema: Mapping[str, Any], default: str) -> str:
        text = schema.get("description") or default
        return naming.docstring(str(text), "    ")

    def _named_class(self, name: str, schema: Mapping[str, Any], where: str) -> None:
        _check_keywords(schema, where)
        values = schema.get("enum")
        if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
            self._enum_class(name, schema, where)
        elif _is_object(schema) or "allOf" in schema:
            self._object_class(name, self._merge_all_of(schema, where), where)
        else:
            self._root_class(name, schema, where)

    def _enum_class(self, name: str, schema: Mapping[str, Any], where: str) -> None:
        self._use("enum")
        lines = [f"class {name}(enum.StrEnum):", self._doc(schema, f"The `{name}` values."), ""]
        members: set[str] = set()
        for value in schema["enum"]:
            member = naming.enum_member(value)
            if member in members:
                raise CodegenError(f"{where}: enum values collide on member name {member}")
            members.add(member)
            lines.append(f"    {member} = {value!a}")
        self._classes[name] = _Class(name, lines, is_model=False)

    def _root_class(self, name: str, schema: Mapping[str, Any], where: str) -> None:
        self._use("RootModel")
        deps: set[str] = set()
        annotation = self._annotation(schema, name, deps, where)
        lines = [
            f"class {name}(RootModel[{annotation}]):",
            self._doc(schema, f"The `{name}` schema."),
        ]
        constraints = _constraints(schema)
        if constraints:
            self._use("Field")
            lines += ["", f"    root: {annotation} = Field({', '.join(constraints)})"]
        self._classes[name] = _Class(name, lines, deps)

    def _object_class(self, name: str, schema: Mapping[str, Any], where: str) -> None:
        self._use("BaseModel", "ConfigDict")
        deps: set[str] = set()
        required = set(schema.get("required") or [])
        properties: Mapping[str, Any] = schema.get("properties") or {}
        unknown = required - set(properties)
        if unknown:
            raise CodegenError(f"{where}: required names no property: {sorted(unknown)}")
        fields: list[str] = []
        names: set[str] = set()
        not_null: list[str] = []
        for prop, prop_schema in properties.items():
            attr, alias = naming.field_name(prop)
            if attr in names:
                raise CodegenError(f"{where}: properties collide on attribute {attr}")
            names.add(attr)
            fields += self._field(
                attr, alias, prop_schema, prop in required, name, deps, f"{where}.{prop}"
            )
            if prop not in required and _absent_not_null(prop_schema):
                not_null.append(attr)
        extra = schema.get("additionalProperties", True)
        config = [f'extra="{"forbid" if extra is False else "allow"}"']
        if any(n.startswith("model_") for n in names):
            config.append("protected_namespaces=()")
        lines = [f"class {name}(BaseModel):", self._doc(schema, f"The `{name}` object."), ""]
        lines.append(f"    model_config = ConfigDict({', '.join(config)})")
        if isinstance(extra, Mapping) and extra:
            self._use("Field")
            value = self._nested(extra, f"{name}Value", deps, f"{where}.additionalProperties")
            lines += ["", f"    __pydantic_extra__: dict[str, {value}] = Field(init=False)"]
        if fields:
            lines += ["", *fields]
        if not_null:
            self._use("field_validator", "ValidationInfo", "Any")
            listed = ", ".join(f'"{attr}"' for attr in not_null)
            lines += [
                "",
                f'    @field_validator({listed}, mode="before")',
                "    @classmethod",
                "    def _refuse_null(cls, value: Any, info: ValidationInfo) -> Any:",
                '        """In JSON these fields may be absent, but not null (not nullable)."""',
                '        if value is None and info.mode == "json":',
                '            raise ValueError("must not be null; leave the field out instead")',
                "        return value",
            ]
        self._classes[name] = _Class(name, lines, deps)

    def _merge_all_of(self, schema: Mapping[str, Any], where: str) -> Mapping[str, Any]:
        """An object schema with the properties and required names of all its allOf parts."""
        parts = schema.get("allOf")
        if not parts:
            return schema
        properties: dict[str, Any] = {}
        required: list[str] = []
        merged: dict[str, Any] = {"type": "object"}
        for i, part in enumerate(parts):
            resolved = part
            if "$ref" in part:
                resolved = self._schemas[self._ref_name(part["$ref"], where)]
            resolved = self._merge_all_of(resolved, f"{where}.allOf[{i}]")
            if not _is_object(resolved):
                raise CodegenError(f"{where}: allOf part {i} is not an object schema")
            properties.update(resolved.get("properties") or {})
            required += [r for r in resolved.get("required") or [] if r not in required]
            if "additionalProperties" in resolved:
                merged["additionalProperties"] = resolved["additionalProperties"]
        properties.update(schema.get("properties") or {})
        required += [r for r in schema.get("required") or [] if r not in required]
        merged.update({k: v for k, v in schema.items() if k not in ("allOf", "properties")})
        merged["properties"] = properties
        merged["required"] = required
        return merged

    # Fields and annotations ---------------------------------------------------------------

    def _field(
        self,
        attr: str,
        alias: str | None,
        raw: Mapping[str, Any],
        required: bool,
        owner: str,
        deps: set[str],
        where: str,
    ) -> list[str]:
        schema = _unwrap_single_all_of(raw)
        _check_keywords(raw, where)
        annotation = self._annotation(schema, f"{owner}{naming.pascal(attr)}", deps, where)
        nullable = bool(raw.get("nullable") or schema.get("nullable") or self._nullable_ref(schema))
        args: list[str] = []
        default = None if required else raw.get("default", schema.get("default"))
        if not required:
            args.append(self._default(default, schema, where))
        if nullable or (not required and default is None):
            annotation = f"{annotation} | None"
        if alias is not None:
            args.append(f"alias={alias!a}")
        args += _constraints(schema)
        description = raw.get("description") or schema.get("description")
        if description:
            args.append(f"description={naming.string_literal(' '.join(str(description).split()))}")
        if not args:
            return [f"    {attr}: {annotation}"]
        if args == ["default=None"]:
            return [f"    {attr}: {annotation} = None"]
        self._use("Field")
        return [f"    {attr}: {annotation} = Field({', '.join(args)})"]

    def _default(self, value: Any, schema: Mapping[str, Any], where: str) -> str:
        if value is None:
            return "default=None"
        if "$ref" in schema:
            target = self._schemas[self._ref_name(schema["$ref"], where)]
            if isinstance(value, str) and value in (target.get("enum") or []):
                return f"default={self.component(self._ref_name(schema['$ref'], where))}." + (
                    naming.enum_member(value)
                )
        if isinstance(value, bool | int | float | str):
            return f"default={value!a}"
        if value == []:
            return "default_factory=list"
        if value == {}:
            return "default_factory=dict"
        raise CodegenError(f"{where}: default {value!r} is not supported by codegen")

    def _nested(self, raw: Mapping[str, Any], hint: str, deps: set[str], where: str) -> str:
        """An annotation usable inside list[...] / dict[...]: constraints ride in Annotated."""
        schema = _unwrap_single_all_of(raw)
        _check_keywords(raw, where)
        annotation = self._annotation(schema, hint, deps, where)
        constraints = _constraints(schema)
        if constraints:
            self._use("Annotated", "Field")
            annotation = f"Annotated[{annotation}, Field({', '.join(constraints)})]"
        if raw.get("nullable") or schema.get("nullable"):
            annotation = f"{annotation} | None"
        return annotation

    def _nullable_ref(self, schema: Mapping[str, Any]) -> bool:
        """Whether ``schema`` is a `$ref` to a component that is itself nullable."""
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith(SCHEMA_REF_PREFIX):
            return False
        target = self._schemas.get(ref.removeprefix(SCHEMA_REF_PREFIX), {})
        return bool(isinstance(target, Mapping) and target.get("nullable"))

    def _ref_name(self, ref: Any, where: str) -> str:
        if not isinstance(ref, str) or not ref.startswith(SCHEMA_REF_PREFIX):
            raise CodegenError(f"{where}: $ref {ref!r} is not a {SCHEMA_REF_PREFIX}<name> ref")
        schema_name = ref[len(SCHEMA_REF_PREFIX) :]
        if schema_name not in self._schemas:
            raise CodegenError(f"{where}: $ref {ref} names no schema")
        return schema_name

    def _ref(self, ref: Any, where: str) -> str:
        return self.component(self._ref_name(ref, where))

    def _annotation(self, schema: Mapping[str, Any], hint: str, deps: set[str], where: str) -> str:
        """The type annotation of a schema, without its constraints or nullability."""
        _check_keywords(schema, where)
        if "$ref" in schema:
            name = self._ref(schema["$ref"], where)
            deps.add(name)
            return name
        for key in ("oneOf", "anyOf"):
            if key in schema:
                options = [
                    self._nested(option, f"{hint}Option{i + 1}", deps, f"{where}.{key}[{i}]")
                    for i, option in enumerate(schema[key])
                ]
                return " | ".join(dict.fromkeys(options))
        if "enum" in schema:
            values = [v for v in schema["enum"] if v is not None]
            self._use("Literal")
            return f"Literal[{', '.join(ascii(v) for v in values)}]"
        kind = schema.get("type")
        if _is_object(schema) or len(schema.get("allOf") or []) > 1:
            extra = schema.get("additionalProperties", True)
            if "properties" in schema or "allOf" in schema or extra is False:
                return self._inline_class(schema, hint, deps, where)
            if isinstance(extra, Mapping) and extra:
                return f"dict[str, {self._nested(extra, f'{hint}Value', deps, where)}]"
            self._use("Any")
            return "dict[str, Any]"
        if kind == "array":
            if "items" not in schema:
                self._use("Any")
                return "list[Any]"
            return f"list[{self._nested(schema['items'], f'{hint}Item', deps, f'{where}[]')}]"
        if kind == "string" and schema.get("format") in _STRING_FORMATS:
            annotation = _STRING_FORMATS[schema["format"]]
            self._use(annotation.split(".")[0])
            return annotation
        if kind in _SCALARS:
            annotation = _SCALARS[kind]
            if annotation != "str":
                self._use(annotation)
            return annotation
        if kind is None:
            self._use("Any")
            return "Any"
        raise CodegenError(f"{where}: schema type {kind!r} is not supported by codegen")

    def _inline_class(
        self, schema: Mapping[str, Any], hint: str, deps: set[str], where: str
    ) -> str:
        name = self._unique(naming.pascal(hint))
        self._object_class(name, self._merge_all_of(schema, where), where)
        deps.add(name)
        return name

    # Ordering -----------------------------------------------------------------------------

    def _order(self) -> tuple[list[str], list[str]]:
        """Classes in dependency order (ties by name); classes on a cycle need model_rebuild."""
        pending = {name: set(c.deps) - {name} for name, c in self._classes.items()}
        order: list[str] = []
        ready = [name for name, deps in pending.items() if not deps]
        heapq.heapify(ready)
        while pending:
            name = heapq.heappop(ready) if ready else min(pending)
            if name not in pending:
                continue
            del pending[name]
            order.append(name)
            for other, deps in pending.items():
                if name in deps:
                    deps.discard(name)
                    if not deps:
                        heapq.heappush(ready, other)
        return order, sorted(name for name in self._classes if self._on_cycle(name))

    def _on_cycle(self, start: str) -> bool:
        """Whether a class reaches itself through its dependencies."""
        seen: set[str] = set()
        stack = list(self._classes[start].deps)
        while stack:
            name = stack.pop()
            if name == start:
                return True
            if name not in seen:
                seen.add(name)
                stack += self._classes[name].deps
        return False


_VOCABULARY_DOC = '''"""The contracts' vocabulary: every string enum of the two contracts.

Generated once, here in the core, the lowest layer: the core, the config, the adapters and
the generated pydantic models all import these classes, so no layer keeps a copy of its
own and no value is translated between layers.
"""'''

_MODULE_DOC = '''"""Pydantic v2 models, one per schema of the data and control contracts.

Validate a request body with `Model.model_validate_json(body)`: every bad field is
reported in one `ValidationError`. Scalars are strict, so JSON values are never coerced.
"""'''
