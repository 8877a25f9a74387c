"""The suite-wide contract check can fail, and nothing in the suites goes around it.

Every response the server suite (``CheckedClient``) and the integration suite
(``Client``) receive is validated against the contracts by ``assert_conforms``
(ORCH-2006, ORCH-3044). A guard that never fires proves nothing, so these tests hand it
responses outside the contract and insist it raises, through ``assert_conforms`` itself
and through both clients. A static check then keeps the guarantee whole: the test modules
of both suites reach the daemon only through those clients.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema.exceptions import ValidationError
from openapi_core.exceptions import OpenAPIError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.integration.support import Client, parse_frame
from tests.server.conftest import CheckedClient
from tests.support.contract import assert_conforms

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TASK_ID = "6f1c2e0a-3b7d-4c59-9a8e-1d2f3c4b5a69"
BASE = "http://127.0.0.1:9"
TESTS = Path(__file__).resolve().parents[1]
HTTPX_VERBS = {"get", "post", "put", "patch", "delete", "request", "stream"}


def _response(method: str, path: str, status: int, **kwargs: Any) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request(method, BASE + path), **kwargs)


ADMISSION = {"task_id": TASK_ID, "queue_position": 0, "predicted_start_ms": 0, "backoff_ms": 0}
CONFORMING = [
    _response("POST", "/v1/tasks", 202, json=ADMISSION),
    _response("GET", "/livez", 200, json={"status": "ok"}),
    _response("GET", f"/v1/sessions/{TASK_ID}", 404, json={"code": "NOT_FOUND", "message": "x"}),
]
BREAKING = {
    "undeclared-status": _response("POST", "/v1/tasks", 418, json={"code": "INTERNAL"}),
    "missing-required-field": _response(
        "POST", "/v1/tasks", 202, json={k: v for k, v in ADMISSION.items() if k != "backoff_ms"}
    ),
    "wrong-type": _response("POST", "/v1/tasks", 202, json=ADMISSION | {"queue_position": "0"}),
    "code-outside-error-kind": _response(
        "GET", f"/v1/tasks/{TASK_ID}/stream", 404, json={"code": "GONE", "message": "x"}
    ),
    "envelope-without-message": _response(
        "GET", "/v1/replicasets", 401, json={"code": "UNAUTHORIZED"}
    ),
    "wrong-media-type": _response("GET", "/livez", 200, text="ok"),
    "stream-as-json": _response("GET", f"/v1/tasks/{TASK_ID}/stream", 200, json={"t": "x"}),
}


@pytest.mark.parametrize("response", CONFORMING, ids=lambda r: f"{r.request.url.path}")
def test_the_guard_passes_a_conforming_response(response: httpx.Response) -> None:
    assert_conforms(response)


@pytest.mark.parametrize("response", list(BREAKING.values()), ids=list(BREAKING))
def test_the_guard_raises_on_a_response_outside_the_contract(response: httpx.Response) -> None:
    """ORCH-2006, ORCH-3044: any response the contracts do not allow fails the test."""
    with pytest.raises(OpenAPIError):
        assert_conforms(response)


def test_the_guard_refuses_an_sse_frame_outside_its_event_schema() -> None:
    """ORCH-2002: stream frames are validated event by event, each with its id."""
    parse_frame(b'id: 0\nevent: token\ndata: {"t":"a","i":0}')
    with pytest.raises(ValueError):
        parse_frame(b'id: 0\nevent: token\ndata: {"t":"a"}')
    with pytest.raises(AssertionError):
        parse_frame(b'id: 0\nevent: tokens\ndata: {"t":"a","i":0}')
    for id_line in (b"", b"id: 01\n", b"id: x\n"):
        with pytest.raises(AssertionError):
            parse_frame(id_line + b'event: token\ndata: {"t":"a","i":0}')


def test_the_guard_refuses_a_stream_frame_without_its_id() -> None:
    """ORCH-2002: every frame of a task stream carries an `id:`, but a queue update
    (ORCH-3029: a `metrics` event sent while the task waits)."""
    request = httpx.Request("GET", f"{BASE}/v1/tasks/{TASK_ID}/stream")
    headers = {"content-type": "text/event-stream; charset=utf-8"}
    frames = b'id: 0\nevent: token\ndata: {"t":"a","i":0}\n\n'
    assert_conforms(httpx.Response(200, request=request, headers=headers, content=frames))
    update = b'event: metrics\ndata: {"queue_position":0,"predicted_start_ms":40}\n\n'
    content = update + frames
    assert_conforms(httpx.Response(200, request=request, headers=headers, content=content))
    assert_conforms(httpx.Response(200, request=request, headers=headers, content=b""))
    for content in (frames.removeprefix(b"id: 0\n"), frames + frames.replace(b"0\n", b"x\n", 1)):
        response = httpx.Response(200, request=request, headers=headers, content=content)
        with pytest.raises((OpenAPIError, ValidationError)):
            assert_conforms(response)


def test_the_integration_client_fails_a_test_on_a_broken_response() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(418, json={"code": "INTERNAL", "message": "teapot"})

    client = Client(BASE)
    client.http.close()
    client.http = httpx.Client(base_url=BASE, transport=httpx.MockTransport(handler))
    with pytest.raises(OpenAPIError):
        client.get("/v1/replicasets")
    client.close()


def test_the_server_client_fails_a_test_on_a_broken_response() -> None:
    async def teapot(_request: Request) -> Response:
        return JSONResponse({"code": "INTERNAL", "message": "teapot"}, status_code=418)

    app = Starlette(routes=[Route("/v1/replicasets", teapot)])
    client = CheckedClient(TestClient(app), None, None)  # type: ignore[arg-type]
    with pytest.raises(OpenAPIError):
        client.get("/v1/replicasets")


def _unchecked_calls(path: Path, root: Path = TESTS) -> list[str]:
    """Places where a test module talks HTTP without going through a checked client.

    Allowed: ``httpx.<verb>(<engine_url()...>)`` (a call to the engine, not the daemon)
    and an ``httpx.Client`` used only as ``http=`` of the checked client's ``open_stream``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    problems = []
    passed_as_http = {
        id(keyword.value)
        for keyword in ast.walk(tree)
        if isinstance(keyword, ast.keyword) and keyword.arg == "http"
    }
    raw_clients: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = (
            func.value.id
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            else None
        )
        where = f"{path.relative_to(root)}:{node.lineno}"
        if name == "TestClient":
            problems.append(f"{where}: a TestClient outside the checked client")
        if owner == "httpx" and name in HTTPX_VERBS:
            target = ast.unparse(node.args[0]) if node.args else ""
            if "engine_url" not in target:
                problems.append(f"{where}: httpx.{name} to {target or '?'}")
    for item in ast.walk(tree):
        if isinstance(item, ast.withitem) and isinstance(item.optional_vars, ast.Name):
            call = item.context_expr
            if isinstance(call, ast.Call) and ast.unparse(call.func) == "httpx.Client":
                raw_clients.add(item.optional_vars.id)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Load)
            and node.id in raw_clients
            and id(node) not in passed_as_http
        ):
            problems.append(f"{path.relative_to(root)}:{node.lineno}: raw client {node.id}")
    return problems


def test_the_suites_reach_the_daemon_only_through_checked_clients() -> None:
    """ORCH-3044: no test module of the server or integration suite sends a request to the
    daemon that bypasses ``assert_conforms``."""
    modules = sorted((TESTS / "server").glob("test_*.py")) + sorted(
        (TESTS / "integration").glob("test_*.py")
    )
    assert modules
    problems = [line for module in modules for line in _unchecked_calls(module)]
    assert not problems, problems


def test_the_static_check_finds_a_bypass(tmp_path: Path) -> None:
    module = tmp_path / "test_sneaky.py"
    module.write_text(
        "import httpx\n"
        "def test_x(daemon, app):\n"
        "    httpx.get(daemon.base_url + '/livez')\n"
        "    httpx.post(daemon.engine_url() + '/completion')\n"
        "    with httpx.Client() as raw:\n"
        "        raw.get('/v1/replicasets')\n"
        "    with httpx.Client() as own, client.open_stream('x', http=own):\n"
        "        pass\n"
        "    TestClient(app)\n",
        encoding="utf-8",
    )
    problems = _unchecked_calls(module, tmp_path)
    assert sorted(line.split(":")[1] for line in problems) == ["3", "6", "9"], problems
