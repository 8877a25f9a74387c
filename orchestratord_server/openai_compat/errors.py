"""OpenAI's error shape for the OpenAI-compatible routes.

Every 4xx and 5xx of the OpenAI routes (`/v1/completions`, `/v1/chat/completions`,
`/v1/embeddings`, `/v1/models...`, and any other `/v1/` path that is not an OrchQueue
route, so a client of an OpenAI route this server lacks reads a 404 it understands) is
`{"error": {"message", "type", "param", "code"}}`: `type` is OpenAI's error class for the
status (OpenAI clients raise their exception classes from the status), `code` the
orchestratord `ErrorKind`, `param` the request field at fault. Load refusals keep their
retry hints (ORCH-2007) and add `retry-after-ms`, which OpenAI clients read for their
back-off. `orchestratord_server.errors` uses `is_openai_path` to pick this shape for
errors raised before a handler runs (authentication, body validation, routing).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from starlette.responses import Response

from orchestrator_core import Refused
from orchestratord_server.generated.models import FieldError

JSON = "application/json"
#: Path prefixes of the OrchQueue routes under `/v1`; every other `/v1/` path answers in
#: OpenAI's shape.
ORCHQUEUE_PATHS = ("/v1/tasks", "/v1/sessions", "/v1/pools", "/v1/replicasets", "/v1/events")
#: Pydantic's names of model types in messages, for "a JSON object".
_INSTANCE_OF = re.compile(r"(?:a valid )?dictionary or instance of \w+")
#: OpenAI's error class for each client-error status; 5xx are `server_error`.
ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}
#: The request fields an admission refusal names, in OpenAI's terms.
PARAMS: Mapping[str, str] = {
    "model_ref": "model",
    "max_tokens": "max_tokens",
    "prompt": "prompt",
    "messages": "messages",
    "tools": "tools",
    "response_format": "response_format",
    "logprobs": "logprobs",
    "inputs": "input",
}


def is_openai_path(path: str) -> bool:
    """True for the OpenAI-compatible surface: every `/v1/` path but OrchQueue's."""
    if not path.startswith("/v1/"):
        return False
    return not any(path == p or path.startswith(p + "/") for p in ORCHQUEUE_PATHS)


def error_type(status: int) -> str:
    """OpenAI's error class of an HTTP status."""
    return ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str, *, code: str | None, param: str | None = None) -> bytes:
    """The JSON bytes of an OpenAI error object."""
    error = {"message": message, "type": error_type(status), "param": param, "code": code}
    return json.dumps({"error": error}, ensure_ascii=False).encode()


def error_response(
    status: int,
    message: str,
    *,
    code: str | None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A Starlette response carrying an OpenAI error object."""
    body = error_body(status, message, code=code, param=param)
    return Response(body, status_code=status, media_type=JSON, headers=dict(headers or {}))


def retry_headers(backoff_ms: int) -> dict[str, str]:
    """The retry hints of a retriable failure: `Retry-After` (whole seconds, at least 1),
    `X-Backoff-Ms`, and OpenAI's `retry-after-ms`."""
    seconds = max(1, -(-backoff_ms // 1000))
    return {
        "Retry-After": str(seconds),
        "X-Backoff-Ms": str(backoff_ms),
        "retry-after-ms": str(backoff_ms),
    }


def param_of(loc: str) -> str | None:
    """A FieldError location (`body.messages[0].role`) as OpenAI's `param`."""
    for prefix in ("body.", "header.", "query.", "path."):
        if loc.startswith(prefix):
            return loc.removeprefix(prefix)
    return None


def readable(error: FieldError) -> tuple[str, str]:
    """A field error as (param, message) a person reads: no model class names in the
    message (`body_validation` already left union member tags out of the location)."""
    loc = error.loc
    message = _INSTANCE_OF.sub("a JSON object", error.msg)
    if error.type == "extra_forbidden":
        message = "unknown field (this object takes no such field)"
    return param_of(loc) or loc, message


def invalid_fields(errors: Sequence[FieldError]) -> tuple[str, str | None]:
    """(message listing every bad field, the first one's param) of a refused body."""
    seen = dict.fromkeys(f"{param}: {message}" for param, message in map(readable, errors))
    first = readable(errors[0])[0] if errors else None
    return "; ".join(seen) or "invalid request", first


def refusal(decision: Refused) -> Response:
    """An admission refusal in OpenAI's shape, with its backpressure headers (ORCH-2007)."""
    headers = decision.headers()
    if decision.retriable:
        headers["retry-after-ms"] = str(decision.backoff_ms)
    param = PARAMS.get(decision.field) if decision.field else None
    return error_response(
        decision.status,
        decision.message,
        code=decision.kind.value,
        param=param,
        headers=headers,
    )
