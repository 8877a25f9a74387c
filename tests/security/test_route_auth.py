"""Every data and control route of the contracts refuses a missing or wrong key (ORCH-3035).

The routes come from the generated operation table (``OPERATIONS``), so an operation
added to a contract is covered without touching this file; only the routes the default
config leaves open (``/livez``, ``/readyz``, ``/metrics``) are skipped. The daemon under
test has a data key and a different control key: each opens its own plane only.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest

from orchestratord_server.config import AuthConfig
from orchestratord_server.generated.operations import OPERATIONS, Operation
from tests.integration.support import DATA_KEY, POOL_ID, Client
from tests.security.conftest import Secured
from tests.support.contract import assert_conforms

pytestmark = pytest.mark.integration

SOME_ID = "6f1c2e0a-3b7d-4c59-9a8e-1d2f3c4b5a69"
PROTECTED = [op for op in OPERATIONS.values() if op.path not in AuthConfig().open_routes]
DATA_OPS = [op for op in PROTECTED if op.contract == "data"]
CONTROL_OPS = [op for op in PROTECTED if op.contract == "control"]
WRONG_KEY = f"wrong-key-{uuid.uuid4().hex}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def api_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


#: Ways to present no key or a wrong one, in both header styles.
REFUSED_CREDENTIALS: dict[str, dict[str, str]] = {
    "none": {},
    "wrong-bearer": bearer(WRONG_KEY),
    "wrong-api-key": api_key(WRONG_KEY),
    "near-miss-bearer": bearer(DATA_KEY[:-1] + chr(ord(DATA_KEY[-1]) ^ 1)),
    "prefix-api-key": api_key(DATA_KEY[:-1]),
    "extended-bearer": bearer(DATA_KEY + "0"),
    "bare-bearer": {"Authorization": "Bearer"},
    "basic-scheme": {"Authorization": "Basic " + base64.b64encode(DATA_KEY.encode()).decode()},
}


def call(client: Client, op: Operation, headers: dict[str, str]) -> httpx.Response:
    """Call ``op`` with only ``headers`` as credentials; the answer is contract-checked."""
    path = op.path.replace("{id}", POOL_ID if "/pools/" in op.path else SOME_ID)
    body: Any = {} if op.request_model is not None else None
    if op.sse_events and "{id}" not in op.path:
        # The control-plane event stream never ends by itself: an accepted call is read
        # no further than its status, a refused one whole.
        with client.http.stream(op.method, path, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                assert_conforms(response)
            return response
    return client.request(op.method, path, key=None, headers=headers, json=body)


def error_code(op: Operation, response: httpx.Response) -> str:
    """A refusal's error code, read from the error shape the operation's contract gives
    that status: an ErrorEnvelope (`code`), or an OpenAI-style `error` object."""
    model = op.responses[response.status_code]
    assert model is not None, (op.operation_id, response.status_code)
    model.model_validate_json(response.content)
    body = response.json()
    if "code" in body:
        assert body["retriable"] is False
        return str(body["code"])
    return str(body["error"]["code"])


def assert_unauthorized(op: Operation, response: httpx.Response) -> None:
    assert response.status_code == 401, (op.operation_id, response.text)
    assert error_code(op, response) == "UNAUTHORIZED"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_operation_table_has_both_planes() -> None:
    """ORCH-3035: the routes under test span the data and the control plane."""
    assert {"createTask", "streamTask", "cancelTask"} <= {op.operation_id for op in DATA_OPS}
    assert {"drainPool", "reloadPool", "getPoolHealth"} <= {op.operation_id for op in CONTROL_OPS}


@pytest.mark.parametrize("credentials", REFUSED_CREDENTIALS.values(), ids=REFUSED_CREDENTIALS)
def test_orch_3035_every_route_refuses_a_missing_or_wrong_key(
    secured: Secured, credentials: dict[str, str]
) -> None:
    """ORCH-3035, ORCH-2006: no key, an unknown key, a near miss of a real one (one bit,
    one character short or long), a scheme without a key or another scheme: 401 with
    code UNAUTHORIZED (in the route's error shape) and a Bearer challenge, on every data
    and control route."""
    client = secured.daemon.client()
    for op in PROTECTED:
        assert_unauthorized(op, call(client, op, credentials))


@pytest.mark.parametrize("style", [bearer, api_key], ids=["bearer", "x-api-key"])
def test_each_key_opens_its_own_plane(secured: Secured, style: Any) -> None:
    """ORCH-3035: the data key passes authentication on every data route and the
    control key on every control route (whatever the handler then answers)."""
    client = secured.daemon.client()
    for ops, key in ((DATA_OPS, secured.data_key), (CONTROL_OPS, secured.control_key)):
        for op in ops:
            response = call(client, op, style(key))
            assert response.status_code not in (401, 403), (op.operation_id, response.text)


@pytest.mark.parametrize("style", [bearer, api_key], ids=["bearer", "x-api-key"])
def test_data_and_control_keys_are_not_interchangeable(secured: Secured, style: Any) -> None:
    """ORCH-3035: the control key opens no data route and the data key no control route
    (refused with 401 or 403)."""
    client = secured.daemon.client()
    for ops, key in ((DATA_OPS, secured.control_key), (CONTROL_OPS, secured.data_key)):
        for op in ops:
            response = call(client, op, style(key))
            assert response.status_code in (401, 403), (op.operation_id, response.text)


def test_orch_3035_a_key_of_the_other_plane_is_forbidden(secured: Secured) -> None:
    """ORCH-3035, ORCH-2006: a valid key of the other plane (the data key on a control
    route, the control key on a data route) is 403 FORBIDDEN."""
    client = secured.daemon.client()
    for ops, key in ((CONTROL_OPS, secured.data_key), (DATA_OPS, secured.control_key)):
        for op in ops:
            response = call(client, op, bearer(key))
            assert response.status_code == 403, (op.operation_id, response.text)
            assert error_code(op, response) == "FORBIDDEN"


#: Credentials that say two things: each refused whichever of them is valid.
AMBIGUOUS_CREDENTIALS: dict[str, tuple[list[tuple[str, str]], int, str]] = {
    "two-authorization-valid-first": (
        [("Authorization", f"Bearer {DATA_KEY}"), ("Authorization", f"Bearer {WRONG_KEY}")],
        400,
        "header.Authorization",
    ),
    "two-authorization-valid-last": (
        [("Authorization", f"Bearer {WRONG_KEY}"), ("Authorization", f"Bearer {DATA_KEY}")],
        400,
        "header.Authorization",
    ),
    "two-api-keys": (
        [("X-API-Key", DATA_KEY), ("X-API-Key", WRONG_KEY)],
        400,
        "header.X-API-Key",
    ),
    "bearer-and-a-different-api-key": (
        [("Authorization", f"Bearer {DATA_KEY}"), ("X-API-Key", WRONG_KEY)],
        401,
        "",
    ),
    "wrong-bearer-and-the-valid-api-key": (
        [("Authorization", f"Bearer {WRONG_KEY}"), ("X-API-Key", DATA_KEY)],
        401,
        "",
    ),
}


@pytest.mark.parametrize(
    ("headers", "status", "loc"), AMBIGUOUS_CREDENTIALS.values(), ids=AMBIGUOUS_CREDENTIALS
)
def test_orch_3035_ambiguous_credentials_are_refused_on_every_data_route(
    secured: Secured, headers: list[tuple[str, str]], status: int, loc: str
) -> None:
    """Two `Authorization` or two `X-API-Key` headers are 400 naming the header (once the
    first one won); a Bearer key and an `X-API-Key` that differ are 401 (once either valid
    one was enough)."""
    client = secured.daemon.client()
    for op in DATA_OPS:
        path = op.path.replace("{id}", SOME_ID)
        body: Any = {} if op.request_model is not None else None
        response = client.http.request(op.method, path, headers=headers, json=body)
        assert_conforms(response)
        assert response.status_code == status, (op.operation_id, response.text)
        if status == 400:
            assert error_code(op, response) == "INVALID_PARAMS"
            answer = response.json()
            locs = [e["loc"] for e in answer.get("errors", [])] or [answer["error"]["param"]]
            assert locs in ([loc], [loc.removeprefix("header.")]), answer
        else:
            assert_unauthorized(op, response)


def test_orch_3035_the_same_key_in_both_headers_is_accepted(secured: Secured) -> None:
    client = secured.daemon.client()
    headers = [("Authorization", f"Bearer {DATA_KEY}"), ("X-API-Key", DATA_KEY)]
    response = client.http.get(f"/v1/sessions/{SOME_ID}", headers=headers)
    assert response.status_code == 404, response.text  # authenticated; no such session
