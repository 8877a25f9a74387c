"""The ASGI application: both contracts mounted on one connexion AsyncApp.

Routing goes through the generated operation table: each operationId resolves to the
handler `handler_table` found for it. Bodies are validated by the generated pydantic
models (`body_validation`), credentials by the plane's key ring after a check that they
are not ambiguous (`auth`), and every error
renders as an ErrorEnvelope (`errors`). One interactive API page at `/docs` shows both
contracts; the contracts themselves are served at `/openapi/data.json` and
`/openapi/control.json`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from connexion import AsyncApp
from connexion.exceptions import ResolverError
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from orchestratord_server.access_log import AccessLog
from orchestratord_server.auth import (
    CredentialsGuard,
    KeyRing,
    apply_route_security,
    security_map,
)
from orchestratord_server.body_validation import validator_map
from orchestratord_server.console import console_routes
from orchestratord_server.errors import install_error_handlers
from orchestratord_server.handlers import handler_table
from orchestratord_server.prepared_layers import PreparedAsyncApp
from orchestratord_server.state import ServerState

PLANES = ("control", "data")
DOCS_PATH = "/docs"


def contract(plane: str) -> dict[str, Any]:
    """The served copy of a contract (generated from contracts/openapi/<plane>.yaml)."""
    text = resources.files("orchestratord_server.generated").joinpath(f"openapi_{plane}.json")
    spec: dict[str, Any] = json.loads(text.read_text(encoding="utf-8"))
    return spec


def _resolver(table: dict[str, Callable[..., Any]]) -> Resolver:
    def resolve(operation_id: str) -> Callable[..., Any]:
        try:
            return table[operation_id]
        except KeyError:
            raise ResolverError(f"no handler for operation {operation_id}") from None

    return Resolver(function_resolver=resolve)


#: Response headers a browser client may read cross-origin: the backpressure hints.
EXPOSED_HEADERS = (
    "Retry-After",
    "X-Backoff-Ms",
    "retry-after-ms",
    "X-Queue-Position",
    "X-Queue-ETA-Ms",
)


def _spec_route(spec: dict[str, Any]) -> Callable[[Request], Any]:
    body = json.dumps(spec).encode()

    async def serve(_request: Request) -> Response:
        return Response(body, media_type="application/json")

    return serve


def _other_plane(state: ServerState, plane: str) -> KeyRing | None:
    rings = state.key_rings or {}
    return rings.get("data" if plane == "control" else "control")


def build_app(state: ServerState) -> AsyncApp:
    """Build the application for `state` (config, keys, registry)."""
    config = state.config

    @asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        await state.runtime.start()
        try:
            yield
        finally:
            await state.runtime.stop()

    app = PreparedAsyncApp("orchestratord", strict_validation=True, lifespan=lifespan)
    resolver = _resolver(handler_table(state))
    validators = validator_map(config.server.max_body_bytes)
    specs = {plane: apply_route_security(contract(plane), config.auth) for plane in PLANES}
    page = {"urls": [{"url": f"/openapi/{p}.json", "name": p} for p in ("data", "control")]}
    for plane in PLANES:
        # connexion serves the spec and page of one API per base path; the data API's
        # page lists both contracts, the control contract is served by its own route.
        ui = (
            SwaggerUIOptions(
                spec_path="/openapi/data.json", swagger_ui_path=DOCS_PATH, swagger_ui_config=page
            )
            if plane == "data"
            else SwaggerUIOptions(serve_spec=False, swagger_ui=False)
        )
        keys = state.key_rings[plane] if state.key_rings else None
        app.add_api(
            specs[plane],
            name=plane,
            resolver=resolver,
            validator_map=validators,
            security_map=security_map(keys, _other_plane(state, plane)) if keys else None,
            swagger_ui_options=ui,
        )
    app.add_url_rule(
        "/openapi/control.json", "control_contract", _spec_route(specs["control"]), methods=["GET"]
    )
    for path, handler in console_routes():
        app.add_url_rule(path, f"console:{path}", handler, methods=["GET"])
    if state.key_rings:
        app.add_middleware(CredentialsGuard, position=MiddlewarePosition.BEFORE_SECURITY)
    if config.server.access_log:
        # Inside the server-error layer only, so error answers and CORS preflights count.
        app.add_middleware(AccessLog, position=MiddlewarePosition.BEFORE_EXCEPTION)
    if config.server.cors_origins:
        # Outside the error handlers, so preflights and error answers carry the CORS headers.
        app.add_middleware(
            CORSMiddleware,
            position=MiddlewarePosition.BEFORE_EXCEPTION,
            allow_origins=list(config.server.cors_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=list(EXPOSED_HEADERS),
            max_age=600,
        )
    install_error_handlers(app)
    return app
