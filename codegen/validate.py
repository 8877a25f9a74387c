"""Validate the contracts beyond what generation needs.

- Each contract is a valid OpenAPI 3.0 document (openapi-spec-validator, every error).
- Every operation names the requirements it serves in `x-req-id`, and every ID named
  there (on operations or schemas) exists in the spec.
- Public APIs are versioned (ORCH-3044): `info.version` is semantic and the same in both
  contracts, and every path is under `/v<major>/` except the unversioned probes.
- Every example in a contract conforms to the schema it illustrates (OAS 3.0 validator
  with format checks, so a bad uuid in an example is caught too). An event stream's
  schema describes one frame as an SSE parser reads it (`id`, `event`, `data`); its
  example is a whole stream, checked frame by frame; the ids its frames carry must count
  up by one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import OpenAPIV30SpecValidator
from referencing.exceptions import Unresolvable

from codegen.contracts import Contract, ContractSet
from codegen.errors import CodegenError
from codegen.operations import req_ids

UNVERSIONED_PATHS = frozenset({"/metrics", "/livez", "/readyz"})
SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
MAX_ERRORS_PER_CONTRACT = 20
_SUBSCHEMA_LISTS = ("allOf", "oneOf", "anyOf")


@dataclass(frozen=True)
class Example:
    """An example value, the JSON pointer of the schema it must conform to, and what is
    wrong with it that no schema can say (a stream frame's id out of sequence)."""

    where: str
    schema_pointer: str
    value: Any
    problem: str | None = None


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _walk_schema(pointer: str, node: Any) -> Iterator[Example]:
    if not isinstance(node, Mapping):
        return
    if "example" in node:
        yield Example(pointer, pointer, node["example"])
    for name, sub in (node.get("properties") or {}).items():
        yield from _walk_schema(f"{pointer}/properties/{_escape(name)}", sub)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), Mapping):
            yield from _walk_schema(f"{pointer}/{key}", node[key])
    for key in _SUBSCHEMA_LISTS:
        for i, sub in enumerate(node.get(key) or []):
            yield from _walk_schema(f"{pointer}/{key}/{i}", sub)


SSE_MEDIA = "text~1event-stream"


def sse_frames(stream: str) -> list[dict[str, str]]:
    """The frames of an event stream's text as an SSE parser reads them: `event` (default
    `message`), `data` (its lines joined) and, when the frame sends one, `id`."""
    frames = []
    for block in stream.split("\n\n"):
        fields: dict[str, list[str]] = {}
        for line in block.splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        if "data" in fields:
            event = fields.get("event", ["message"])[-1]
            frame = {"event": event, "data": "\n".join(fields["data"])}
            if "id" in fields:
                frame["id"] = fields["id"][-1]
            frames.append(frame)
    return frames


def _media_examples(pointer: str, child: str, where: str, value: Any) -> Iterator[Example]:
    """A media type's example: one value, or for an event stream one per frame, each
    frame whose id does not follow the previous frame's id marked with that problem."""
    if not (pointer.endswith(f"/{SSE_MEDIA}") and isinstance(value, str)):
        yield Example(where, child, value)
        return
    due: int | None = None
    for i, frame in enumerate(sse_frames(value)):
        problem = None
        event_id = frame.get("id", "")
        if event_id.isdecimal():
            if due is not None and int(event_id) != due:
                problem = f"id {event_id} where {due} was due"
            due = int(event_id) + 1
        yield Example(f"{where} (frame {i})", child, frame, problem)


def _walk(contract: Contract, pointer: str, node: Any) -> Iterator[Example]:
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(contract, f"{pointer}/{i}", item)
        return
    if not isinstance(node, Mapping):
        return
    for key, value in node.items():
        child = f"{pointer}/{_escape(key)}"
        if key == "schema" and isinstance(value, Mapping):
            if "example" in node:
                yield from _media_examples(pointer, child, pointer, node["example"])
            for name, example in (node.get("examples") or {}).items():
                resolved = contract.resolve(example)
                if "value" in resolved:
                    where = f"{pointer}/examples/{_escape(name)}"
                    yield from _media_examples(pointer, child, where, resolved["value"])
            yield from _walk_schema(child, value)
        elif pointer == "#/components" and key == "schemas":
            for name, schema in value.items():
                yield from _walk_schema(f"{child}/{_escape(name)}", schema)
        elif key not in ("example", "examples"):
            yield from _walk(contract, child, value)


def examples(contract: Contract) -> list[Example]:
    """Every example in a contract (schemas, parameters, headers, bodies, SSE events)."""
    return list(_walk(contract, "#", contract.doc))


def _spec_errors(contract: Contract) -> list[str]:
    errors = []
    try:
        for error in OpenAPIV30SpecValidator(contract.doc).iter_errors():
            location = "/".join(str(p) for p in error.absolute_path) or "(document)"
            errors.append(f"{contract.path}: {location}: {error.message}")
    except Unresolvable as exc:
        errors.append(f"{contract.path}: $ref {exc.ref} cannot be resolved")
    return errors[:MAX_ERRORS_PER_CONTRACT]


def _example_errors(contract: Contract) -> list[str]:
    errors = []
    for example in examples(contract):
        if example.problem is not None:
            errors.append(f"{contract.path}: example at {example.where}: {example.problem}")
        validator = OAS30Validator(
            {**contract.doc, "$ref": example.schema_pointer},
            format_checker=oas30_format_checker,
        )
        for error in validator.iter_errors(example.value):
            at = "/".join(str(p) for p in error.absolute_path)
            errors.append(
                f"{contract.path}: example at {example.where}"
                f"{f' (at {at})' if at else ''}: {error.message}"
            )
    return errors


def _req_id_errors(contract: Contract, spec_ids: frozenset[str]) -> list[str]:
    errors = []
    nodes: list[tuple[str, Mapping[str, Any]]] = [
        (f"operation {op.operation_id}", op.node) for op in contract.operations()
    ]
    nodes += [(f"schema {name}", schema) for name, schema in contract.schemas.items()]
    for label, node in nodes:
        where = f"{contract.path} {label}"
        try:
            ids = req_ids(node, where)
        except CodegenError as exc:
            errors.append(str(exc))
            continue
        if label.startswith("operation") and not ids:
            errors.append(f"{where}: no x-req-id")
        errors += [f"{where}: x-req-id {i} is not in the spec" for i in ids if i not in spec_ids]
    return errors


def _version_errors(contracts: ContractSet) -> list[str]:
    errors = []
    versions = {
        c.path: str((c.doc.get("info") or {}).get("version", "")) for c in contracts.contracts
    }
    if len(set(versions.values())) > 1:
        errors.append(f"info.version differs between contracts: {versions}")
    for contract in contracts.contracts:
        match = SEMVER.match(versions[contract.path])
        if not match:
            errors.append(f"{contract.path}: info.version {versions[contract.path]!r} is not X.Y.Z")
            continue
        prefix = f"/v{match.group(1)}/"
        errors += [
            f"{contract.path}: path {path} is not under {prefix} (ORCH-3044)"
            for path in contract.doc.get("paths") or {}
            if not path.startswith(prefix) and path not in UNVERSIONED_PATHS
        ]
    return errors


def validate(contracts: ContractSet, spec_ids: frozenset[str]) -> list[str]:
    """Every problem found in the contracts; empty when they pass."""
    errors: list[str] = []
    for contract in contracts.contracts:
        spec_errors = _spec_errors(contract)
        errors += spec_errors
        if not spec_errors:
            errors += _example_errors(contract)
        errors += _req_id_errors(contract, spec_ids)
    errors += _version_errors(contracts)
    return errors
