"""The client's HTTP protocol, without I/O: what to send for each operation, what came back.

Every request is described by its operationId: method and path come from the generated
operation table (`OPERATIONS`), the body is the operation's generated request model, and
the answer is parsed with the model the table gives for its status. The sync and async
clients only carry these `Call`s over httpx, so both speak exactly the same protocol.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import httpx
from pydantic import BaseModel

from orchestratord_client.errors import error_for
from orchestratord_client.generated.operations import OPERATIONS, Operation

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "ORCHD_URL"
KEY_ENV = "ORCHD_API_KEY"
USER_AGENT = "orchestratord-client"
#: Seconds between reconnections of an interrupted stream, times the attempt number.
RECONNECT_DELAY_S = 0.2

M = TypeVar("M", bound=BaseModel)


class UnexpectedResponse(Exception):
    """A 2xx answer the contract does not describe for this operation."""


@dataclass(frozen=True)
class Call:
    """One HTTP request of a contract operation."""

    operation: Operation
    path: str
    json: Mapping[str, Any] | None = None

    @property
    def method(self) -> str:
        return self.operation.method


def call(
    operation_id: str,
    body: BaseModel | None = None,
    *,
    query: Mapping[str, str] | None = None,
    **path_params: object,
) -> Call:
    """The request of `operation_id`, its path ids escaped, its `query` encoded and its
    body serialised."""
    operation = OPERATIONS[operation_id]
    model = operation.request_model
    if model is None and body is not None:
        raise TypeError(f"{operation_id} takes no body")
    if model is not None and not isinstance(body, model):
        raise TypeError(f"{operation_id} takes a {model.__name__}")
    path = operation.path.format(**{k: quote(str(v), safe="") for k, v in path_params.items()})
    if query:
        path += "?" + urlencode(query)
    json = body.model_dump(mode="json", exclude_none=True) if body is not None else None
    return Call(operation, path, json)


def base_url(url: str | None) -> str:
    """`url`, else `$ORCHD_URL`, else the daemon's default address."""
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def api_key(key: str | None) -> str | None:
    """`key`, else the first of `$ORCHD_API_KEY` (the daemon reads it comma-separated)."""
    if key:
        return key
    configured = [k.strip() for k in os.environ.get(KEY_ENV, "").split(",") if k.strip()]
    return configured[0] if configured else None


def headers(api_key: str | None) -> dict[str, str]:
    """The headers every request carries: the key (ORCH-3035) and who is calling."""
    sent = {"User-Agent": USER_AGENT}
    if api_key:
        sent["Authorization"] = f"Bearer {api_key}"
    return sent


def check(response: httpx.Response) -> None:
    """Raise the typed error of a non-2xx answer (its body must have been read)."""
    if not response.is_success:
        raise error_for(response.status_code, response.headers, response.content)


def decode(call: Call, response: httpx.Response, model: type[M]) -> M:
    """The answer's body as `model`, the one the contract gives for its status.

    A non-2xx status raises its typed error, except where the contract describes that
    status with `model` itself (readiness answers 503 with a Readiness report).
    """
    if call.operation.responses.get(response.status_code) is not model:
        check(response)
        raise UnexpectedResponse(f"{call.operation.operation_id} answered {response.status_code}")
    return model.model_validate_json(response.content)


def decode_text(call: Call, response: httpx.Response) -> str:
    """The text of a 200 answer that is not JSON (the Prometheus exposition)."""
    check(response)
    if response.status_code != 200 or call.operation.responses.get(200) is not None:
        raise UnexpectedResponse(f"{call.operation.operation_id} answered {response.status_code}")
    return response.text


def decode_empty(call: Call, response: httpx.Response) -> None:
    """Check a 2xx answer the contract gives no body (204)."""
    check(response)
    responses = call.operation.responses
    if response.status_code not in responses or responses[response.status_code] is not None:
        raise UnexpectedResponse(f"{call.operation.operation_id} answered {response.status_code}")
