"""What the OpenAI routes accept beyond what they honour, how they name models, and how
their errors read (issue 16). Unit level: the daemon-level checks are in
test_agent_features.py."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator_core import Engine, Route, Workload
from orchestratord_server.body_validation import field_errors
from orchestratord_server.config import PoolConfig
from orchestratord_server.generated.models import (
    FieldError,
    OpenAIChatCompletionRequest,
    OpenAICompletionRequest,
)
from orchestratord_server.openai_compat.errors import is_openai_path, readable
from orchestratord_server.openai_compat.leniency import BadRequest, UnknownFields, normalized
from orchestratord_server.openai_compat.names import ModelNames

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TOOL = {"type": "function", "function": {"name": "f"}}


def _chat(**fields: Any) -> OpenAIChatCompletionRequest:
    return OpenAIChatCompletionRequest.model_validate({**CHAT, **fields})


def test_the_no_op_values_clients_send_by_default_are_accepted_and_dropped() -> None:
    request = normalized(
        _chat(
            logprobs=False,
            top_logprobs=0,
            response_format={"type": "text"},
            tool_choice="none",
            tools=[TOOL],
            logit_bias={},
            parallel_tool_calls=True,
            n=1,
        )
    )
    assert (request.tools, request.tool_choice, request.response_format) == (None, None, None)
    assert (request.logprobs, request.top_logprobs, request.logit_bias) == (None, None, None)
    assert normalized(_chat(tools=[], tool_choice="auto")).tools is None
    completion = OpenAICompletionRequest.model_validate(
        {"model": "m", "prompt": "x", "echo": False, "suffix": "", "best_of": 1, "n": 1}
    )
    assert normalized(completion).prompt == "x"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"logit_bias": {"42": -100}}, "logit_bias"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
            "tool_choice",
        ),
    ],
)
def test_values_that_ask_for_what_is_not_served_are_refused_naming_them(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        normalized(_chat(**fields))
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"echo": True}, "echo"), ({"suffix": "end"}, "suffix"), ({"best_of": 3}, "best_of")],
)
def test_completion_features_no_engine_serves_are_refused(
    fields: dict[str, Any], param: str
) -> None:
    request = OpenAICompletionRequest.model_validate({"model": "m", "prompt": "x", **fields})
    with pytest.raises(BadRequest) as caught:
        normalized(request)
    assert caught.value.param == param


def test_unknown_fields_are_warned_about_once_per_name_or_refused_when_strict(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lenient = UnknownFields(strict=False)
    with caplog.at_level(logging.WARNING, logger="orchestratord.openai"):
        for _ in range(3):
            lenient.check("/v1/chat/completions", ["store", "service_tier"])
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and any("'store'" in m for m in warned)
    with pytest.raises(BadRequest) as caught:
        UnknownFields(strict=True).check("/v1/chat/completions", ["store"])
    assert caught.value.param == "store"


def test_validation_errors_read_without_type_names() -> None:
    param, message = readable(
        FieldError(
            loc="body.tool_choice",
            msg="Input should be a valid dictionary or instance of ChatNamedToolChoice",
            type="model_type",
        )
    )
    assert (param, message) == ("tool_choice", "Input should be a JSON object")
    try:
        OpenAIChatCompletionRequest.model_validate(
            {**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}
        )
    except ValidationError as exc:
        locations = {error.loc for error in field_errors(exc)}
    assert "body.messages[0].content[0].type" in locations
    assert all("ChatContentPart" not in loc and ".str" not in loc for loc in locations)


def test_every_v1_path_but_orchqueues_answers_in_openais_shape() -> None:
    assert is_openai_path("/v1/embeddings") and is_openai_path("/v1/audio/speech")
    assert not is_openai_path("/v1/tasks/x/stream") and not is_openai_path("/metrics")


def _pool(pool_id: str, **fields: Any) -> PoolConfig:
    return PoolConfig.model_validate(
        {
            "id": pool_id,
            "engine": "llamacpp",
            "model": "sha256:" + "ab" * 32,
            "ctx": 2048,
            "device_kind": "cpu",
            "devices": [0],
            "replicas": [{"id": "r0", "url": "http://127.0.0.1:9"}],
            **fields,
        }
    )


def _route(pool_id: str, model: str = "sha256:" + "ab" * 32) -> Route:
    return Route(pool_id, Engine.LLAMACPP, model, 2048, True, True, Workload.COMPLETION)


def test_a_pool_is_listed_by_its_served_name_and_reached_by_its_aliases() -> None:
    names = ModelNames([_pool("a", served_name="smollm2", aliases=["gpt-4o-mini"]), _pool("b")])
    routes = [_route("a"), _route("b", "other")]
    assert names.listing(routes) == ["smollm2", "other"]
    for name in ("smollm2", "gpt-4o-mini", "sha256:" + "ab" * 32):
        assert [r.pool_id for r in names.routes(name, routes)] == ["a"]
    assert names.routes("nothing", routes) == ()
