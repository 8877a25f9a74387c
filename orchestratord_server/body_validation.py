"""Request bodies validated by the generated pydantic models, inside connexion (ORCH-2006).

connexion's own JSON-schema validator is slow, ignores `format: uuid` and stops at the
first error. This validator replaces it for JSON bodies: it reads the body once, validates
it with the operation's generated model (`Model.model_validate_json`), reports every bad
field in one 400 envelope, and stores the validated model in the ASGI scope so handlers
read it with `validated_body()` instead of parsing the JSON again. The raw body is replayed
downstream unchanged. Bodies above the configured limit are refused with 413.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from connexion.datastructures import MediaTypeDict
from connexion.validators import AbstractRequestBodyValidator
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope

from orchestratord_server.errors import InvalidRequest
from orchestratord_server.generated.models import FieldError
from orchestratord_server.generated.operations import OPERATIONS
from orchestratord_server.parameter_validation import LocatedParameterValidator

SCOPE_KEY = "orchestratord.body"

_REQUEST_MODELS: Mapping[str, type[BaseModel]] = {
    op_id: op.request_model for op_id, op in OPERATIONS.items() if op.request_model is not None
}


#: The parts of a pydantic error location that name a member of a union (`str`,
#: `list[ChatContentPart]`, `literal['none','auto']`, a model class), not a field.
_UNION_TAG = re.compile(r"str|int|float|bool|(list|dict|literal|function-[a-z]+)\[.*\]|[A-Z]\w*")


def _loc(parts: tuple[int | str, ...]) -> str:
    text = "body"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _UNION_TAG.fullmatch(part):
            text += f".{part}"
    return text


def field_errors(exc: ValidationError) -> list[FieldError]:
    """One FieldError per problem pydantic found, with a dotted location that names the
    field only (a union's member tags are left out), each (location, message) once."""
    result: dict[tuple[str, str], FieldError] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = _loc(tuple(error["loc"]))
        result.setdefault(
            (loc, error["msg"]), FieldError(loc=loc, msg=error["msg"], type=error["type"])
        )
    return list(result.values())


class PydanticBodyValidator(AbstractRequestBodyValidator):  # type: ignore[misc]
    """connexion body validator backed by the generated request models."""

    max_body_bytes: ClassVar[int] = 1 << 20

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        operation_id = scope["extensions"]["connexion_routing"]["operation_id"]
        raw = await self._read_body(receive)
        model = _REQUEST_MODELS.get(operation_id)
        if model is not None:
            if not raw.strip():
                missing = FieldError(loc="body", msg="a JSON body is required", type="missing")
                raise InvalidRequest([missing])
            try:
                validated = model.model_validate_json(raw)
            except ValidationError as exc:
                raise InvalidRequest(field_errors(exc)) from None
            scope["extensions"][SCOPE_KEY] = validated
        message = {"type": "http.request", "body": raw, "more_body": False}
        return self._insert_messages(receive, messages=[message]), scope

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                too_large = FieldError(
                    loc="body",
                    msg=f"the body exceeds {self.max_body_bytes} bytes",
                    type="too_large",
                )
                raise InvalidRequest([too_large], status=413)
            chunks.append(chunk)
            more_body = message.get("more_body", False)
        return b"".join(chunks)


def validator_map(max_body_bytes: int) -> dict[str, Any]:
    """The `validator_map` for `add_api`: bodies by the generated models (with this
    server's size limit), parameters reported field by field."""
    validator = type(
        "LimitedPydanticBodyValidator",
        (PydanticBodyValidator,),
        {"max_body_bytes": max_body_bytes},
    )
    return {
        "body": MediaTypeDict({"*/*json": validator}),
        "parameter": LocatedParameterValidator,
    }


def validated_body(scope: Scope) -> Any:
    """The request model the validator stored for this request."""
    return scope["extensions"][SCOPE_KEY]
