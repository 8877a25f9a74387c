"""Reaching NATS JetStream with the configured servers, credentials and TLS.

`connect` opens the connection the way every instance (and `--check-config`) does:
credentials come from the environment variables the config names, never from the file;
the client reconnects forever, so an instance outlives an outage of NATS. `ensure` makes
the event log's stream, the lease bucket and the snapshot store (each with the configured
number of JetStream replicas) if they do not exist yet; `check` is what `--check-config`
runs: reach NATS, ask JetStream for its account, and say plainly what failed.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from orchestratord_server.config import NatsConfig

#: How long JetStream keeps a writer's message id to drop a resent copy.
DUPLICATE_WINDOW_S = 120.0


class NatsUnreachable(Exception):
    """NATS or JetStream could not be used with the configured settings."""


@dataclass(slots=True)
class Stores:
    """The JetStream objects one instance works with."""

    nc: NatsClient
    js: JetStreamContext
    lease: KeyValue
    snapshots: ObjectStore


def log_subjects(settings: NatsConfig) -> str:
    """The subjects of the event log's stream."""
    return f"{settings.subject_prefix}.log.>"


def _tls(settings: NatsConfig) -> ssl.SSLContext | None:
    if settings.tls_ca_file is None and settings.tls_cert_file is None:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
    )
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    return context


def _credentials(settings: NatsConfig) -> dict[str, Any]:
    env = os.environ
    options: dict[str, Any] = {}
    if creds := env.get(settings.credentials_file_env):
        options["user_credentials"] = creds
    if token := env.get(settings.token_env):
        options["token"] = token
    if user := env.get(settings.user_env):
        options["user"] = user
        options["password"] = env.get(settings.password_env, "")
    return options


async def connect(
    settings: NatsConfig,
    name: str,
    *,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> NatsClient:
    """A connection to NATS; NatsUnreachable when none of the servers answers in time."""

    async def _ignore(*_: object) -> None:
        return None

    try:
        # nats-py retries the first connection as it would a lost one: bound it.
        async with asyncio.timeout(settings.connect_timeout_ms / 1000 * len(settings.servers) + 1):
            return await nats.connect(
                list(settings.servers),
                name=name,
                connect_timeout=settings.connect_timeout_ms / 1000,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                tls=_tls(settings),
                disconnected_cb=on_disconnect or _ignore,
                reconnected_cb=on_reconnect or _ignore,
                error_cb=_ignore,
                **_credentials(settings),
            )
    except Exception as exc:  # nats-py raises several unrelated types here
        servers = ", ".join(settings.servers)
        why = "no server answered in time" if isinstance(exc, TimeoutError) else repr(exc)
        raise NatsUnreachable(f"cannot reach NATS at {servers}: {why}") from exc


async def ensure(nc: NatsClient, settings: NatsConfig) -> Stores:
    """The stream, lease bucket and snapshot store, made if missing."""
    js = nc.jetstream(timeout=settings.write_timeout_ms / 1000)
    stream = js_api.StreamConfig(
        name=settings.stream,
        subjects=[log_subjects(settings)],
        storage=js_api.StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=DUPLICATE_WINDOW_S,
    )
    try:
        try:
            await js.add_stream(stream)
        except BadRequestError:  # it exists with other settings: take ours
            await js.update_stream(stream)
        lease = await js.create_key_value(
            js_api.KeyValueConfig(
                bucket=settings.bucket,
                history=1,
                ttl=settings.lease_ttl_ms / 1000,
                replicas=settings.replicas,
            )
        )
        snapshots = await js.create_object_store(
            f"{settings.bucket}-snapshots",
            config=js_api.ObjectStoreConfig(replicas=settings.replicas),
        )
    except Exception as exc:
        raise NatsUnreachable(f"JetStream refused the event log's set-up: {exc!r}") from exc
    return Stores(nc, js, lease, snapshots)


async def check(settings: NatsConfig) -> str:
    """Reach NATS and JetStream as the daemon would; a one-line summary, or
    NatsUnreachable saying what failed."""
    nc = await connect(settings, "orchestratord --check-config")
    try:
        js = nc.jetstream(timeout=settings.connect_timeout_ms / 1000)
        try:
            account = await js.account_info()
        except Exception as exc:
            raise NatsUnreachable(
                f"NATS at {nc.connected_url.netloc if nc.connected_url else '?'} answers but "
                f"JetStream does not (is the server started with -js?): {exc!r}"
            ) from exc
        return f"JetStream reachable ({account.streams} stream(s) in the account)"
    finally:
        await nc.close()
