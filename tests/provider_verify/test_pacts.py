"""The consumer pacts themselves: valid against their format, consistent with the
contracts, covering what the consumers rely on, and matched strictly enough to fail.

These tests start no process; they keep the pacts honest before any replay.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import jsonschema
import pytest

from orchestratord_server.generated.operations import OPERATIONS
from tests.provider_verify.pacts import (
    SCHEMA_PATH,
    event_mismatches,
    header_mismatches,
    interactions,
    load_pact,
    mismatches,
    pact_files,
    substitute,
)
from tests.provider_verify.states import STATES

SAMPLE_BINDINGS = {
    "task_id": "6f1c2e0a-3b7d-4c59-9a8e-1d2f3c4b5a69",
    "session_id": "a3d5e7f9-1b2c-4d3e-8f4a-5b6c7d8e9f01",
    "api_key": "some-key",
    "pool_id": "some-pool",
    "model_ref": "some-model",
    "engine": "llamacpp",
}
INTEGER = {"$match": "type", "type": "integer", "min": 0}


def _validator() -> jsonschema.Draft202012Validator:
    schema = load_pact(SCHEMA_PATH)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_the_two_consumer_pacts_exist() -> None:
    assert [p.name for p in pact_files()] == ["orchestratord-cli.json", "python-client.json"]


@pytest.mark.parametrize("path", pact_files(), ids=lambda p: p.stem)
def test_every_pact_validates_against_the_pact_format(path: Any) -> None:
    pact = load_pact(path)
    errors = [e.message for e in _validator().iter_errors(pact)]
    assert not errors, errors
    assert path.name == f"{pact['consumer']}.json"
    ids = Counter(item["id"] for item in pact["interactions"])
    assert not [i for i, n in ids.items() if n > 1], "interaction ids must be unique"


@pytest.mark.parametrize(
    "broken",
    [
        {"format": "orchestratord-pact/2"},
        {"provider": "someone-else"},
        {"interactions": []},
        {"interactions": [{"id": "x", "description": "no request"}]},
    ],
    ids=["format", "provider", "no-interactions", "incomplete-interaction"],
)
def test_the_pact_format_refuses_a_broken_pact(broken: dict[str, Any]) -> None:
    pact = load_pact(pact_files()[0]) | broken
    assert list(_validator().iter_errors(pact))


def test_the_pact_format_refuses_an_unknown_matcher() -> None:
    pact = load_pact(pact_files()[0])
    pact["interactions"][0]["response"]["body"] = {"$match": "roughly", "value": 1}
    assert list(_validator().iter_errors(pact))


def test_every_provider_state_of_the_format_has_a_set_up() -> None:
    schema = load_pact(SCHEMA_PATH)
    named = schema["$defs"]["providerState"]["properties"]["name"]["enum"]
    assert sorted(named) == sorted(STATES)


def _template_regex(path: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path)))


@pytest.mark.parametrize("interaction", interactions(), ids=lambda i: f"{i.consumer}:{i.id}")
def test_each_interaction_is_a_request_of_its_operation(interaction: Any) -> None:
    """ORCH-3044: a pact only exercises operations the contracts declare."""
    operation = OPERATIONS[interaction.data["operation"]]
    request = substitute(interaction.request, SAMPLE_BINDINGS)
    assert request["method"].lower() == operation.method.lower()
    assert _template_regex(operation.path).fullmatch(request["path"]), request["path"]
    status = interaction.response["status"]
    assert status in operation.responses, f"{operation.operation_id} declares no {status}"


def test_the_cli_pact_covers_every_control_plane_operation() -> None:
    covered = {i.data["operation"] for i in interactions() if i.consumer == "orchestratord-cli"}
    control = {op_id for op_id, op in OPERATIONS.items() if op.contract == "control"}
    assert control <= covered, control - covered


#: The OrchQueue v1 data plane the consumers are written against.
ORCHQUEUE_V1 = {"createTask", "streamTask", "cancelTask", "getSession", "deleteSession"}


def test_the_pacts_cover_the_data_plane_and_its_refusals() -> None:
    """Submission's answers (202, 400, 401, 409, 429, 503), 404 on every id of a path."""
    seen = {(i.data["operation"], i.response["status"]) for i in interactions()}
    assert {op for op, _ in seen} >= ORCHQUEUE_V1
    assert {202, 400, 401, 409, 429, 503} <= {s for op, s in seen if op == "createTask"}
    with_ids = ORCHQUEUE_V1 - {"createTask"} | {"getPoolHealth"}
    assert with_ids <= {op for op, s in seen if s == 404}


