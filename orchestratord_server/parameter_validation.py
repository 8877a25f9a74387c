"""Path, query and header parameters checked by connexion, reported field by field.

connexion's parameter validator stops at the first bad parameter and reports a raw
JSON-schema dump. This subclass runs the same checks on every parameter and raises one
`InvalidRequest` naming each bad one (`path.id`, `query.x`, `header.X-Priority`) with a
one-line message, so parameters fail like bodies do: one 400 envelope, every field
(ORCH-2006).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connexion.validators import ParameterValidator

from orchestratord_server.errors import InvalidRequest
from orchestratord_server.generated.models import FieldError


class LocatedParameterValidator(ParameterValidator):  # type: ignore[misc]
    """connexion's parameter checks, every failure named by its location."""

    def validate_request(self, request: Any) -> None:
        errors: list[FieldError] = []
        if self.strict_validation:
            extra = self.validate_query_parameter_list(
                request, security_params=self.security_query_params
            )
            errors += [
                FieldError(loc=f"query.{name}", msg="unknown parameter", type="extra_forbidden")
                for name in sorted(extra)
            ]
        checks: tuple[tuple[str, Callable[[Any, Any], str | None]], ...] = (
            ("query", self.validate_query_parameter),
            ("path", self.validate_path_parameter),
            ("header", self.validate_header_parameter),
            ("cookie", self.validate_cookie_parameter),
        )
        for where, check in checks:
            for param in self.parameters.get(where, []):
                problem = check(param, request)
                if problem:
                    message = problem.splitlines()[0]
                    errors.append(
                        FieldError(loc=f"{where}.{param['name']}", msg=message, type="value_error")
                    )
        if errors:
            raise InvalidRequest(errors)
