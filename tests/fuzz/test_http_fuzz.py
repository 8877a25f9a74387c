"""Hypothesis throws hostile requests at the in-process app (ORCH-2006, ORCH-3044).

Malformed JSON, bodies over ``server.max_body_bytes`` (in one piece or chunked), a wrong
type in every field of every request body, and arbitrary unicode in prompts, model refs
and path ids. Every answer must be an ErrorEnvelope or a declared success, valid against
the contracts (the checked client validates each one), never a 500; and after each
example the same app still answers a probe and a valid submission normally.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestratord_server.app import contract
from orchestratord_server.generated.models import ErrorEnvelope
from tests.fuzz.conftest import MAX_BODY_BYTES
from tests.server.conftest import CheckedClient

FUZZ = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
POOL = "pool-a"
TASK: dict[str, Any] = {
    "task_id": "8a2b8f7e-5c4d-4e3f-9a1b-2c3d4e5f6a7b",
    "session_id": "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b",
    "workload": "completion",
    "model_ref": "tiny",
    "engine": "llamacpp",
    "ctx": 1024,
    "priority": "interactive",
    "prompt": "Hello",
    "max_tokens": 8,
    "deadline_ms": 30000,
}
#: Each JSON-bodied operation: its path, a valid body, and the schema of that body.
BODIES: dict[str, tuple[str, dict[str, Any], str]] = {
    "createTask": ("/v1/tasks", TASK, "data"),
    "drainPool": (f"/v1/pools/{POOL}/drain", {"deadline_ms": 1000}, "control"),
    "reloadPool": (f"/v1/pools/{POOL}/reload", {"new_model_ref": "tiny-v2"}, "control"),
}
SCHEMAS = {"createTask": "TaskRequest", "drainPool": "DrainRequest", "reloadPool": "ReloadRequest"}
JSON = {"Content-Type": "application/json"}
#: The answers a submission to the in-process app may get: its pool's engine is dead, so
#: a valid completion is refused with 503.
SUBMISSION_STATUSES = {400, 409, 413, 415, 503}
ALLOWED_5XX = {"POOL_UNAVAILABLE", "POOL_UNREADY"}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


def envelope(response: Any, statuses: set[int]) -> dict[str, Any]:
    """The response's ErrorEnvelope; its status one of ``statuses``, no 500 ever."""
    assert response.status_code in statuses, (response.status_code, response.text)
    body: dict[str, Any] = ErrorEnvelope.model_validate_json(response.content).model_dump(
        mode="json", exclude_none=True
    )
    if response.status_code >= 500:
        assert body["code"] in ALLOWED_5XX, body
    return body


def still_answering(client: CheckedClient) -> None:
    """The app took no harm: the probe is 200, a valid submission gets its usual 503."""
    assert client.get("/livez", key=None).status_code == 200
    answer = envelope(client.post("/v1/tasks", json=TASK), {503})
    assert answer["code"] == "POOL_UNAVAILABLE"


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, UnicodeDecodeError):
        return False


malformed = (
    st.binary(max_size=MAX_BODY_BYTES)
    | st.text(max_size=200).map(str.encode)
    | st.builds(
        lambda s, n: json.dumps(TASK).encode()[:n] + s, st.binary(max_size=8), st.integers(0, 250)
    )
).filter(lambda raw: not _is_json_object(raw))


@FUZZ
@given(operation=st.sampled_from(sorted(BODIES)), raw=malformed)
def test_malformed_json_is_an_invalid_params_envelope(
    app_client: CheckedClient, operation: str, raw: bytes
) -> None:
    """ORCH-2006: a body that is not a JSON object is 400 INVALID_PARAMS, never a 5xx."""
    path = BODIES[operation][0]
    answer = envelope(app_client.post(path, content=raw, headers=JSON), {400})
    assert answer["code"] == "INVALID_PARAMS"
    assert answer["errors"], answer
    still_answering(app_client)


@FUZZ
@given(
    operation=st.sampled_from(sorted(BODIES)),
    size=st.integers(MAX_BODY_BYTES + 1, 64 * MAX_BODY_BYTES),
    piece=st.integers(1, 4096),
    fill=st.sampled_from([b" ", b"x", b"\xff", b'"a",']),
)
def test_a_body_over_the_limit_is_413_in_one_piece_or_chunked(
    app_client: CheckedClient, operation: str, size: int, piece: int, fill: bytes
) -> None:
    """ORCH-2006: over ``server.max_body_bytes`` is 413 INVALID_PARAMS located at `body`."""
    path = BODIES[operation][0]
    raw = (b"[" + fill * size)[:size]
    chunked = piece < 2048
    content: Any = (raw[i : i + piece] for i in range(0, size, piece)) if chunked else raw
    answer = envelope(app_client.post(path, content=content, headers=JSON), {413})
    assert answer["code"] == "INVALID_PARAMS"
    assert [(e["loc"], e["type"]) for e in answer["errors"]] == [("body", "too_large")]
    still_answering(app_client)


def _json_types(schema: dict[str, Any], schemas: dict[str, Any]) -> frozenset[str]:
    """The JSON types a schema admits: its `type`, or those of its `oneOf` branches."""
    if "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
    if "oneOf" in schema:
        return frozenset().union(*(_json_types(branch, schemas) for branch in schema["oneOf"]))
    return frozenset({schema["type"]})


