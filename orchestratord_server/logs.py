"""Structured logs: one JSON object per line, carrying the ORCH-3027 fields.

Every record has `ts` (RFC 3339 in UTC, milliseconds), `level`, `logger`, `event` (a
stable dotted name such as `task.admitted` or `pool.ready`) and `message` (for people),
then its fields. The `text` format writes the same record on one line for a terminal:
the UTC timestamp, level, event and message, then key=value fields. `auto` picks text
when standard error is a terminal and JSON lines otherwise; `log_settings` applies the
precedence flag > environment (`ORCHD_LOG_FORMAT`, `ORCHD_LOG_LEVEL`) > config file.

Task events are logged with `task_event(event, message, fields)`; they always carry every
ORCH-3027 key (job_id, session_id, client_id, engine, pool_id, replica_id, model_id, quant,
ctx, tensor_split, engine_version, sampler_profile_version, kv_warmth, queue_time_ms,
decode_time_ms, tokens_in, tokens_out, eviction_events, oom_events, driver_reset_events),
null where not known yet, plus admission's queue_position and predicted_start_ms
(ORCH-3029). Other events use `log_event`. Prompts, token text and API keys are never
logged.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO, TypeVar, get_args

from orchestratord_server.config import LogFormat, LogLevel, ServerConfig

TASK_LOGGER = "orchestratord.task"
#: The logger of what the engines the daemon starts write (orchestratord_server.engines.output).
ENGINE_LOGGER = "engine"
FORMAT_ENV = "ORCHD_LOG_FORMAT"
LEVEL_ENV = "ORCHD_LOG_LEVEL"
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)

_Choice = TypeVar("_Choice", bound=str)

#: Every field ORCH-3027 requires of a task log record, in a stable order.
TASK_FIELDS: tuple[str, ...] = (
    "job_id",
    "session_id",
    "client_id",
    "engine",
    "pool_id",
    "replica_id",
    "model_id",
    "quant",
    "ctx",
    "tensor_split",
    "engine_version",
    "sampler_profile_version",
    "kv_warmth",
    "queue_time_ms",
    "decode_time_ms",
    "tokens_in",
    "tokens_out",
    "eviction_events",
    "oom_events",
    "driver_reset_events",
)

_task_log = logging.getLogger(TASK_LOGGER)
#: A level above every real one: a logger set to it writes nothing.
_SILENT = logging.CRITICAL + 1


#: One encoder for every line: `json.dumps` with options builds a new one per call.
_ENCODE_LINE = json.JSONEncoder(separators=(",", ":"), default=str).encode


class LogSettingError(ValueError):
    """An environment variable names a log format or level that does not exist."""


class _UtcFormatter(logging.Formatter):
    """`formatTime` as RFC 3339 in UTC with milliseconds: 2025-01-31T09:15:02.048Z."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


class JsonLineFormatter(_UtcFormatter):
    """Format a record as one JSON object: ts, level, logger, event, then its fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", record.name),
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return _ENCODE_LINE(line)


class TextFormatter(_UtcFormatter):
    """Human-readable lines for a terminal: UTC time, level, event, then key=value fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        tail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        event = getattr(record, "event", record.name)
        text = (
            f"{self.formatTime(record)} {record.levelname.lower():7} {event}: {record.getMessage()}"
        )
        text = f"{text} {tail}" if tail else text
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _from_env(environ: Mapping[str, str], name: str, choices: Sequence[_Choice]) -> _Choice | None:
    """The choice `environ[name]` names (any case), None when unset or empty."""
    value = environ.get(name, "").strip().lower()
    if not value:
        return None
    for choice in choices:
        if choice == value:
            return choice
    raise LogSettingError(f"{name}={environ[name]!r} is not one of {', '.join(map(str, choices))}")


def log_settings(
    server: ServerConfig,
    environ: Mapping[str, str],
    log_format: LogFormat | None = None,
    log_level: LogLevel | None = None,
) -> tuple[LogFormat, LogLevel]:
    """The log format and level to run with: the flag's value, else the environment's,
    else the config file's. Raises LogSettingError for an unknown value in the
    environment, even when a flag overrides it."""
    env_format = _from_env(environ, FORMAT_ENV, tuple(LogFormat))
    env_level = _from_env(environ, LEVEL_ENV, LOG_LEVELS)
    return (
        log_format or env_format or server.log_format,
        log_level or env_level or server.log_level,
    )


def resolve_format(log_format: LogFormat, stream: TextIO) -> LogFormat:
    """`json` or `text` for `stream`: `auto` is text on a terminal, JSON lines otherwise."""
    if log_format is not LogFormat.auto:
        return log_format
    return LogFormat.text if stream.isatty() else LogFormat.json


def configure_logging(log_format: LogFormat, level: str, engine_output: bool = True) -> None:
    """Send the daemon's logs to stderr in the given format (`auto` decided here); without
    `engine_output`, the `engine` logger writes nothing."""
    handler = logging.StreamHandler(sys.stderr)
    chosen = resolve_format(log_format, sys.stderr)
    handler.setFormatter(JsonLineFormatter() if chosen is LogFormat.json else TextFormatter())
    # No formatter here writes where a record was logged from, its thread or process;
    # logging's documented switches spare collecting them for every record (a frame walk
    # and three lookups, ~15 % of an admission's cost at the default level).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("connexion", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger(ENGINE_LOGGER).setLevel(logging.NOTSET if engine_output else _SILENT)


def log_event(logger: logging.Logger, level: int, event: str, message: str, **fields: Any) -> None:
    """Log `message` as the named `event` with `fields`."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"event": event, "fields": fields})


def task_event(
    event: str,
    message: str,
    fields: Callable[[], Mapping[str, Any]],
    level: int = logging.INFO,
) -> None:
    """Log a task event with every ORCH-3027 field (absent ones as null).

    `fields` is called only when the record will be written, so a level that drops task
    events costs the hot path nothing.
    """
    if not _task_log.isEnabledFor(level):
        return
    given = fields()
    record = {name: given.get(name) for name in TASK_FIELDS}
    record.update({k: v for k, v in given.items() if k not in record})
    _task_log.log(level, message, extra={"event": event, "fields": record})
