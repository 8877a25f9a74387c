"""The answer of an operation whose behaviour belongs to a later issue: 501 with an envelope."""

from __future__ import annotations

from starlette.responses import Response

from orchestratord_server.errors import error_response
from orchestratord_server.generated.models import ErrorKind


def not_implemented(operation_id: str, issue: int) -> Response:
    """A 501 ErrorEnvelope saying which issue brings `operation_id`."""
    return error_response(
        501,
        ErrorKind.NOT_IMPLEMENTED,
        f"{operation_id} is declared by the contract but not served yet (issue {issue})",
    )
