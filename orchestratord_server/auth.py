"""API-key authentication for the data and control planes (ORCH-3035).

A client presents its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`; the
contracts declare both schemes and connexion applies them per operation. This module
supplies the verification behind those schemes: one `KeyRing` per plane, keys compared in
constant time (every configured key is compared, so timing says nothing about which one
nearly matched). Routes the config leaves open (by default `/livez`, `/readyz`,
`/metrics`) carry `security: []` in the served spec; routes it closes get the plane's
requirement.

Credentials must say one thing (`CredentialsGuard`, ahead of the schemes): a repeated
`Authorization` or `X-API-Key` header is refused with 400, and a Bearer key and an
`X-API-Key` that differ with 401, so no layer can pick a different one than another.

A caller is known in limits and logs by `client_id`, an HMAC of its key under the
deployment's secret (`auth.client_id_secret_env`; a random one per process when unset):
without the secret, a logged id cannot be tested against guessed keys.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connexion.exceptions import Forbidden, Unauthorized
from connexion.security import ApiKeySecurityHandler, BearerSecurityHandler
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestratord_server.config import AuthConfig
from orchestratord_server.errors import InvalidRequest
from orchestratord_server.generated.models import FieldError
from orchestratord_server.prepared_layers import accepts_kwarg

log = logging.getLogger("orchestratord.auth")

Plane = str  # "data" | "control"


class MissingApiKeys(Exception):
    """Auth is on but no key is configured for a plane."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys one plane accepts, and the secret that names their callers."""

    plane: Plane
    keys: tuple[bytes, ...]
    id_secret: bytes

    def accepts(self, presented: str) -> bool:
        """True when `presented` equals one of the keys; constant time in the match."""
        candidate = presented.encode()
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched


def _env_keys(variable: str | None, environ: Mapping[str, str]) -> list[str]:
    if not variable:
        return []
    return [k.strip() for k in environ.get(variable, "").split(",") if k.strip()]


def _ring(plane: Plane, keys: Iterable[str], id_secret: bytes) -> KeyRing:
    unique = sorted(set(keys))
    return KeyRing(plane, tuple(k.encode() for k in unique), id_secret)


def _id_secret(auth: AuthConfig, environ: Mapping[str, str]) -> bytes:
    """The deployment's client-id secret, or a random one for this process."""
    configured = environ.get(auth.client_id_secret_env, "") if auth.client_id_secret_env else ""
    if configured:
        return configured.encode()
    log.info(
        "%s is not set: client ids in logs are keyed with a random secret of this process",
        auth.client_id_secret_env,
    )
    return secrets.token_bytes(32)


def key_rings(auth: AuthConfig, environ: Mapping[str, str] | None = None) -> dict[Plane, KeyRing]:
    """The data and control key rings from config and environment.

    Raises MissingApiKeys when auth is enabled and the data plane has no key.
    """
    env = os.environ if environ is None else environ
    data_keys = [*auth.api_keys, *_env_keys(auth.api_keys_env, env)]
    control_keys = [*auth.control_api_keys, *_env_keys(auth.control_api_keys_env, env)]
    if auth.enabled and not data_keys:
        raise MissingApiKeys(
            f"authentication is enabled but no API key is configured: set {auth.api_keys_env} "
            "(comma-separated for several) or auth.api_keys, or set auth.enabled: false"
        )
    secret = _id_secret(auth, env)
    return {
        "data": _ring("data", data_keys, secret),
        "control": _ring("control", control_keys or data_keys, secret),
    }


def generate_key() -> str:
    """A fresh random key, for a development daemon started without one."""
    return secrets.token_urlsafe(24)


def client_id(key: str, secret: bytes) -> str:
    """The caller's id in limits and logs: an HMAC-SHA256 of its key under the deployment's
    secret, shortened; without the secret it cannot be tested against guessed keys."""
    return "key-" + hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:16]


def _verifier(ring: KeyRing, other: KeyRing | None) -> Callable[..., dict[str, Any] | None]:
    # The id of each accepted key, computed once (only the ring's keys ever get in).
    ids: dict[str, str] = {}

    def verify(token: str, *_args: Any, **_kwargs: Any) -> dict[str, Any] | None:
        if ring.accepts(token):
            known = ids.get(token)
            if known is None:
                known = ids[token] = client_id(token, ring.id_secret)
            return {"sub": known, "plane": ring.plane}
        if other is not None and other.accepts(token):
            raise Forbidden(detail=f"this key is for the {other.plane} plane, not the {ring.plane}")
        return None

    return verify


def security_map(ring: KeyRing, other: KeyRing | None = None) -> dict[str, type]:
    """connexion `security_map` whose bearer and apiKey schemes check `ring`.

    A key that `other` (the other plane's ring) accepts is a known caller without the
    right to this plane: 403 FORBIDDEN rather than 401 (ORCH-3035).
    """
    verify = _verifier(ring, other)

    def resolve(_self: Any, _scheme: Mapping[str, Any]) -> Callable[..., Any]:
        return verify

    # connexion reads the verifier's signature twice per request unless told it is fixed.
    fixed = {"_resolve_func": resolve, "_accepts_kwarg": staticmethod(accepts_kwarg)}
    bearer = type(f"{ring.plane}Bearer", (BearerSecurityHandler,), fixed)
    api_key = type(f"{ring.plane}ApiKey", (ApiKeySecurityHandler,), fixed)
    return {"bearer": bearer, "apiKey": api_key}


def apply_route_security(spec: dict[str, Any], auth: AuthConfig) -> dict[str, Any]:
    """Adjust a contract's security to the config: open routes, or none at all.

    Operations on a path in `auth.open_routes` are left without security; the others use
    the contract's top-level requirement. With auth disabled every operation is open.
    """
    required = spec.get("security", [])
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if method.startswith("x-") or not isinstance(operation, dict):
                continue
            if not auth.enabled or path in auth.open_routes:
                operation["security"] = []
            elif operation.get("security") == []:
                operation["security"] = required
    return spec


class CredentialsGuard:
    """Refuse requests whose credentials say more than one thing (ASGI middleware, ahead
    of the security schemes): two `Authorization` or two `X-API-Key` headers are 400; a
    Bearer key and an `X-API-Key` that differ are 401."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            _check_credentials(scope["headers"])
        await self._app(scope, receive, send)


def _check_credentials(headers: Iterable[tuple[bytes, bytes]]) -> None:
    authorization: list[bytes] = []
    api_key: list[bytes] = []
    for name, value in headers:
        if name == b"authorization":
            authorization.append(value)
        elif name == b"x-api-key":
            api_key.append(value)
    for values, header in ((authorization, "Authorization"), (api_key, "X-API-Key")):
        if len(values) > 1:
            message = f"send one {header} header, not {len(values)}"
            duplicate = FieldError(loc=f"header.{header}", msg=message, type="duplicate")
            raise InvalidRequest([duplicate])
    if authorization and api_key:
        scheme, _, bearer = authorization[0].partition(b" ")
        if scheme.lower() == b"bearer" and not hmac.compare_digest(bearer.strip(), api_key[0]):
            raise Unauthorized(detail="the Bearer key and the X-API-Key differ; send one key")
