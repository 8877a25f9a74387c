"""Loading contracts: JSON-compatible YAML, digests, $ref resolution, shared schemas."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from codegen import contracts
from codegen.errors import CodegenError


def test_load_reads_both_contracts_with_their_sha256(repo: Path) -> None:
    loaded = contracts.load(repo)
    assert [c.name for c in loaded.contracts] == ["data", "control"]
    data = loaded.by_name("data")
    raw = (repo / "contracts/openapi/data.yaml").read_bytes()
    assert data.sha256 == hashlib.sha256(raw).hexdigest()
    assert data.path == "contracts/openapi/data.yaml"


def test_yaml_keys_become_strings_and_timestamps_stay_text() -> None:
    doc = contracts.load_yaml("responses:\n  200: ok\nwhen: 2024-01-02\n", "t.yaml")
    assert doc == {"responses": {"200": "ok"}, "when": "2024-01-02"}


def test_duplicate_yaml_keys_are_refused() -> None:
    with pytest.raises(CodegenError, match="duplicate key 'a'"):
        contracts.load_yaml("a: 1\na: 2\n", "t.yaml")


def test_resolve_follows_local_refs(repo: Path) -> None:
    data = contracts.load(repo).by_name("data")
    op = next(o for o in data.operations() if o.operation_id == "createThing")
    response = data.resolve(op.node["responses"]["400"])
    schema = response["content"]["application/json"]["schema"]
    assert data.resolve(schema) is data.schemas["ErrorEnvelope"]


def test_a_ref_naming_nothing_fails(repo: Path) -> None:
    data = contracts.load(repo).by_name("data")
    with pytest.raises(CodegenError, match="names nothing"):
        data.resolve({"$ref": "#/components/schemas/Nope"})


def test_operations_come_in_contract_order(repo: Path) -> None:
    loaded = contracts.load(repo)
    ids = [op.operation_id for c in loaded.contracts for op in c.operations()]
    assert ids == [
        "createThing",
        "streamThing",
        "deleteThing",
        "listThings",
        "getMetrics",
        "drainThing",
    ]


def test_same_named_schemas_must_be_identical(repo: Path) -> None:
    path = repo / "contracts/openapi/control.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["components"]["schemas"]["Ticket"]["properties"]["position"]["minimum"] = 1
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(CodegenError) as info:
        contracts.load(repo)
    message = str(info.value)
    assert "schema Ticket differs between" in message
    assert "#/components/schemas/Ticket/properties/position/minimum" in message


def test_a_missing_contract_is_named(repo: Path) -> None:
    (repo / "contracts/openapi/control.yaml").unlink()
    with pytest.raises(CodegenError, match=r"contracts/openapi/control\.yaml: contract not found"):
        contracts.load(repo)


def test_python_header_names_each_source_and_digest(repo: Path) -> None:
    loaded = contracts.load(repo)
    header = contracts.python_header(loaded, "regen-openapi")
    assert "Do not edit: run `python xtask.py regen-openapi`" in header
    for contract in loaded.contracts:
        assert f"{contract.sha256}  {contract.path}" in header
    assert all(len(line) <= 100 for line in header.splitlines())
