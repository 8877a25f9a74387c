"""Structured logs: one JSON object per line, carrying the ORCH-3027 fields.

Every record has `ts`, `level`, `logger`, `event` (a stable dotted name such as
`task.admitted` or `pool.ready`) and `message` (for people), then its fields. Task events
are logged with `task_event(event, message, fields)`; they always carry every ORCH-3027
key (job_id, session_id, client_id, engine, pool_id, replica_id, model_id, quant, ctx,
tensor_split, engine_version, sampler_profile_version, kv_warmth, queue_time_ms,
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
from collections.abc import Callable, Mapping
from typing import Any

from orchestratord_server.config import LogFormat

TASK_LOGGER = "orchestratord.task"

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


class JsonLineFormatter(logging.Formatter):
    """Format a record as one JSON object: ts, level, logger, event, then its fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
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
        return json.dumps(line, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal: the event, then key=value fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        tail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        event = getattr(record, "event", record.name)
        text = f"{record.levelname.lower():7} {event}: {record.getMessage()}"
        text = f"{text} {tail}" if tail else text
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(log_format: LogFormat, level: str) -> None:
    """Send the daemon's logs to stderr in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter() if log_format is LogFormat.json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("connexion", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
