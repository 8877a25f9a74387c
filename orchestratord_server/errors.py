"""Every failure leaves the server as an `ErrorEnvelope` (ORCH-2006, ORCH-3025).

Handlers build error responses with `error_response`; exceptions raised anywhere in the
stack (connexion's problems, Starlette's routing errors, anything unexpected) are turned
into the same envelope by the handlers `install_error_handlers` registers, so no framework
default body ever reaches a client. On the OpenAI-compatible routes the same handlers
answer in OpenAI's error shape instead (`openai_compat.errors`), so OpenAI clients see
their own error classes for authentication and validation failures too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from connexion import AsyncApp
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response

from orchestrator_core import RETRIABLE
from orchestratord_server.generated.models import ErrorEnvelope, ErrorKind, FieldError
from orchestratord_server.generated.operations import OPERATIONS
from orchestratord_server.openai_compat import errors as openai_errors
from orchestratord_server.runtime.sequencer import StateUnavailable

log = logging.getLogger("orchestratord.errors")

JSON = "application/json"

#: The code a bare HTTP status is reported with when nothing more specific is known.
STATUS_CODES: Mapping[int, ErrorKind] = {
    400: ErrorKind.INVALID_PARAMS,
    401: ErrorKind.UNAUTHORIZED,
    403: ErrorKind.FORBIDDEN,
    404: ErrorKind.NOT_FOUND,
    405: ErrorKind.METHOD_NOT_ALLOWED,
    413: ErrorKind.INVALID_PARAMS,
    415: ErrorKind.INVALID_PARAMS,
    501: ErrorKind.NOT_IMPLEMENTED,
}


class InvalidRequest(ProblemException):  # type: ignore[misc]
    """A request (body or parameters) that failed validation; carries every bad field
    (ORCH-2006)."""

    def __init__(self, errors: Sequence[FieldError], status: int = 400) -> None:
        summary = "; ".join(f"{e.loc}: {e.msg}" for e in errors)
        super().__init__(status=status, title="Invalid request", detail=summary)
        self.field_errors = list(errors)


def envelope_bytes(
    code: ErrorKind,
    message: str,
    *,
    engine: str | None = None,
    errors: Sequence[FieldError] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The JSON bytes of an ErrorEnvelope; `retriable` follows the code (ORCH-3025)."""
    envelope = ErrorEnvelope(
        code=code,
        message=message,
        engine=engine,
        retriable=code in RETRIABLE,
        errors=list(errors) if errors else None,
        **(extra or {}),
    )
    return envelope.model_dump_json(exclude_none=True).encode()


def error_response(
    status: int,
    code: ErrorKind,
    message: str,
    *,
    engine: str | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """A Starlette response carrying an ErrorEnvelope."""
    body = envelope_bytes(code, message, engine=engine, errors=errors, extra=extra)
    return Response(body, status_code=status, media_type=JSON, headers=dict(headers or {}))


def _connexion_error(
    request: ConnexionRequest,
    status: int,
    code: ErrorKind,
    message: str,
    *,
    errors: Sequence[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> ConnexionResponse:
    if openai_errors.is_openai_path(request.url.path):
        param = None
        if errors:
            message, param = openai_errors.invalid_fields(errors)
        body = openai_errors.error_body(status, message, code=code.value, param=param)
    else:
        body = envelope_bytes(code, message, errors=errors)
    return ConnexionResponse(
        status_code=status,
        mimetype=JSON,
        content_type=JSON,
        body=body,
        headers=dict(headers or {}),
    )


def _auth_headers(status: int) -> dict[str, str]:
    return {"WWW-Authenticate": 'Bearer realm="orchestratord"'} if status == 401 else {}


def _on_problem(request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
    status = exc.status
    code = STATUS_CODES.get(status, ErrorKind.INTERNAL)
    if isinstance(exc, InvalidRequest):
        return _connexion_error(request, status, code, "invalid request", errors=exc.field_errors)
    if status == 415:
        wrong_type = FieldError(
            loc="header.Content-Type", msg="the body must be application/json", type="media_type"
        )
        return _connexion_error(
            request, status, code, "the body must be application/json", errors=[wrong_type]
        )
    message = str(exc.detail or exc.title or "error")
    if status >= 500:
        log.error("request failed: %s", message)
    return _connexion_error(request, status, code, message, headers=_auth_headers(status))


def _path_methods() -> list[tuple[re.Pattern[str], str]]:
    """Each contract path as a pattern, with every method the contracts give it."""
    methods: dict[str, list[str]] = {}
    for operation in OPERATIONS.values():
        methods.setdefault(operation.path, []).append(operation.method.upper())
    return [
        (re.compile(re.sub(r"\\\{[^/]+\\\}", "[^/]+", re.escape(path))), ", ".join(sorted(names)))
        for path, names in methods.items()
    ]


_PATH_METHODS = _path_methods()


def allowed_methods(path: str) -> str | None:
    """The `Allow` header of a 405 on `path`: every method the contracts declare for it
    (the router lists only those of the first route that matched the path)."""
    for pattern, methods in _PATH_METHODS:
        if pattern.fullmatch(path):
            return methods
    return None


def _on_http_exception(request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
    status = exc.status_code
    code = STATUS_CODES.get(status, ErrorKind.INTERNAL)
    messages = {
        404: "no such route",
        405: "method not allowed on this route",
    }
    message = messages.get(status) or str(exc.detail)
    headers = {**(exc.headers or {}), **_auth_headers(status)}
    allow = allowed_methods(request.url.path) if status == 405 else None
    if allow is not None:
        headers["Allow"] = allow
    return _connexion_error(request, status, code, message, headers=headers)


def _on_unexpected(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
    log.error("unhandled error", exc_info=exc)
    return _connexion_error(request, 500, ErrorKind.INTERNAL, "internal error")


def _on_state_unavailable(request: ConnexionRequest, exc: StateUnavailable) -> ConnexionResponse:
    headers = {"Retry-After": "1"}
    message = exc.consequence("change")
    return _connexion_error(request, 503, ErrorKind.STATE_UNAVAILABLE, message, headers=headers)


def install_error_handlers(app: AsyncApp) -> None:
    """Make every error path of `app` answer with an ErrorEnvelope."""
    app.add_error_handler(StateUnavailable, _on_state_unavailable)
    app.add_error_handler(ProblemException, _on_problem)
    app.add_error_handler(HTTPException, _on_http_exception)
    app.add_error_handler(Exception, _on_unexpected)
