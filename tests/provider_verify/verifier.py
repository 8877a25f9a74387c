"""Replay one pact interaction against a live daemon and list every broken expectation.

The request is sent through the integration suite's checked :class:`Client`, so the
response is validated against the OpenAPI contracts by openapi-core before the pact's
own matchers run (status, headers, JSON body, text body, empty body). A stream is read to
its end with the integration suite's SSE reader: each frame is parsed and its data
validated against its event's schema, the whole transcript checked for the ORCH-2002
order, and the event sequence compared with the pact's steps. A stream that does not end
by itself (`follow`, the control-plane event stream) is read one event per step, then
closed.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from orchestratord_client.sse import SseDecoder
from orchestratord_server.generated.operations import OPERATIONS
from tests.integration.support import Client, Stream
from tests.provider_verify.pacts import (
    event_mismatches,
    header_mismatches,
    mismatches,
    substitute,
)


def _body_mismatches(response: httpx.Response, expected: dict[str, Any]) -> list[str]:
    if "empty" in expected:
        return [] if response.content == b"" else [f"body: expected none, got {response.text!r}"]
    if "text" in expected:
        return mismatches(response.text, expected["text"], "text")
    try:
        body = response.json()
    except json.JSONDecodeError:
        return [f"body: expected JSON, got {response.text[:200]!r}"]
    return mismatches(body, expected["body"], "body")


def _stream_events(client: Client, request: dict[str, Any], task_id: str) -> list[str] | Stream:
    """Open the stream; its transcript read and checked, or the problems of a refusal."""
    headers = request.get("headers", {})
    with client.http.stream(request["method"], request["path"], headers=headers) as response:
        if response.status_code != 200:
            response.read()
            return [f"status: expected a 200 stream, got {response.status_code}: {response.text}"]
        stream = Stream(response, task_id)
        stream.read_all()
        return stream


def _followed_events(
    client: Client, request: dict[str, Any], operation: str, expected: dict[str, Any]
) -> tuple[list[str], list[tuple[str, Any]]]:
    """Open a stream that does not end by itself and read one event per step (after the
    ignored ones), each frame's data validated against its event's schema; the header
    problems and the events read."""
    steps = expected["stream"]["events"]
    assert all(step.get("repeat", "1") == "1" for step in steps), "a followed step repeats once"
    ignored = set(expected["stream"].get("ignore", ()))
    models = OPERATIONS[operation].sse_events
    headers = request.get("headers", {})
    events: list[tuple[str, Any]] = []
    with client.http.stream(request["method"], request["path"], headers=headers) as response:
        if response.status_code != 200:
            response.read()
            return [f"status: expected a 200 stream, got {response.status_code}"], []
        problems = header_mismatches(response.headers, expected.get("headers", {}))
        decoder = SseDecoder()
        for line in response.iter_lines():
            raw = decoder.feed(line)
            if raw is None:
                continue
            models[raw.event].model_validate_json(raw.data)
            if raw.event not in ignored:
                events.append((raw.event, json.loads(raw.data)))
            if len(events) == len(steps):
                break
    return problems, events


def replay(client: Client, interaction: dict[str, Any], bindings: dict[str, Any]) -> list[str]:
    """Send the interaction's request; every way the response breaks the pact."""
    request = substitute(interaction["request"], bindings)
    expected = substitute(interaction["response"], bindings)
    if expected.get("stream", {}).get("follow"):
        problems, events = _followed_events(client, request, interaction["operation"], expected)
        return problems + event_mismatches(events, expected["stream"])
    if "stream" in expected:
        outcome = _stream_events(client, request, bindings["task_id"])
        if isinstance(outcome, list):
            return outcome
        problems = header_mismatches(outcome.response.headers, expected.get("headers", {}))
        events = [(frame.event, frame.data) for frame in outcome.frames]
        return problems + event_mismatches(events, expected["stream"])
    kwargs: dict[str, Any] = {"headers": request.get("headers", {})}
    if "body" in request:
        kwargs["json"] = request["body"]
    response = client.request(request["method"], request["path"], key=None, **kwargs)
    problems = []
    if response.status_code != expected["status"]:
        problems.append(f"status: expected {expected['status']}, got {response.status_code}")
    problems += header_mismatches(response.headers, expected.get("headers", {}))
    return problems + _body_mismatches(response, expected)
