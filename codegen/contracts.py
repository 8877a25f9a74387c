"""Load the OpenAPI contracts: YAML to JSON-compatible data, sha256, local $ref resolution.

Both contracts define their shared schemas (ErrorEnvelope, Engine, ...) in full; `load`
refuses a pair whose same-named schemas differ, so generated code has one class per name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from codegen import layout
from codegen.errors import CodegenError

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SCHEMA_REF_PREFIX = "#/components/schemas/"


class _JsonCompatibleLoader(yaml.SafeLoader):
    """A safe loader that keeps timestamps as strings and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise CodegenError(f"duplicate key {key!r} {key_node.start_mark}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_JsonCompatibleLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _json_compatible(node: Any, where: str) -> Any:
    """Turn integer mapping keys (YAML `200:`) into strings; refuse any other non-JSON key."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(key, bool) or not isinstance(key, str | int):
                raise CodegenError(f"{where}: mapping key {key!r} is not a string")
            out[str(key)] = _json_compatible(value, f"{where}/{key}")
        return out
    if isinstance(node, list):
        return [_json_compatible(item, f"{where}/{i}") for i, item in enumerate(node)]
    return node


def load_yaml(text: str, where: str) -> Any:
    """Parse YAML text into JSON-compatible data (string keys, timestamps kept as text)."""
    try:
        data = yaml.load(text, Loader=_JsonCompatibleLoader)
    except yaml.YAMLError as exc:
        raise CodegenError(f"{where}: invalid YAML: {exc}") from exc
    return _json_compatible(data, where)


@dataclass(frozen=True)
class OperationSpec:
    """One operation of a contract, as written (refs not yet resolved)."""

    contract: str
    operation_id: str
    method: str
    path: str
    node: Mapping[str, Any]


@dataclass(frozen=True)
class Contract:
    """One loaded contract: its name ("data"/"control"), repo-relative path, digest and data."""

    name: str
    path: str
    sha256: str
    doc: Mapping[str, Any]

    @property
    def schemas(self) -> Mapping[str, Any]:
        """The contract's components.schemas (empty when it has none)."""
        components = self.doc.get("components") or {}
        return components.get("schemas") or {}

    def resolve(self, node: Any) -> Any:
        """Follow local `$ref`s (any JSON pointer into this contract) to the node they name."""
        seen: set[str] = set()
        while isinstance(node, Mapping) and "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise CodegenError(f"{self.path}: only local $refs are supported, got {ref!r}")
            if ref in seen:
                raise CodegenError(f"{self.path}: $ref cycle through {ref}")
            seen.add(ref)
            node = self.pointer(ref)
        return node

    def pointer(self, ref: str) -> Any:
        """The node at a local JSON pointer such as `#/components/schemas/TaskRequest`."""
        node: Any = self.doc
        for raw in ref[2:].split("/"):
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                raise CodegenError(f"{self.path}: $ref {ref} names nothing")
        return node

    def operations(self) -> Iterator[OperationSpec]:
        """Every operation, in path then method order as written in the contract."""
        for path, item in (self.doc.get("paths") or {}).items():
            resolved = self.resolve(item)
            for method in HTTP_METHODS:
                if method not in resolved:
                    continue
                node = resolved[method]
                op_id = node.get("operationId")
                if not isinstance(op_id, str) or not op_id:
                    raise CodegenError(f"{self.path}: {method.upper()} {path} has no operationId")
                yield OperationSpec(self.name, op_id, method.upper(), path, node)


@dataclass(frozen=True)
class ContractSet:
    """Both contracts, plus the union of their schemas (same-named schemas are identical)."""

    contracts: tuple[Contract, ...]
    schemas: Mapping[str, Any]

    def by_name(self, name: str) -> Contract:
        """The contract called `name` ("data" or "control")."""
        for contract in self.contracts:
            if contract.name == name:
                return contract
        raise KeyError(name)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of bytes, as written in generated headers."""
    return hashlib.sha256(data).hexdigest()


def load_contract(root: Path, name: str, rel_path: str) -> Contract:
    """Read and parse one contract; it must be a mapping with `openapi` and `paths`."""
    path = root / rel_path
    if not path.is_file():
        raise CodegenError(f"{rel_path}: contract not found")
    raw = path.read_bytes()
    doc = load_yaml(raw.decode("utf-8"), rel_path)
    if not isinstance(doc, dict) or "openapi" not in doc or "paths" not in doc:
        raise CodegenError(f"{rel_path}: not an OpenAPI document (no `openapi`/`paths`)")
    return Contract(name=name, path=rel_path, sha256=sha256_hex(raw), doc=doc)


def _first_difference(a: Any, b: Any, where: str) -> str:
    """The JSON pointer of the first place two equal-shaped values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b or a[key] != b[key]:
                if key in a and key in b:
                    return _first_difference(a[key], b[key], f"{where}/{key}")
                return f"{where}/{key}"
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{where}/{i}")
    return where


def merge_schemas(contracts: tuple[Contract, ...]) -> dict[str, Any]:
    """All components.schemas by name; a name defined differently in two contracts fails."""
    merged: dict[str, Any] = {}
    origin: dict[str, Contract] = {}
    for contract in contracts:
        for name, schema in contract.schemas.items():
            if name in merged and merged[name] != schema:
                where = _first_difference(merged[name], schema, "")
                raise CodegenError(
                    f"schema {name} differs between {origin[name].path} and {contract.path}"
                    f" (first difference at {SCHEMA_REF_PREFIX}{name}{where})"
                )
            merged.setdefault(name, schema)
            origin.setdefault(name, contract)
    return dict(sorted(merged.items()))


def load(root: Path) -> ContractSet:
    """Load both contracts of the repository at `root`."""
    contracts = tuple(
        load_contract(root, name, rel_path) for name, rel_path in layout.CONTRACTS.items()
    )
    return ContractSet(contracts=contracts, schemas=merge_schemas(contracts))


def python_header(contracts: ContractSet, command: str) -> str:
    """The do-not-edit comment block that opens every generated Python file."""
    lines = [
        f"# Generated by codegen. Do not edit: run `python xtask.py {command}`.",
        "# Sources (sha256):",
    ]
    lines += [f"#   {c.sha256}  {c.path}" for c in contracts.contracts]
    return "\n".join(lines) + "\n"
