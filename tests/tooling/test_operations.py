"""The generated operation table: every operation of both contracts, with its models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from codegen import contracts, operations, pydantic_models
from codegen.errors import CodegenError
from tests.tooling.support import REPO, build_repo, req_id, run_python, run_xtask

_DUMP = """
import json
from orchestratord_server.generated.operations import OPERATIONS

def name(model):
    return None if model is None else model.__name__

print(json.dumps({
    key: {
        "operation_id": op.operation_id,
        "method": op.method,
        "path": op.path,
        "contract": op.contract,
        "request_model": name(op.request_model),
        "responses": {str(k): name(v) for k, v in op.responses.items()},
        "req_ids": list(op.req_ids),
        "sse_events": {k: name(v) for k, v in op.sse_events.items()},
    }
    for key, op in OPERATIONS.items()
}))
"""


@pytest.fixture(scope="module")
def fixture_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The operation table generated for the miniature repository, as imported there."""
    root = build_repo(tmp_path_factory.mktemp("ops") / "repo")
    regen = run_xtask(root, "regen-openapi")
    assert regen.returncode == 0, regen.stdout + regen.stderr
    dump = run_python(root, "-c", _DUMP)
    assert dump.returncode == 0, dump.stderr
    return root, json.loads(dump.stdout)


def test_the_table_lists_every_operation_of_both_contracts_sorted(
    fixture_table: tuple[Path, dict[str, Any]],
) -> None:
    root, table = fixture_table
    assert list(table) == sorted(table)
    loaded = contracts.load(root)
    expected = {op.operation_id for c in loaded.contracts for op in c.operations()}
    assert set(table) == expected


def test_each_entry_carries_route_models_ids_and_events(
    fixture_table: tuple[Path, dict[str, Any]],
) -> None:
    table = fixture_table[1]
    assert table["createThing"] == {
        "operation_id": "createThing",
        "method": "POST",
        "path": "/v1/things",
        "contract": "data",
        "request_model": "ThingRequest",
        "responses": {"202": "Ticket", "400": "ErrorEnvelope"},
        "req_ids": [req_id(101), req_id(102)],
        "sse_events": {},
    }
    stream = table["streamThing"]
    assert stream["responses"] == {"200": None, "404": "ErrorEnvelope"}
    assert stream["sse_events"] == {"started": "StartedEvent", "end": "StreamThingEndEvent"}
    assert table["deleteThing"]["responses"] == {"204": None}
    assert table["listThings"]["responses"]["200"] == "ListThingsResponse200"
    assert table["drainThing"]["request_model"] == "DrainThingRequest"
    assert table["drainThing"]["contract"] == "control"
    assert table["getMetrics"]["responses"] == {"200": None}


def _build(repo: Path) -> list[operations.OperationEntry]:
    loaded = contracts.load(repo)
    builder = pydantic_models.ModelBuilder(loaded.schemas)
    builder.add_components()
    return operations.build(loaded, builder)


def _edit(repo: Path, name: str, edit: Any) -> None:
    path = repo / f"contracts/openapi/{name}.yaml"
    doc = yaml.safe_load(path.read_text())
    edit(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_a_non_numeric_response_status_is_refused(repo: Path) -> None:
    _edit(
        repo,
        "data",
        lambda d: d["paths"]["/v1/things/{id}"]["delete"]["responses"].update(
            {"default": {"description": "x"}}
        ),
    )
    with pytest.raises(CodegenError, match="'default' is not a numeric status"):
        _build(repo)


def test_an_operation_id_used_twice_is_refused(repo: Path) -> None:
    _edit(
        repo,
        "control",
        lambda d: d["paths"]["/metrics"]["get"].update({"operationId": "createThing"}),
    )
    with pytest.raises(CodegenError, match="operationId createThing appears in both"):
        _build(repo)


def test_malformed_req_ids_are_refused(repo: Path) -> None:
    _edit(
        repo,
        "data",
        lambda d: d["paths"]["/v1/things/{id}"]["delete"].update({"x-req-id": ["ORCH-1"]}),
    )
    with pytest.raises(CodegenError, match="x-req-id must be a list of ORCH-NNNN ids"):
        _build(repo)


def test_orch_3044_the_real_table_serves_every_operation_of_the_real_contracts() -> None:
    """ORCH-3044: both planes' operations are in the table, each under a versioned path."""
    from orchestratord_server.generated.operations import OPERATIONS

    loaded = contracts.load(REPO)
    by_id = {op.operation_id: op for c in loaded.contracts for op in c.operations()}
    assert set(OPERATIONS) == set(by_id)
    for key, op in OPERATIONS.items():
        spec = by_id[key]
        assert (op.method, op.path, op.contract) == (spec.method, spec.path, spec.contract)
        assert op.req_ids, key
    assert {k for k, op in OPERATIONS.items() if not op.path.startswith("/v1/")} == {
        "getMetrics",
        "getLivez",
        "getReadyz",
    }


def test_the_stream_operation_declares_its_sse_events_in_order() -> None:
    """ORCH-2002: started, token (embedding for an embedding task), metrics, end and
    error, each with a payload model."""
    from orchestratord_server.generated.operations import OPERATIONS

    events = OPERATIONS["streamTask"].sse_events
    assert list(events) == ["started", "token", "embedding", "metrics", "end", "error"]
    assert all(issubclass(model, BaseModel) for model in events.values())
    assert OPERATIONS["streamTask"].responses[200] is None


def test_every_error_response_of_the_real_contracts_is_the_error_envelope() -> None:
    """ORCH-2006: 4xx/5xx bodies are ErrorEnvelope; only /readyz's 503 carries its report,
    and the OpenAI-compatible routes speak OpenAI's error shape, exclusively."""
    from orchestratord_server.generated import models
    from orchestratord_server.generated.operations import OPERATIONS

    openai_ops = {
        "createCompletion",
        "createChatCompletion",
        "createEmbedding",
        "listModels",
        "retrieveModel",
    }
    odd = {
        (key, status): model
        for key, op in OPERATIONS.items()
        if key not in openai_ops
        for status, model in op.responses.items()
        if status >= 400 and model is not models.ErrorEnvelope
    }
    assert odd == {("getReadyz", 503): models.Readiness}
    openai_errors = {
        model
        for key in openai_ops
        for status, model in OPERATIONS[key].responses.items()
        if status >= 400
    }
    assert openai_errors == {models.OpenAIError}


def test_orch_2008_the_real_engine_enum_is_the_closed_set_of_four() -> None:
    """ORCH-2008: llamacpp, vllm, tgi, triton, and nothing else."""
    from orchestratord_server.generated import models

    assert [e.value for e in models.Engine] == ["llamacpp", "vllm", "tgi", "triton"]
