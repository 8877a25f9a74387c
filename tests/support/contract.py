"""Check any HTTP response against the contracts with openapi-core (ORCH-2006, ORCH-3044).

Shared by the in-process server tests and the integration tests against the real daemon:
every response a test receives goes through `assert_conforms`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound

from orchestratord_server.app import contract
from orchestratord_server.generated.operations import OPERATIONS


@dataclass
class _Request:
    host_url: str
    path: str
    method: str
    content_type: str
    body: bytes | None
    parameters: RequestParameters = field(default_factory=RequestParameters)


@dataclass
class _Response:
    status_code: int
    content_type: str
    headers: Any
    data: Any


_SPECS = {plane: OpenAPI.from_dict(contract(plane)) for plane in ("data", "control")}


#: Path prefixes of the data contract's operations (the rest belong to the control plane).
DATA_PATHS = tuple(
    sorted({op.path.split("{")[0] for op in OPERATIONS.values() if op.contract == "data"})
)


def plane_of(path: str) -> str:
    """The contract that declares `path`."""
    return "data" if path.startswith(DATA_PATHS) else "control"


def assert_conforms(response: httpx.Response, data: bytes | None = None) -> None:
    """Fail unless ``response`` is one the contracts allow for its request.

    ``data`` is the body when the response was streamed (its ``content`` is not read).
    Paths or methods no contract declares have no contract to keep (404/405 only).
    """
    request = response.request
    path = request.url.path
    try:
        body: bytes | None = request.content
    except httpx.RequestNotRead:
        body = None
    checked_request = _Request(
        host_url=f"{request.url.scheme}://{request.url.netloc.decode()}",
        path=path,
        method=request.method.lower(),
        content_type=request.headers.get("content-type", ""),
        body=body or None,
    )
    content_type = response.headers.get("content-type", "").split(";")[0]
    payload: Any = response.content if data is None else data
    if content_type == "text/event-stream":
        # openapi-core has no deserializer for SSE: the schema (a string) sees the text.
        payload = payload.decode("utf-8")
    checked_response = _Response(
        status_code=response.status_code,
        content_type=content_type,
        headers=response.headers,
        data=payload,
    )
    try:
        _SPECS[plane_of(path)].validate_response(checked_request, checked_response)
    except (PathNotFound, OperationNotFound):
        if response.status_code not in (404, 405):
            raise
