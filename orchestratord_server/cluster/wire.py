"""Log records: one entry (`runtime.entries`) with its origin and term, as JSON bytes.

A record is `{"o": origin, "t": term, "e": entry}`. `origin` names the instance that wrote
it (an admission is counted by the instance that answered it); `term` is the scheduler
lease a leader entry was written under (0 for entries any instance may write), which is
how appliers fence a scheduler that lost its lease. Entries are written with the core's
plain-data codec (`orchestrator_core.codec`); an admission also carries the request as
the contract's JSON, read back through the generated model. A `Term` record opens a
scheduler's term: from it on, leader entries of older terms are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, get_args

from orchestrator_core import TaskSpec, codec
from orchestrator_core import inputs as core_inputs
from orchestratord_server.generated.models import TaskRequest
from orchestratord_server.runtime.entries import Admission, Embedded, Entry, PlainInput, TokenOut
from orchestratord_server.runtime.tasks import EngineOptions

_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Term:
    """`leader` holds the scheduler lease from here on, under lease revision `term`."""

    term: int
    leader: str


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded log record."""

    origin: str
    term: int
    entry: Entry | Term


#: Entries only the scheduler writes; appliers drop them when written under an old term.
LEADER_ENTRIES = (
    TokenOut,
    Embedded,
    core_inputs.Finish,
    core_inputs.Fail,
    core_inputs.Poll,
    core_inputs.Reap,
    core_inputs.Preloaded,
    core_inputs.PreloadFailed,
    core_inputs.Probed,
    core_inputs.ShutDown,
)

#: Every other entry kind, by the class name its records carry.
_PLAIN: dict[str, type] = {
    kind.__name__: kind for kind in (TokenOut, Embedded, Term, *get_args(PlainInput))
}


class BadRecord(ValueError):
    """Bytes that are not a record this version can read."""


def encode(entry: Entry | Term, origin: str, term: int) -> bytes:
    """The record of ``entry`` as bytes."""
    if isinstance(entry, TokenOut):  # the hot path: no generic walk
        body: Any = {"@": "TokenOut", "task_id": entry.task_id, "text": entry.text}
        body["now_ms"] = entry.now_ms
        if entry.extra is not None:
            body["extra"] = entry.extra
    elif isinstance(entry, Admission):
        body = {
            "@": "Admission",
            "spec": codec.to_plain(entry.spec),
            "request": entry.request.model_dump(mode="json", exclude_none=True),
            "options": codec.to_plain(entry.options),
            "keep_events": entry.keep_events,
            "now_ms": entry.now_ms,
        }
    else:
        body = codec.to_plain(entry)
    return _ENCODE({"o": origin, "t": term, "e": body}).encode()


def decode(data: bytes) -> Record:
    """Read a record back; BadRecord when it is not one."""
    try:
        raw = json.loads(data)
        body = raw["e"]
        tag = body["@"]
        entry: Entry | Term
        if tag == "TokenOut":
            entry = TokenOut(body["task_id"], body["text"], body["now_ms"], body.get("extra"))
        elif tag == "Admission":
            entry = Admission(
                codec.decode(TaskSpec, body["spec"]),
                TaskRequest.model_validate(body["request"]),
                codec.decode(EngineOptions, body["options"]),
                bool(body["keep_events"]),
                int(body["now_ms"]),
            )
        else:
            entry = codec.decode(_PLAIN[tag], body)
        return Record(str(raw["o"]), int(raw["t"]), entry)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRecord(f"unreadable log record: {exc}") from exc


def task_of(entry: Entry | Term) -> str | None:
    """The task an entry is about, if any (its log subject names it)."""
    if isinstance(entry, Admission):
        return entry.spec.task_id
    task_id = getattr(entry, "task_id", None)
    return task_id if isinstance(task_id, str) else None
