"""Tasks' typed events in OpenAI's wire format: whole answers and stream chunks.

One OpenAI request runs as one task per choice (`n`). `Choice` folds one task's events
into what its part of a whole answer needs: text, tool calls (their streamed parts joined
per call), log-probabilities, finish reason, token counts, the engine version as
`system_fingerprint`, or the failure. `Outcome` puts the choices together as the
non-streamed answer. `ChunkWriter` turns events into `data: <chunk>` frames as they
arrive, each tagged with its choice's index: a chunk per token, a last chunk per choice
with `finish_reason`, and once every choice has ended an optional usage chunk and
`data: [DONE]`. A task that fails or is canceled after the stream began ends the whole
stream with `data: {"error": ...}`. Chunks share a pre-encoded head, so a plain token costs
one small JSON string encoding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
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
    """The OpenAI `id`: a prefix and the OrchQueue task id (the first choice's)."""
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


def _usage(ends: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Token counts of a request: the prompt once, the completions of every choice."""
    prompt = int(ends[0].get("tokens_in") or 0) if ends else 0
    completion = sum(int(end["tokens_out"]) for end in ends)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_logprobs(entries: Sequence[Mapping[str, Any]], offset: int) -> dict[str, Any]:
    """Token log-probabilities in the completions shape; ``offset`` is the character
    offset of the first token in the choice's text."""
    tokens, offsets = [], []
    for entry in entries:
        tokens.append(entry["token"])
        offsets.append(offset)
        offset += len(entry["token"])
    return {
        "tokens": tokens,
        "token_logprobs": [entry["logprob"] for entry in entries],
        "top_logprobs": [
            {alt["token"]: alt["logprob"] for alt in entry.get("top_logprobs", ())}
            for entry in entries
        ],
        "text_offset": offsets,
    }


def join_tool_calls(parts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Whole tool calls from their streamed parts: per `index`, the first part's id and
    name, and the arguments pieces concatenated."""
    calls: dict[int, dict[str, Any]] = {}
    for part in parts:
        call = calls.setdefault(
            int(part["index"]),
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if part.get("id"):
            call["id"] = part["id"]
        function = part.get("function") or {}
        if function.get("name"):
            call["function"]["name"] = function["name"]
        call["function"]["arguments"] += function.get("arguments") or ""
    return [calls[index] for index in sorted(calls)]


def finish_reason(end: Mapping[str, Any], called_tools: bool) -> str:
    """OpenAI's finish reason: `tool_calls` for a reply that ended on its tool calls."""
    reason = str(end["finish_reason"])
    return "tool_calls" if called_tools and reason == "stop" else reason


@dataclass(slots=True)
class Choice:
    """One task's part of a whole answer, folded from its events."""

    parts: list[str] = field(default_factory=list)
    tool_parts: list[Mapping[str, Any]] = field(default_factory=list)
    logprobs: list[Mapping[str, Any]] | None = None
    fingerprint: str | None = None
    end: Mapping[str, Any] | None = None
    failure: Failure | None = None

    def add(self, events: Iterable[TaskEvent]) -> None:
        for event in events:
            data = event.data
            if event.name == "token":
                self.parts.append(data["t"])
                self.tool_parts.extend(data.get("tool_calls", ()))
                if "logprobs" in data:
                    self.logprobs = [*(self.logprobs or ()), *data["logprobs"]]
            elif event.name == "started":
                self.fingerprint = data.get("engine_version")
            elif event.name == "end" and data.get("finish_reason") != "canceled":
                self.end = data
            elif event.name in ("end", "error"):
                self.failure = failure_of(event)

    def body(self, kind: Kind, index: int) -> dict[str, Any]:
        """The choice object of a whole answer."""
        assert self.end is not None, "only a finished choice has a body"
        text = "".join(self.parts)
        calls = join_tool_calls(self.tool_parts)
        choice: dict[str, Any] = {"index": index}
        logprobs: dict[str, Any] | None = None
        if kind == "chat":
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text if text or not calls else None,
                "refusal": None,
            }
            if calls:
                message["tool_calls"] = calls
            choice["message"] = message
            if self.logprobs is not None:
                logprobs = {"content": self.logprobs}
        else:
            choice["text"] = text
            if self.logprobs is not None:
                logprobs = completion_logprobs(self.logprobs, 0)
        choice |= {"logprobs": logprobs, "finish_reason": finish_reason(self.end, bool(calls))}
        return choice


class Outcome:
    """Everything a non-streamed answer needs: one `Choice` per task of the request."""

    def __init__(self, choices: int = 1) -> None:
        self.choices = [Choice() for _ in range(choices)]

    def add(self, events: Iterable[TaskEvent], index: int = 0) -> None:
        self.choices[index].add(events)

    def response(self, kind: Kind, task_id: str, created: int, model: str) -> Response:
        """The 200 answer, or the first failure in OpenAI's shape."""
        for choice in self.choices:
            if choice.end is None:
                assert choice.failure is not None, "a finished task ends with `end` or `error`"
                return choice.failure.response()
        ends = [choice.end for choice in self.choices if choice.end is not None]
        body = {
            "id": response_id(kind, task_id),
            "object": _OBJECTS[kind],
            "created": created,
            "model": model,
            "system_fingerprint": self.choices[0].fingerprint,
            "choices": [choice.body(kind, i) for i, choice in enumerate(self.choices)],
            "usage": _usage(ends),
        }
        return Response(_json(body), media_type=JSON)


class ChunkWriter:
    """The `data:` frames of one streamed answer, event batch by event batch."""

    def __init__(
        self,
        kind: Kind,
        task_id: str,
        created: int,
        model: str,
        *,
        include_usage: bool,
        choices: int = 1,
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
        self._open = set(range(choices))
        self._ends: list[Mapping[str, Any]] = []
        self._called: set[int] = set()
        self._offsets = [0] * choices
        self.closed = False

    def _make_head(self, fingerprint: str | None) -> str:
        fields = _json({**self._fields, "system_fingerprint": fingerprint})
        return "data: " + fields[:-1] + ',"choices":['

    def _choice(
        self, index: int, body: str, finish_reason: str | None, logprobs: str = "null"
    ) -> str:
        reason = "null" if finish_reason is None else _json(finish_reason)
        return (
            f'{self._head}{{"index":{index},{body},"logprobs":{logprobs},'
            f'"finish_reason":{reason}}}]}}\n\n'
        )

    def _token(self, index: int, data: Mapping[str, Any]) -> str:
        text: str = data["t"]
        calls = data.get("tool_calls")
        entries = data.get("logprobs")
        logprobs = "null"
        if self._kind == "chat":
            delta = {"content": text} if text or not calls else {}
            if calls:
                delta["tool_calls"] = calls
                self._called.add(index)
            body = f'"delta":{_json(delta)}'
            if entries is not None:
                logprobs = _json({"content": entries})
        else:
            body = f'"text":{_json(text)}'
            if entries is not None:
                logprobs = _json(completion_logprobs(entries, self._offsets[index]))
            self._offsets[index] += len(text)
        return self._choice(index, body, None, logprobs)

    def render(self, events: Iterable[TaskEvent], index: int = 0) -> bytes:
        """The frames for the events of choice ``index``; a failure closes the stream,
        and the last choice to end closes it with usage and `[DONE]`."""
        out: list[str] = []
        for event in events:
            if self.closed:
                break
            name = event.name
            if name == "token":
                out.append(self._token(index, event.data))
            elif name == "started":
                self._head = self._make_head(event.data.get("engine_version"))
                if self._kind == "chat":
                    out.append(
                        self._choice(index, '"delta":{"role":"assistant","content":""}', None)
                    )
            elif name == "end" and event.data.get("finish_reason") != "canceled":
                out.append(self._last(index, event.data))
            elif name in ("end", "error"):
                out.append(failure_of(event).frame().decode())
                self.closed = True
        return "".join(out).encode()

    def _last(self, index: int, end: Mapping[str, Any]) -> str:
        empty = '"delta":{}' if self._kind == "chat" else '"text":""'
        frames = [self._choice(index, empty, finish_reason(end, index in self._called))]
        self._ends.append(end)
        self._open.discard(index)
        if not self._open:
            if self._include_usage:
                frames.append(f'{self._head}],"usage":{_json(_usage(self._ends))}}}\n\n')
            frames.append(DONE.decode())
            self.closed = True
        return "".join(frames)
