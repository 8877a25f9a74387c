"""Check any HTTP response against the contracts with openapi-core (ORCH-2006, ORCH-3044).

Shared by the in-process server tests and the integration tests against the real daemon:
every response a test receives goes through `assert_conforms`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.validation.response.validators import V30ResponseHeadersValidator
from openapi_schema_validator import OAS30Validator

from codegen.validate import sse_frames
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


#: An event stream's schema describes one frame (`event`, `data`): the checker is handed
#: the frames one at a time, each as JSON.
_CONFIG = Config(extra_media_type_deserializers={"text/event-stream": json.loads})
_SPECS = {
    plane: OpenAPI.from_dict(contract(plane), config=_CONFIG) for plane in ("data", "control")
}
#: An event stream without frames (one resumed after its terminal event) has no body to
#: check: its status and headers are.
_HEADERS_ONLY = Config(response_validator_cls=V30ResponseHeadersValidator)
_HEADER_SPECS = {
    plane: OpenAPI.from_dict(contract(plane), config=_HEADERS_ONLY) for plane in ("data", "control")
}


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
    specs = _SPECS
    if content_type == "text/event-stream":
        frames = sse_frames(payload.decode("utf-8"))
        validator = _frame_validator(request.method.lower(), path, response.status_code)
        for frame in frames[1:]:
            validator.validate(frame)
        if frames:
            payload = json.dumps(frames[0]).encode()
        else:
            specs = _HEADER_SPECS
    _check(specs, checked_request, response, content_type, payload)


@functools.cache
def _frame_validator(method: str, path: str, status: int) -> OAS30Validator:
    """The schema of one frame of the event stream that answers ``method path``."""
    for operation in OPERATIONS.values():
        template = re.sub(r"\\{[^/]+\\}", "[^/]+", re.escape(operation.path))
        if operation.method.lower() == method and re.fullmatch(template, path):
            doc = contract(operation.contract)
            answer = doc["paths"][operation.path][method]["responses"][str(status)]
            schema = answer["content"]["text/event-stream"]["schema"]
            return OAS30Validator({**doc, **schema})
    raise AssertionError(f"no operation answers {method} {path} with an event stream")


def _check(
    specs: dict[str, OpenAPI],
    request: _Request,
    response: httpx.Response,
    content_type: str,
    payload: Any,
) -> None:
    checked_response = _Response(
        status_code=response.status_code,
        content_type=content_type,
        headers=response.headers,
        data=payload,
    )
    path = request.path
    try:
        specs[plane_of(path)].validate_response(request, checked_response)
    except (PathNotFound, OperationNotFound):
        if response.status_code not in (404, 405):
            raise
