"""Replay one pact interaction against a live daemon and list every broken expectation.

The request is sent through the integration suite's checked :class:`Client`, so the
response is validated against the OpenAPI contracts by openapi-core before the pact's
own matchers run (status, headers, JSON body, text body, empty body). A stream is read to
its end with the integration suite's SSE reader: each frame is parsed and its data
validated against its event's schema, the whole transcript checked for the ORCH-2002
order, and the event sequence compared with the pact's steps.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

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


def replay(client: Client, interaction: dict[str, Any], bindings: dict[str, Any]) -> list[str]:
    """Send the interaction's request; every way the response breaks the pact."""
    request = substitute(interaction["request"], bindings)
    expected = substitute(interaction["response"], bindings)
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
