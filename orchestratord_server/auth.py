"""API-key authentication for the data and control planes (ORCH-3035).

A client presents its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`; the
contracts declare both schemes and connexion applies them per operation. This module
supplies the verification behind those schemes: one `KeyRing` per plane, keys compared in
constant time (every configured key is compared, so timing says nothing about which one
nearly matched). Routes the config leaves open (by default `/livez`, `/readyz`,
`/metrics`) carry `security: []` in the served spec; routes it closes get the plane's
requirement.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connexion.exceptions import Forbidden
from connexion.security import ApiKeySecurityHandler, BearerSecurityHandler

from orchestratord_server.config import AuthConfig

Plane = str  # "data" | "control"


class MissingApiKeys(Exception):
    """Auth is on but no key is configured for a plane."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The keys one plane accepts."""

    plane: Plane
    keys: tuple[bytes, ...]

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


def _ring(plane: Plane, keys: Iterable[str]) -> KeyRing:
    unique = sorted(set(keys))
    return KeyRing(plane, tuple(k.encode() for k in unique))


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
    return {
        "data": _ring("data", data_keys),
        "control": _ring("control", control_keys or data_keys),
    }


def generate_key() -> str:
    """A fresh random key, for a development daemon started without one."""
    return secrets.token_urlsafe(24)


def key_fingerprint(key: str) -> str:
    """A short, non-reversible name for a key: the caller's id in limits and logs."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _verifier(ring: KeyRing, other: KeyRing | None) -> Callable[..., dict[str, Any] | None]:
    def verify(token: str, *_args: Any, **_kwargs: Any) -> dict[str, Any] | None:
        if ring.accepts(token):
            return {"sub": key_fingerprint(token), "plane": ring.plane}
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

    bearer = type(f"{ring.plane}Bearer", (BearerSecurityHandler,), {"_resolve_func": resolve})
    api_key = type(f"{ring.plane}ApiKey", (ApiKeySecurityHandler,), {"_resolve_func": resolve})
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
