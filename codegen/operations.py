"""Build and render the operation table (`generated/operations.py`).

For each operation of both contracts: method, path, contract, the model of its JSON
request body, the model of each response by status (None for a non-JSON or empty body),
its `x-req-id` list and its `x-sse-events` (event name -> payload model, in contract order).
Inline bodies get classes of their own in the models module, named after the operation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from codegen import naming
from codegen.contracts import Contract, ContractSet, OperationSpec
from codegen.errors import CodegenError
from codegen.pydantic_models import ModelBuilder

REQ_ID = re.compile(r"^ORCH-\d{4}$")
_STATUS = re.compile(r"^[1-5]\d\d$")


@dataclass(frozen=True)
class OperationEntry:
    """One row of the operation table, with model class names instead of classes."""

    spec: OperationSpec
    request_model: str | None
    responses: Mapping[int, str | None]
    req_ids: tuple[str, ...]
    sse_events: Mapping[str, str]


def _is_json(media_type: str) -> bool:
    base = media_type.split(";")[0].strip().lower()
    return base == "application/json" or base.endswith("+json")


def _json_schema(contract: Contract, node: Any, where: str) -> Mapping[str, Any] | None:
    """The schema of the JSON media type of a request body or response, if it has one."""
    resolved = contract.resolve(node)
    content = resolved.get("content") or {}
    json_types = [m for m in content if _is_json(m)]
    if len(json_types) > 1:
        raise CodegenError(f"{where}: more than one JSON media type: {json_types}")
    if not json_types:
        return None
    schema = content[json_types[0]].get("schema")
    if schema is None:
        raise CodegenError(f"{where}: media type {json_types[0]} has no schema")
    return schema  # type: ignore[no-any-return]


def req_ids(node: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """The `x-req-id` list of a node (an operation or a schema); malformed ids fail."""
    raw = node.get("x-req-id", [])
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(i, str) and REQ_ID.match(i) for i in raw):
        raise CodegenError(f"{where}: x-req-id must be a list of ORCH-NNNN ids, got {raw!r}")
    return tuple(raw)


def _entry(contract: Contract, op: OperationSpec, builder: ModelBuilder) -> OperationEntry:
    where = f"{contract.path} {op.operation_id}"
    stem = naming.pascal(op.operation_id)
    request_model = None
    if "requestBody" in op.node:
        schema = _json_schema(contract, op.node["requestBody"], f"{where} requestBody")
        if schema is not None:
            request_model = builder.body_model(
                schema,
                f"{stem}Request",
                f"{where} requestBody",
                f"The JSON request body of {op.operation_id}.",
            )
    responses: dict[int, str | None] = {}
    for status, response in (op.node.get("responses") or {}).items():
        if not _STATUS.match(status):
            raise CodegenError(
                f"{where}: response {status!r} is not a numeric status; the operation table"
                " keys responses by int"
            )
        schema = _json_schema(contract, response, f"{where} response {status}")
        responses[int(status)] = (
            None
            if schema is None
            else builder.body_model(
                schema,
                f"{stem}Response{status}",
                f"{where} response {status}",
                f"The JSON body of the {status} response of {op.operation_id}.",
            )
        )
    events: dict[str, str] = {}
    raw_events = op.node.get("x-sse-events", [])
    if not isinstance(raw_events, list):
        raise CodegenError(f"{where}: x-sse-events must be a list of {{name, schema}}")
    for event in raw_events:
        name = event.get("name") if isinstance(event, Mapping) else None
        if not isinstance(name, str) or "schema" not in event or name in events:
            raise CodegenError(f"{where}: x-sse-events entry {event!r} needs a unique name")
        events[name] = builder.body_model(
            event["schema"],
            f"{stem}{naming.pascal(name)}Event",
            f"{where} event {name}",
            f"The data of the `{name}` event of {op.operation_id}.",
        )
    return OperationEntry(
        spec=op,
        request_model=request_model,
        responses=dict(sorted(responses.items())),
        req_ids=req_ids(op.node, where),
        sse_events=events,
    )


def build(contracts: ContractSet, builder: ModelBuilder) -> list[OperationEntry]:
    """Every operation of both contracts, sorted by operationId; ids must be unique."""
    entries: dict[str, OperationEntry] = {}
    for contract in contracts.contracts:
        for op in contract.operations():
            if op.operation_id in entries:
                first = entries[op.operation_id].spec.contract
                raise CodegenError(
                    f"operationId {op.operation_id} appears in both {first} and {op.contract}"
                )
            entries[op.operation_id] = _entry(contract, op, builder)
    return [entries[key] for key in sorted(entries)]


def _model_ref(name: str | None) -> str:
    return "None" if name is None else f"models.{name}"


def _render_entry(entry: OperationEntry) -> list[str]:
    spec = entry.spec
    responses = ", ".join(f"{k}: {_model_ref(v)}" for k, v in entry.responses.items())
    events = ", ".join(f"{k!a}: models.{v}" for k, v in entry.sse_events.items())
    ids = "".join(f"{i!a}, " for i in entry.req_ids)
    return [
        f"    {spec.operation_id!a}: Operation(",
        f"        operation_id={spec.operation_id!a},",
        f"        method={spec.method!a},",
        f"        path={spec.path!a},",
        f"        contract={spec.contract!a},",
        f"        request_model={_model_ref(entry.request_model)},",
        f"        responses=MappingProxyType({{{responses}}}),",
        f"        req_ids=({ids}),",
        f"        sse_events=MappingProxyType({{{events}}}),",
        "    ),",
    ]


_PREAMBLE = '''"""The operation table: each operation of both contracts, by operationId.

`OPERATIONS[operation_id]` gives where the operation is served, which generated model
validates its JSON request body, which model describes each response by status (None when
the body is not JSON or empty), the requirement ids it serves (`x-req-id`) and, for a
streaming operation, the payload model of each Server-Sent Event name (`x-sse-events`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel

from . import models


@dataclass(frozen=True)
class Operation:
    """One contract operation and the generated models that carry its bodies."""

    operation_id: str
    method: str
    path: str
    contract: Literal["data", "control"]
    request_model: type[BaseModel] | None
    responses: Mapping[int, type[BaseModel] | None]
    req_ids: tuple[str, ...]
    sse_events: Mapping[str, type[BaseModel]]

'''


def render(entries: list[OperationEntry], header: str) -> str:
    """The operations module source (unformatted; run it through ruff format)."""
    lines = [
        header + "\n" + _PREAMBLE,
        "",
        "OPERATIONS: Mapping[str, Operation] = MappingProxyType({",
    ]
    for entry in entries:
        lines += _render_entry(entry)
    lines.append("})")
    return "\n".join(lines) + "\n"
