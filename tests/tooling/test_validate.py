"""Contract validation: OpenAPI validity, x-req-id against the spec, versioning, examples."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from codegen import contracts, spec_extract, validate
from tests.tooling.support import req_id


def _errors(repo: Path) -> list[str]:
    return validate.validate(contracts.load(repo), spec_extract.load(repo).ids)


def _edit(repo: Path, name: str, edit: Callable[[dict[str, Any]], None]) -> None:
    path = repo / f"contracts/openapi/{name}.yaml"
    doc = yaml.safe_load(path.read_text())
    edit(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_the_fixture_contracts_pass(repo: Path) -> None:
    assert _errors(repo) == []


def test_an_x_req_id_the_spec_lacks_fails(repo: Path) -> None:
    unknown = req_id(9999)
    _edit(repo, "data", lambda d: d["paths"]["/v1/things"]["post"]["x-req-id"].append(unknown))
    assert _errors(repo) == [
        f"contracts/openapi/data.yaml operation createThing: x-req-id {unknown} is not in the spec"
    ]


def test_an_operation_without_x_req_id_fails(repo: Path) -> None:
    _edit(repo, "control", lambda d: d["paths"]["/metrics"]["get"].pop("x-req-id"))
    assert _errors(repo) == ["contracts/openapi/control.yaml operation getMetrics: no x-req-id"]


def test_orch_3044_unversioned_paths_and_differing_versions_fail(repo: Path) -> None:
    """ORCH-3044: paths carry the major version of info.version, the same in both contracts."""

    def edit(doc: dict[str, Any]) -> None:
        doc["info"]["version"] = "2.0.0"
        doc["paths"]["/things"] = doc["paths"].pop("/v1/things")

    _edit(repo, "control", edit)
    errors = _errors(repo)
    assert any(e.startswith("info.version differs between contracts") for e in errors)
    assert "contracts/openapi/control.yaml: path /things is not under /v2/ (ORCH-3044)" in errors
    assert (
        "contracts/openapi/control.yaml: path /v1/things/{id}/drain is not under /v2/ (ORCH-3044)"
        in errors
    )


def test_an_example_that_breaks_its_schema_fails(repo: Path) -> None:
    def edit(doc: dict[str, Any]) -> None:
        example = doc["components"]["schemas"]["ThingRequest"]["example"]
        example["thing_id"] = "not-a-uuid"
        example["count"] = 0

    _edit(repo, "data", edit)
    errors = _errors(repo)
    assert len(errors) == 2
    assert all("example at #/components/schemas/ThingRequest" in e for e in errors)
    assert any("(at thing_id)" in e and "uuid" in e for e in errors)
    assert any("(at count)" in e for e in errors)


def test_an_invalid_openapi_document_fails(repo: Path) -> None:
    _edit(repo, "data", lambda d: d["paths"]["/v1/things"]["post"].pop("responses"))
    errors = _errors(repo)
    assert errors
    assert errors[0].startswith("contracts/openapi/data.yaml: paths//v1/things/post:")
    # The validator quotes the name with ' or " depending on the jsonschema backend.
    assert re.search(r"""['"]responses['"] is a required property""", errors[0])


def test_examples_are_found_in_bodies_parameters_and_schemas(repo: Path) -> None:
    data = contracts.load(repo).by_name("data")
    wheres = [e.where for e in validate.examples(data)]
    assert wheres == [
        "#/paths/~1v1~1things/post/requestBody/content/application~1json/examples/full",
        "#/paths/~1v1~1things/post/requestBody/content/application~1json/examples/minimal",
        "#/paths/~1v1~1things/post/responses/202/content/application~1json",
        "#/paths/~1v1~1things~1{id}~1stream/get/parameters/0",
        "#/components/responses/Invalid/content/application~1json",
        "#/components/schemas/ThingRequest",
    ]


def test_an_unresolvable_ref_is_named(repo: Path) -> None:
    _edit(
        repo,
        "data",
        lambda d: d["paths"]["/v1/things"]["post"]["responses"]["202"]["content"][
            "application/json"
        ]["schema"].update({"$ref": "#/components/schemas/Nowhere"}),
    )
    assert _errors(repo) == [
        "contracts/openapi/data.yaml: $ref /components/schemas/Nowhere cannot be resolved"
    ]


def test_a_stream_example_whose_ids_skip_or_repeat_fails(repo: Path) -> None:
    """An event stream's example is checked frame by frame, its `id:` lines included:
    each id is one more than the one before (a resumed stream may start anywhere)."""
    stream = "".join(f"id: {event_id}\nevent: started\ndata: {{}}\n\n" for event_id in (3, 4, 6, 6))

    def edit(doc: dict[str, Any]) -> None:
        responses = doc["paths"]["/v1/things/{id}/stream"]["get"]["responses"]
        media = responses["200"]["content"]["text/event-stream"]
        media["schema"] = {"type": "object", "required": ["id", "event", "data"]}
        media["example"] = stream

    _edit(repo, "data", edit)
    where = "#/paths/~1v1~1things~1{id}~1stream/get/responses/200/content/text~1event-stream"
    assert _errors(repo) == [
        f"contracts/openapi/data.yaml: example at {where} (frame 2): id 6 where 5 was due",
        f"contracts/openapi/data.yaml: example at {where} (frame 3): id 6 where 7 was due",
    ]
