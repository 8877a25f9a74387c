"""The `orchestratord` command: `serve` the daemon, `--check-config FILE`, or a client command.

`serve` and `--check-config` exit 0 on success and 2 on a usage or configuration error
(ORCH-3030: a bad config never starts a half-working daemon). `serve` logs in the format
and at the level its `--log-format` / `--log-level` flags name, else `ORCHD_LOG_FORMAT` /
`ORCHD_LOG_LEVEL`, else the config's `server.log_format` / `server.log_level`; an unknown
value in those variables is a configuration error too. The client commands
(`submit`, `cancel`, `session`, `pools`, `drain`, `reload`, `status`, `metrics`) come
from `orchestratord_client.cli`, which documents their exit codes. The daemon's modules
are imported only by `serve` and `--check-config`, so client commands start quickly.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from orchestratord_client import cli as client_cli

if TYPE_CHECKING:
    from orchestratord_server.config import Config
    from orchestratord_server.runtime import Runtime

log = logging.getLogger("orchestratord")

EXIT_CONFIG = 2
#: The values of `server.log_format` and `server.log_level`, repeated here so that client
#: commands need not import the daemon's config models.
LOG_FORMATS = ("auto", "json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestratord",
        description="Orchestrate LLM inference engines behind one queued, streaming API.",
    )
    parser.add_argument(
        "--check-config", type=Path, metavar="FILE", help="validate a config file and exit"
    )
    parser.add_argument(
        "--version",
        action="store_true",
        help="print the version and the engine runtimes installed beside it, and exit",
    )
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", type=Path, metavar="FILE", help="YAML config file")
    serve.add_argument("--host", help="bind address (overrides the config)")
    serve.add_argument("--port", type=int, help="bind port (overrides the config)")
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="log records as JSON lines, text, or auto: text on a terminal, JSON otherwise "
        "(overrides ORCHD_LOG_FORMAT and the config)",
    )
    serve.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="least severe level logged (overrides ORCHD_LOG_LEVEL and the config)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log one http.request record per HTTP request (as server.access_log: true)",
    )
    client_cli.add_commands(commands)
    return parser


def _check_config(path: Path) -> int:
    from orchestratord_server.config import ConfigError, load_config

    try:
        config, warnings = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if (missing := _missing_installs(config)) is not None:
        # The config is valid; this host lacks what serving it needs (serve exits 2).
        print(f"warning: {missing}", file=sys.stderr)
    reached = _reach_state(config)
    if reached is None:
        return EXIT_CONFIG
    print(f"{path}: valid ({len(config.pools)} pool(s), mode {config.mode.value}){reached}")
    return 0


def _reach_state(config: Config) -> str | None:
    """With `state.backend: nats`, reach JetStream as the daemon will: "" for the memory
    backend, a note when it answers, None (after saying why on stderr) when it does not."""
    from orchestratord_server.config import StateBackend

    if config.state.backend is not StateBackend.nats:
        return ""
    from orchestratord_server.cluster.connection import NatsUnreachable, check

    try:
        return f"; state on NATS: {asyncio.run(check(config.state.nats))}"
    except NatsUnreachable as exc:
        print(f"error: state.nats: {exc}", file=sys.stderr)
        return None


def _missing_installs(config: Config) -> str | None:
    """The one line saying what to install when `config` needs a runtime or model this
    installation lacks (orchestratord_server.install_check), else None."""
    from orchestratord_server.install_check import missing_installs

    return missing_installs(config)


def _load(path: Path | None) -> tuple[Config, bool, list[str]]:
    """The config to serve, whether it is the embedded development default, and the
    config's warnings (logged once logging is set up)."""
    from orchestratord_server.config import embedded_default, load_config

    if path is None:
        return embedded_default(), True, []
    config, warnings = load_config(path)
    return config, False, warnings


