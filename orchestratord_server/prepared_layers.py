"""connexion's per-operation layers, with what they build for every request built once.

connexion 3 sets up, on every request, objects that depend only on the operation: the
request-validation layer builds a URI parser, a parameter validator and a body validator
(and computes the body definition several times); the handler layer wraps the handler in
its parameter and response decorators again, reading the handler's signature each time
(`inspect.signature`), and builds another URI parser; a security scheme reads the key
verifier's signature twice. None of that changes once the app is built, and together it
was about a third of an admission's cost in the daemon (bench/RESULTS.md, "Admission").

The classes here are connexion's own, subclassed so that each builds those objects once
per operation (on its first request) and reuses them; what they check and how they
answer is connexion's. `PreparedAsyncApp` is connexion's `AsyncApp` with these layers in
place of the originals. This reaches into connexion internals (the per-operation classes
and the `api_cls` hook), so pyproject.toml pins connexion to the 3.3 series.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from connexion import AsyncApp
from connexion.apps.asynchronous import AsyncApi, AsyncOperation
from connexion.context import operation as current_operation
from connexion.context import receive as current_receive
from connexion.context import scope as current_scope
from connexion.decorators import StarletteDecorator
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.request_validation import (
    RequestValidationAPI,
    RequestValidationMiddleware,
    RequestValidationOperation,
)
from connexion.operations import AbstractOperation
from connexion.uri_parsing import AbstractURIParser
from connexion.utils import inspect_function_arguments, is_nullable
from starlette.types import Receive, Scope, Send


@functools.cache
def accepts_kwarg(func: Callable[..., Any], keyword: str) -> bool:
    """connexion's `AbstractSecurityHandler._accepts_kwarg`, remembered per function: a
    verifier's signature does not change."""
    arguments, has_kwargs = inspect_function_arguments(func)
    return has_kwargs or keyword in arguments


class PreparedValidationOperation(RequestValidationOperation):  # type: ignore[misc]
    """connexion's request validation of one operation, its validators built once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        op: AbstractOperation = self._operation
        self._uri_parser: AbstractURIParser = op._uri_parser_class(
            op.parameters, op.body_definition()
        )
        self._parameters: Any = None
        self._bodies: dict[tuple[str, str], Any] = {}

    def _parameter_validator(self) -> Any:
        # Built on first use: `security_query_params` needs the resolved security schemes.
        if self._parameters is None:
            self._parameters = self._validator_map["parameter"](
                self._operation.parameters,
                uri_parser=self._uri_parser,
                strict_validation=self.strict_validation,
                security_query_params=self.security_query_params,
            )
        return self._parameters

    def _body_validator(self, mime_type: str, encoding: str) -> Any:
        key = (mime_type, encoding)
        if key not in self._bodies:
            op = self._operation
            schema = op.body_schema(mime_type)
            validator_cls = self._validator_map["body"].get(mime_type) if schema else None
            self._bodies[key] = validator_cls and validator_cls(
                schema=schema,
                required=op.request_body.get("required", False),
                nullable=is_nullable(op.body_definition(mime_type)),
                encoding=encoding,
                strict_validation=self.strict_validation,
                uri_parser=self._uri_parser,
            )
        return self._bodies[key]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._operation.parameters or scope["query_string"]:
            # An operation without parameters has nothing to check but unknown ones.
            self._parameter_validator().validate(scope)
        mime_type, encoding = self.extract_content_type(scope["headers"])
        self.validate_mime_type(mime_type)
        body = self._body_validator(mime_type, encoding)
        if body is not None:
            receive, scope = await body.wrap_receive(receive, scope=scope)
        await self.next_app(scope, receive, send)


class PreparedValidationAPI(RequestValidationAPI):  # type: ignore[misc]
    """Request validation whose operations keep their validators."""

    def make_operation(self, operation: AbstractOperation) -> PreparedValidationOperation:
        return PreparedValidationOperation(
            self.next_app,
            operation=operation,
            strict_validation=self.strict_validation,
            validator_map=self.validator_map,
        )


class PreparedValidationMiddleware(RequestValidationMiddleware):  # type: ignore[misc]
    """connexion's request-validation middleware with `PreparedValidationAPI`."""

    api_cls = PreparedValidationAPI


class PreparedDecorator(StarletteDecorator):  # type: ignore[misc]
    """connexion's handler decorator, applied once rather than on every request."""

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        arguments, has_kwargs = inspect_function_arguments(function)
        if not arguments and not has_kwargs:
            # Nothing of the request to pass: the parameter layer would compute an empty
            # set of arguments on every request (parsing the query and the form on the way).
            respond = self._response_decorator_cls(
                framework=self.framework, jsonifier=self.jsonifier
            )
            answer: Callable[..., Any] = respond(self._sync_async_decorator(function))
            return answer
        decorated = self.decorate(function)
        parsers: dict[int, AbstractURIParser] = {}

        @functools.wraps(function)
        async def wrapper(*_args: Any, **_kwargs: Any) -> Any:
            op = current_operation._get_current_object()
            parser = parsers.get(id(op))
            if parser is None:
                parser = parsers[id(op)] = self.uri_parser
            request = self.framework.get_request(
                uri_parser=parser, scope=current_scope, receive=current_receive
            )
            return await decorated(request)

        return wrapper


class PreparedOperation(AsyncOperation):  # type: ignore[misc]
    """connexion's AsyncOperation with its handler decorated once."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(fn, *args, **kwargs)
        self._decorated = PreparedDecorator(
            pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )(fn)

    @property
    def fn(self) -> Callable[..., Any]:
        return self._decorated


class PreparedApi(AsyncApi):  # type: ignore[misc]
    """The handler layer's API, making `PreparedOperation`s."""

    def make_operation(self, operation: AbstractOperation) -> PreparedOperation:
        return PreparedOperation(
            operation.function,
            jsonifier=self.jsonifier,
            operation_id=operation.operation_id,
            pythonic_params=self.pythonic_params,
        )


#: connexion's default layers with request validation replaced.
MIDDLEWARES = [
    PreparedValidationMiddleware if layer is RequestValidationMiddleware else layer
    for layer in ConnexionMiddleware.default_middlewares
]


class PreparedAsyncApp(AsyncApp):  # type: ignore[misc]
    """connexion's AsyncApp with the prepared validation and handler layers."""

    def __init__(self, import_name: str, **kwargs: Any) -> None:
        super().__init__(import_name, middlewares=list(MIDDLEWARES), **kwargs)
        self._middleware_app.api_cls = PreparedApi
