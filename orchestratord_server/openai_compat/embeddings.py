"""An embedding task's events as OpenAI's embeddings answer.

The task's `embedding` events carry one vector per input, in input order; its `end`
carries the inputs' token count. Vectors go out as JSON numbers, or with
`encoding_format: base64` as base64 of little-endian float32 bytes (what the `openai` SDK
asks for by default and decodes itself). `dimensions` is honoured only as a no-op: a
value other than the vectors' own length is refused, since no engine here shortens them.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.responses import Response

from orchestratord_server.generated.models import ErrorKind
from orchestratord_server.openai_compat.errors import JSON, error_response
from orchestratord_server.openai_compat.render import Choice
from orchestratord_server.transcripts import TaskEvent


def encode(vector: Sequence[float], encoding_format: str | None) -> list[float] | str:
    """A vector as JSON numbers, or as base64 of little-endian float32."""
    if encoding_format != "base64":
        return list(vector)
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def response(
    events: Iterable[TaskEvent], model: str, encoding_format: str | None, dimensions: int | None
) -> Response:
    """The 200 answer of a finished embedding task, or its failure in OpenAI's shape."""
    events = list(events)
    outcome = Choice()
    outcome.add(events)
    if outcome.end is None:
        assert outcome.failure is not None, "a finished task ends with `end` or `error`"
        return outcome.failure.response()
    vectors = [event.data["embedding"] for event in events if event.name == "embedding"]
    size = len(vectors[0]) if vectors else 0
    if dimensions is not None and dimensions != size:
        return error_response(
            400,
            f"dimensions {dimensions} is not supported: this model's embeddings have {size} "
            "dimensions and its engine cannot shorten them",
            code=ErrorKind.INVALID_PARAMS.value,
            param="dimensions",
        )
    data: list[dict[str, Any]] = [
        {"object": "embedding", "index": index, "embedding": encode(vector, encoding_format)}
        for index, vector in enumerate(vectors)
    ]
    tokens = int(outcome.end.get("tokens_in") or 0)
    body = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(json.dumps(body, separators=(",", ":")), media_type=JSON)