def _with_log_flags(config: Config, args: argparse.Namespace) -> Config:
    """`config` with its log settings decided: flags, then environment, then the file.

    Raises LogSettingError for an unknown value in ORCHD_LOG_FORMAT or ORCHD_LOG_LEVEL.
    """
    from orchestratord_server.config import LogFormat
    from orchestratord_server.logs import log_settings

    flag_format = None if args.log_format is None else LogFormat(args.log_format)
    log_format, log_level = log_settings(config.server, os.environ, flag_format, args.log_level)
    server = config.server.model_copy(
        update={
            "log_format": log_format,
            "log_level": log_level,
            "access_log": config.server.access_log or args.access_log,
        }
    )
    return config.model_copy(update={"server": server})


def _serve(args: argparse.Namespace) -> int:
    from orchestratord_server.app import build_app
    from orchestratord_server.auth import MissingApiKeys, generate_key, key_rings
    from orchestratord_server.config import ConfigError
    from orchestratord_server.http_protocol import fit_connection_cap, protocol_class
    from orchestratord_server.logs import LogSettingError, configure_logging, log_event
    from orchestratord_server.state import ServerState

    try:
        config, embedded, warnings = _load(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    if (missing := _missing_installs(config)) is not None:
        print(missing, file=sys.stderr)
        return EXIT_CONFIG
    try:
        config = _with_log_flags(config, args)
    except LogSettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    settings = config.server
    configure_logging(settings.log_format, settings.log_level, settings.engine_output)
    for warning in warnings:
        log_event(log, logging.WARNING, "config.warning", f"config: {warning}")
    try:
        rings = key_rings(config.auth) if config.auth.enabled else None
    except MissingApiKeys as exc:
        if not embedded:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        key = generate_key()
        rings = key_rings(config.auth.model_copy(update={"api_keys": (key,)}))
        print(f"orchestratord: no API key configured; this run's key is {key}", flush=True)
    if _reach_state(config) is None:
        return EXIT_CONFIG
    if embedded:
        log.warning(
            "no --config given: running the embedded development default (one CPU pool of "
            "SmolLM2-135M on a llama.cpp server started here; CPU inference is for "
            "development only, ORCH-1101)"
        )
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    state = ServerState(config=config, key_rings=rings)
    app = build_app(state)
    _settle_garbage_collector()
    grace_s = config.server.shutdown_grace_ms / 1000
    max_connections = fit_connection_cap(config.server.max_connections)
    server = _DrainingServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            # uvicorn's records go through the daemon's handler, in its format.
            log_config=None,
            log_level="warning",
            access_log=False,
            loop="asyncio",
            http=protocol_class(config.server, max_connections),
            ws="none",
            timeout_graceful_shutdown=int(grace_s) + 5,
        ),
        state.runtime,
    )
    server.run()
    return 0


def _settle_garbage_collector() -> None:
    """Keep collector pauses off the request path (measured in bench/RESULTS.md).

    The app's start-up objects (connexion's resolved specs, the generated models) are
    frozen, so no collection scans them again. Queued tasks are long-lived too, and a
    full collection scans all of them: with the default thresholds, a queue of 35k tasks
    put admission p99 at ~210 ms. The young generations keep their default sizes (cheap
    passes); the full pass waits for 10,000 middle passes instead of 10, so cyclic garbage
    that outlives the young generations is collected later, not never.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(700, 10, 10_000)


class _DrainingServer(uvicorn.Server):
    """uvicorn, but SIGTERM/SIGINT first drain every pool (graceful shutdown).

    uvicorn waits for open connections before it stops; an open stream lasts until its
    task ends. Draining cancels queued tasks at once and gives running ones
    `server.shutdown_grace_ms` before canceling them, so every stream ends with its
    terminal event and the daemon exits promptly.
    """

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self._runtime = runtime

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._runtime.request_shutdown()
        super().handle_exit(sig, frame)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `orchestratord` console script."""
    args = _parser().parse_args(argv)
    if args.version:
        from orchestratord_server.versions import build_versions

        print("\n".join(build_versions().lines()))
        return 0
    if args.check_config is not None:
        return _check_config(args.check_config)
    if args.command == "serve":
        return _serve(args)
    if client_cli.is_client_command(args):
        return client_cli.run(args)
    _parser().print_help()
    return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