def test_the_pacts_cover_pool_control_and_its_refusals() -> None:
    """ORCH-2101, ORCH-2102: drain and reload are accepted (202), a reload to a model the
    daemon does not know is a 400, and draining an unknown pool a 404."""
    seen = {(i.data["operation"], i.response["status"]) for i in interactions()}
    control = {("drainPool", 202), ("drainPool", 404), ("reloadPool", 202), ("reloadPool", 400)}
    assert control <= seen, control - seen


def test_substitution_keeps_types_and_fills_text() -> None:
    value = {"a": "{{pool_id}}", "b": ["x-{{engine}}-y", 3], "c": "{{task_id}}"}
    bindings = {"pool_id": 7, "engine": "llamacpp", "task_id": None}
    assert substitute(value, bindings) == {"a": 7, "b": ["x-llamacpp-y", 3], "c": None}


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        (1, 1),
        ({"a": 1, "extra": True}, {"a": 1}),
        (5, INTEGER),
        (2.5, {"$match": "type", "type": "number", "min": 0}),
        ("abc123", {"$match": "regex", "regex": "[a-z]+[0-9]+"}),
        ("stop", {"$match": "one_of", "values": ["stop", "length"]}),
        ([1, 2], {"$match": "each", "min_items": 1, "item": INTEGER}),
        ([{"loc": "a"}, {"loc": "b"}], {"$match": "includes", "items": [{"loc": "b"}]}),
        ([1, "x"], [1, "x"]),
    ],
)
def test_matchers_accept_what_they_describe(actual: Any, expected: Any) -> None:
    assert mismatches(actual, expected) == []


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        (1, 2),
        (True, 1),
        ({"b": 1}, {"a": 1}),
        ("x", {"a": 1}),
        (True, INTEGER),
        (-1, INTEGER),
        (1.5, INTEGER),
        ("abc", {"$match": "regex", "regex": "ab"}),
        (3, {"$match": "regex", "regex": "3"}),
        ("canceled", {"$match": "one_of", "values": ["stop", "length"]}),
        ([], {"$match": "each", "min_items": 1, "item": INTEGER}),
        (["x"], {"$match": "each", "item": INTEGER}),
        ({}, {"$match": "each", "item": INTEGER}),
        ([{"loc": "a"}], {"$match": "includes", "items": [{"loc": "b"}]}),
        ([1], [1, 2]),
    ],
)
def test_matchers_refuse_what_they_do_not_describe(actual: Any, expected: Any) -> None:
    assert mismatches(actual, expected)


def test_headers_are_required_and_matched() -> None:
    headers = {"retry-after": "2"}
    assert header_mismatches(headers, {"retry-after": {"$match": "regex", "regex": "[0-9]+"}}) == []
    assert header_mismatches(headers, {"retry-after": "3"})
    assert header_mismatches(headers, {"x-backoff-ms": {"$match": "regex", "regex": ".*"}})


STREAM = {
    "ignore": ["metrics"],
    "events": [
        {"event": "started"},
        {"event": "token", "repeat": "1+", "data": {"i": INTEGER}},
        {"event": "end", "data": {"finish_reason": "length"}},
    ],
}


def test_an_event_sequence_matches_its_steps() -> None:
    events = [
        ("started", {}),
        ("token", {"i": 0}),
        ("metrics", {}),
        ("token", {"i": 1}),
        ("end", {"finish_reason": "length"}),
    ]
    assert event_mismatches(events, STREAM) == []


@pytest.mark.parametrize(
    "events",
    [
        [("started", {}), ("end", {"finish_reason": "length"})],
        [("token", {"i": 0}), ("end", {"finish_reason": "length"})],
        [("started", {}), ("token", {"i": "0"}), ("end", {"finish_reason": "length"})],
        [("started", {}), ("token", {"i": 0}), ("end", {"finish_reason": "stop"})],
        [("started", {}), ("token", {"i": 0}), ("end", {"finish_reason": "length"}), ("end", {})],
    ],
    ids=["no-token", "no-started", "bad-token-data", "bad-end-data", "trailing-event"],
)
def test_an_event_sequence_off_its_steps_is_refused(events: list[tuple[str, Any]]) -> None:
    assert event_mismatches(events, STREAM)
