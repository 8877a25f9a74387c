"""The opt-in access log (ORCH-3027): one `http.request` record per HTTP request.

`AccessLog` is a pure ASGI middleware that `build_app` installs only when the access log
is on (`server.access_log`, `--access-log`), so by default no request passes through it.
Each record, under the logger `orchestratord.access` at info level, carries `method`,
`route` (the contract's path template, such as `/v1/tasks/{id}/stream`, never the path
with its ids; null when no contract operation matched: an unknown path, the API page or a
contract file), `status`, `duration_ms` (until the response's last byte was handed on:
for a stream, until it ended) and `client_id` (the caller's key fingerprint once the auth
layer accepted its key, else null).

The route and client come from what connexion records in the request's
`scope["extensions"]`: its router stores the matched `operation_id`, its security layer
the accepted caller as `user`. Connexion copies the scope before routing but not
`extensions`, so the middleware sets that dict up front and reads it afterwards.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestratord_server.generated.operations import OPERATIONS
from orchestratord_server.logs import log_event

ACCESS_LOGGER = "orchestratord.access"

log = logging.getLogger(ACCESS_LOGGER)


def _route(extensions: dict[str, Any]) -> str | None:
    operation_id = extensions.get("connexion_routing", {}).get("operation_id")
    operation = OPERATIONS.get(operation_id) if operation_id else None
    return None if operation is None else operation.path


def _client_id(extensions: dict[str, Any]) -> str | None:
    user = extensions.get("connexion_context", {}).get("user")
    return None if user is None else str(user)


class AccessLog:
    """Log each HTTP request once its response has ended (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        extensions: dict[str, Any] = scope.setdefault("extensions", {})
        began = time.perf_counter()
        status: int | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, send_noting_status)
        except Exception:
            # What escapes here is answered 500 by the server-error layer outside.
            status = 500 if status is None else status
            raise
        finally:
            duration_ms = round((time.perf_counter() - began) * 1000, 3)
            route = _route(extensions)
            method = scope["method"]
            log_event(
                log,
                logging.INFO,
                "http.request",
                f"{method} {route or 'unmatched route'} {status} in {duration_ms:g} ms",
                method=method,
                route=route,
                status=status,
                duration_ms=duration_ms,
                client_id=_client_id(extensions),
            )
