"""A task's typed events in OpenAI's wire format: whole answers and stream chunks.

`Outcome` folds the events of a finished task into what a non-streamed answer needs (text,
finish reason, token counts, the engine version as `system_fingerprint`, or the failure).
`ChunkWriter` turns events into `data: <chunk>` frames as they arrive: a chunk per token,
a last chunk with `finish_reason`, an optional usage chunk, then `data: [DONE]`; a task
that fails or is canceled after the stream began ends with `data: {"error": ...}`.
Chunks share a pre-encoded head, so a token costs one small JSON string encoding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.responses import Response

from orchestrator_core import HTTP_STATUS, RETRIABLE, ErrorKind
from orchestratord_server.openai_compat.errors import error_body, error_response, retry_headers
from orchestratord_server.transcripts import TaskEvent

Kind = Literal["completion", "chat"]
JSON = "application/json"
DONE = b"data: [DONE]\n\n"
#: Back-off suggested when a task fails after admission with a retriable error.
FAILURE_BACKOFF_MS = 1000
CANCELED_MESSAGE = "the task was canceled before it finished (a cancel request or a drain)"
_OBJECTS = {"completion": "text_completion", "chat": "chat.completion"}
_CHUNK_OBJECTS = {"completion": "text_completion", "chat": "chat.completion.chunk"}
_PREFIXES = {"completion": "cmpl-", "chat": "chatcmpl-"}


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def response_id(kind: Kind, task_id: str) -> str:
    """The OpenAI `id`: a prefix and the OrchQueue task id."""
    return _PREFIXES[kind] + task_id


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a task produced no answer: status, message, code, retry hints."""

    status: int
    message: str
    code: str | None
    retriable: bool

    def response(self) -> Response:
        headers = retry_headers(FAILURE_BACKOFF_MS) if self.retriable else None
        return error_response(self.status, self.message, code=self.code, headers=headers)

    def frame(self) -> bytes:
        return b"data: " + error_body(self.status, self.message, code=self.code) + b"\n\n"


def failure_of(event: TaskEvent) -> Failure:
    """The failure a terminal `error` event, or an `end` by cancel, stands for."""
    if event.name == "end":
        return Failure(503, CANCELED_MESSAGE, None, True)
    kind = ErrorKind(event.data["code"])
    return Failure(HTTP_STATUS[kind], str(event.data["message"]), kind.value, kind in RETRIABLE)


def _usage(end: Mapping[str, Any]) -> dict[str, int]:
    prompt = int(end.get("tokens_in") or 0)
    completion = int(end["tokens_out"])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@dataclass(slots=True)
class Outcome:
    """Everything a non-streamed answer needs, folded from the task's events."""

    parts: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    end: Mapping[str, Any] | None = None
    failure: Failure | None = None

    def add(self, events: Iterable[TaskEvent]) -> None:
        for event in events:
            if event.name == "token":
                self.parts.append(event.data["t"])
            elif event.name == "started":
                self.fingerprint = event.data.get("engine_version")
            elif event.name == "end" and event.data.get("finish_reason") != "canceled":
                self.end = event.data
            elif event.name in ("end", "error"):
                self.failure = failure_of(event)

    def response(self, kind: Kind, task_id: str, created: int, model: str) -> Response:
        """The 200 answer, or the failure in OpenAI's shape."""
        if self.end is None:
            assert self.failure is not None, "a finished task ends with `end` or `error`"
            return self.failure.response()
        text = "".join(self.parts)
        reason = self.end["finish_reason"]
        choice: dict[str, Any] = {"index": 0}
        if kind == "chat":
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
        else:
            choice["text"] = text
        choice |= {"logprobs": None, "finish_reason": reason}
        body = {
            "id": response_id(kind, task_id),
            "object": _OBJECTS[kind],
            "created": created,
            "model": model,
            "system_fingerprint": self.fingerprint,
            "choices": [choice],
            "usage": _usage(self.end),
        }
        return Response(_json(body), media_type=JSON)


class ChunkWriter:
    """The `data:` frames of one streamed answer, event batch by event batch."""

    def __init__(
        self, kind: Kind, task_id: str, created: int, model: str, *, include_usage: bool
    ) -> None:
        self._kind = kind
        self._include_usage = include_usage
        self._fields = {
            "id": response_id(kind, task_id),
            "object": _CHUNK_OBJECTS[kind],
            "created": created,
            "model": model,
        }
        self._head = self._make_head(None)

    def _make_head(self, fingerprint: str | None) -> str:
        fields = _json({**self._fields, "system_fingerprint": fingerprint})
        return "data: " + fields[:-1] + ',"choices":['

    def _choice(self, body: str, finish_reason: str | None) -> str:
        reason = "null" if finish_reason is None else _json(finish_reason)
        return f'{self._head}{{"index":0,{body},"logprobs":null,"finish_reason":{reason}}}]}}\n\n'

    def _text(self, text: str) -> str:
        key = '"delta":{"content":' if self._kind == "chat" else '"text":'
        close = "}" if self._kind == "chat" else ""
        return self._choice(f"{key}{_json(text)}{close}", None)

    def render(self, events: Iterable[TaskEvent]) -> bytes:
        """The frames for ``events``; the terminal event closes the stream."""
        out: list[str] = []
        for event in events:
            name = event.name
            if name == "token":
                out.append(self._text(event.data["t"]))
            elif name == "started":
                self._head = self._make_head(event.data.get("engine_version"))
                if self._kind == "chat":
                    out.append(self._choice('"delta":{"role":"assistant","content":""}', None))
            elif name == "end" and event.data.get("finish_reason") != "canceled":
                out.append(self._last(event.data))
            elif name in ("end", "error"):
                out.append(failure_of(event).frame().decode())
        return "".join(out).encode()

    def _last(self, end: Mapping[str, Any]) -> str:
        empty = '"delta":{}' if self._kind == "chat" else '"text":""'
        frames = [self._choice(empty, end["finish_reason"])]
        if self._include_usage:
            frames.append(f'{self._head}],"usage":{_json(_usage(end))}}}\n\n')
        frames.append(DONE.decode())
        return "".join(frames)
