"""Raw HTTP next to the SDK: OpenAI stream frames, checked against the contract.

The SDK shows what an OpenAI client sees; these helpers read the same answers as bytes so
every status, header and body can be checked against data.yaml, and every stream chunk
against its generated model.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import BaseModel

from tests.integration.support import Client
from tests.support.contract import assert_conforms

DONE = "[DONE]"


def data_frames(body: bytes) -> list[str]:
    """The `data:` payloads of an OpenAI stream, in order; every frame is one data line."""
    frames = body.decode("utf-8").split("\n\n")
    assert frames[-1] == "", f"the stream must end with a complete frame: {frames[-1]!r}"
    payloads = []
    for frame in frames[:-1]:
        assert frame.startswith("data: ") and "\n" not in frame, frame
        payloads.append(frame.removeprefix("data: "))
    return payloads


def chunks(body: bytes, model: type[BaseModel]) -> list[dict[str, Any]]:
    """The chunks of a completed stream, each valid against ``model``; `[DONE]` is last."""
    payloads = data_frames(body)
    assert payloads and payloads[-1] == DONE, payloads[-3:]
    for payload in payloads[:-1]:
        model.model_validate_json(payload)
    return [json.loads(p) for p in payloads[:-1]]


def stream_raw(client: Client, path: str, body: dict[str, Any]) -> tuple[httpx.Response, bytes]:
    """POST a streaming request; the whole answer, checked against the contract."""
    headers = {"Authorization": f"Bearer {client.key}"}
    with client.http.stream("POST", path, json=body, headers=headers) as response:
        data = response.read()
    assert_conforms(response, data)
    return response, data


def task_id_of(openai_id: str) -> str:
    """The OrchQueue task id inside an OpenAI `id` (`cmpl-<id>`, `chatcmpl-<id>`)."""
    return openai_id.split("-", 1)[1]
