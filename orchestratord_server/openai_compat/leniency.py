"""What the OpenAI-compatible routes accept beyond the fields they honour.

OpenAI clients send fields by default whose value asks for nothing (`logprobs: false`,
`tools: []`, `response_format: {"type": "text"}`, `logit_bias: {}`, `n: 1`, ...), and
fields of newer API versions or other vendors. Like vLLM and llama.cpp, these routes are
lenient by default:

- a field the contract does not list is ignored, with one warning log line per field name
  for the life of the process; `openai.strict: true` refuses it instead (400 naming it);
- a listed field with its no-op value is accepted and dropped (`normalized`);
- a listed field whose value asks for what no engine here does (a non-empty `logit_bias`,
  `echo`, a `suffix`, server-side `best_of`) is refused with 400 naming the field, in
  either mode, because ignoring it would silently answer a different question;
- `tool_choice` is checked against `tools`: `none` drops the tools, `required` or a named
  function without tools (or naming none of them) is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from orchestratord_server.generated.models import (
    ChatNamedToolChoice,
    OpenAIChatCompletionRequest,
    OpenAICompletionRequest,
)
from orchestratord_server.logs import log_event

log = logging.getLogger("orchestratord.openai")

OpenAIRequest = OpenAICompletionRequest | OpenAIChatCompletionRequest


class BadRequest(Exception):
    """A request the schema allows but this surface cannot serve; `param` is at fault."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UnknownFields:
    """The unknown-field rule: refuse (strict) or ignore with one warning per name."""

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self._warned: set[str] = set()

    def check(self, route: str, names: Iterable[str]) -> None:
        """Raise BadRequest for the first unknown field when strict; else warn once per
        field name."""
        for name in sorted(names):
            if self.strict:
                raise BadRequest(
                    f"unknown field {name!r}: this server does not support it "
                    "(openai.strict is set)",
                    name,
                )
            if name not in self._warned:
                self._warned.add(name)
                log_event(
                    log,
                    logging.WARNING,
                    "openai.field_ignored",
                    f"{route}: ignoring unknown request field {name!r} (logged once per field)",
                    field=name,
                    route=route,
                )


def _refuse_unless(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise BadRequest(message, param)


def normalized(request: OpenAIRequest) -> OpenAIRequest:
    """The request with its no-op values dropped; BadRequest for a value that asks for
    what this surface cannot do."""
    _refuse_unless(
        not request.logit_bias,
        "logit_bias is not supported: no engine here applies token biases the same way",
        "logit_bias",
    )
    update: dict[str, object] = {"logit_bias": None}
    if isinstance(request, OpenAICompletionRequest):
        _refuse_unless(not request.echo, "echo is not supported", "echo")
        _refuse_unless(not request.suffix, "suffix (insertion) is not supported", "suffix")
        n = request.n or 1
        _refuse_unless(
            request.best_of in (None, 1, n),
            "best_of larger than n is not supported (server-side best-of)",
            "best_of",
        )
    else:
        update |= _tool_fields(request)
        if not request.logprobs:
            update |= {"logprobs": None, "top_logprobs": None}
    if request.response_format is not None and request.response_format.type == "text":
        update["response_format"] = None
    return request.model_copy(update=update)


def _tool_fields(request: OpenAIChatCompletionRequest) -> dict[str, object]:
    """`tools` and `tool_choice` after the no-op rules (see the module's docstring)."""
    tools = request.tools or None
    choice = request.tool_choice.root if request.tool_choice is not None else None
    if choice == "none":
        return {"tools": None, "tool_choice": None, "parallel_tool_calls": None}
    if tools is None:
        _refuse_unless(
            choice in (None, "auto"),
            "tool_choice asks for a tool call but the request gives no tools",
            "tool_choice",
        )
        return {"tools": None, "tool_choice": None, "parallel_tool_calls": None}
    if isinstance(choice, ChatNamedToolChoice):
        names = {tool.function.name for tool in tools}
        _refuse_unless(
            choice.function.name in names,
            f"tool_choice names function {choice.function.name!r}, which is not in tools",
            "tool_choice",
        )
    return {"tools": tools}