def _field_types(operation: str) -> dict[str, tuple[frozenset[str], bool]]:
    """Each body field's JSON types and whether it is required, read from the contract."""
    plane = BODIES[operation][2]
    schemas = contract(plane)["components"]["schemas"]
    schema = schemas[SCHEMAS[operation]]
    return {
        name: (_json_types(prop, schemas), name in schema["required"])
        for name, prop in schema["properties"].items()
    }


FIELDS = [(op, name) for op in sorted(BODIES) for name in _field_types(op)]


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value), "null")


@FUZZ
@given(field=st.sampled_from(FIELDS), data=st.data())
def test_a_wrong_type_in_any_field_is_named_in_a_400(
    app_client: CheckedClient, field: tuple[str, str], data: st.DataObject
) -> None:
    """ORCH-2006: whatever the field, a value of the wrong JSON type is refused with 400
    INVALID_PARAMS naming that field (null only where the field is required)."""
    operation, name = field
    json_types, required = _field_types(operation)[name]
    wrong = data.draw(
        json_values.filter(
            lambda v: (
                _type_of(v) not in json_types
                and (required or v is not None)
                and not ("number" in json_types and _type_of(v) == "integer")
            )
        ),
        label="wrong value",
    )
    path, valid, _ = BODIES[operation]
    answer = envelope(app_client.post(path, json={**valid, name: wrong}), {400})
    locations = [error["loc"] for error in answer["errors"]]
    assert any(loc == f"body.{name}" or loc.startswith(f"body.{name}[") for loc in locations), (
        locations
    )
    still_answering(app_client)


@pytest.mark.parametrize(
    "name", ["seed", "sampler_profile_version", "inputs", "expected_tokens", "kv_hint"]
)
def test_null_in_an_optional_field_is_refused(app_client: CheckedClient, name: str) -> None:
    """ORCH-2006: `null` is not a value of any optional TaskRequest field."""
    answer = envelope(app_client.post("/v1/tasks", json={**TASK, name: None}), {400})
    assert f"body.{name}" in [error["loc"] for error in answer["errors"]]


@FUZZ
@given(prompt=st.text(), model_ref=st.text(min_size=1))
def test_any_unicode_prompt_and_model_ref_gets_an_envelope(
    app_client: CheckedClient, prompt: str, model_ref: str
) -> None:
    """ORCH-2006, ORCH-3018: unicode anywhere in the text fields never breaks admission:
    an empty prompt is 400 on `body.prompt`, an unknown model 400 on `body.model_ref`, the
    served one 503 (engine down)."""
    body = {**TASK, "prompt": prompt, "model_ref": model_ref}
    answer = envelope(app_client.post("/v1/tasks", json=body), SUBMISSION_STATUSES)
    if not prompt:
        assert [error["loc"] for error in answer["errors"]] == ["body.prompt"], answer
    elif model_ref == TASK["model_ref"]:
        assert answer["code"] == "POOL_UNAVAILABLE", answer
    else:
        assert answer["code"] == "INVALID_PARAMS", answer
        assert "body.model_ref" in [error["loc"] for error in answer["errors"]]
    still_answering(app_client)


UUID_PATHS = [
    ("GET", "/v1/tasks/{}/stream"),
    ("POST", "/v1/tasks/{}/cancel"),
    ("GET", "/v1/sessions/{}"),
    ("DELETE", "/v1/sessions/{}"),
]
POOL_PATHS = [
    ("GET", "/v1/pools/{}/health", None),
    ("POST", "/v1/pools/{}/drain", {"deadline_ms": 1000}),
    ("POST", "/v1/pools/{}/reload", {"new_model_ref": "tiny-v2"}),
]
#: A pool id outside the contract's pattern (`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`).
BAD_POOL_ID = "pool:a"


@FUZZ
@given(operation=st.sampled_from(UUID_PATHS), ident=st.text(min_size=1))
def test_any_unicode_task_or_session_id_gets_an_envelope(
    app_client: CheckedClient, operation: tuple[str, str], ident: str
) -> None:
    """ORCH-2006: a task or session id of any unicode is 400 on `path.id` (not a UUID)."""
    method, template = operation
    path = template.format(urllib.parse.quote(ident, safe=""))
    answer = envelope(app_client.request(method, path), {400, 404})
    if answer["code"] == "INVALID_PARAMS":
        assert [error["loc"] for error in answer["errors"]] == ["path.id"]
    still_answering(app_client)


@FUZZ
@given(operation=st.sampled_from(POOL_PATHS), ident=st.text(min_size=1))
def test_any_unicode_pool_id_gets_an_envelope(
    app_client: CheckedClient, operation: tuple[str, str, dict[str, Any] | None], ident: str
) -> None:
    """ORCH-2006: a pool id of any unicode is refused (400 off the id's pattern, 404
    unknown); never a 5xx."""
    method, template, body = operation
    path = template.format(urllib.parse.quote(ident, safe=""))
    envelope(app_client.request(method, path, json=body), {400, 404})
    still_answering(app_client)


@pytest.mark.parametrize(("method", "template", "body"), POOL_PATHS)
def test_a_pool_id_off_its_pattern_is_400_naming_path_id(
    app_client: CheckedClient, method: str, template: str, body: dict[str, Any] | None
) -> None:
    """ORCH-2006: a 400 names every offending field in `errors`; here `path.id`."""
    answer = envelope(app_client.request(method, template.format(BAD_POOL_ID), json=body), {400})
    assert [error["loc"] for error in answer.get("errors", [])] == ["path.id"], answer
    assert "\n" not in answer["message"], answer["message"]
