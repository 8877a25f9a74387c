"""Embeddings over an engine's OpenAI-style `POST /v1/embeddings` (llama.cpp, vLLM).

Both engines answer OpenAI's shape: `data[]` with an `index` and a float vector per input,
and `usage.prompt_tokens`. The vectors are returned in input order whatever order the
engine listed them in; anything else in the answer is an ENGINE_ERROR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator_core import ErrorKind
from orchestratord_server.adapters.base import Embeddings, EngineError

PATH = "/v1/embeddings"


def request_body(inputs: Sequence[str], model: str | None) -> dict[str, Any]:
    """The engine request for ``inputs``: floats, so nothing is lost in transit."""
    body: dict[str, Any] = {"input": list(inputs), "encoding_format": "float"}
    if model is not None:
        body["model"] = model
    return body


def _bad(what: str) -> EngineError:
    return EngineError(ErrorKind.ENGINE_ERROR, f"{PATH} answered {what}")


def parse(answer: object, count: int) -> Embeddings:
    """The vectors of an engine's answer for ``count`` inputs."""
    data = answer.get("data") if isinstance(answer, Mapping) else None
    if not isinstance(data, list) or len(data) != count:
        raise _bad(f"a `data` list that is not one entry per input ({count})")
    vectors: list[tuple[float, ...] | None] = [None] * count
    for entry in data:
        index = entry.get("index") if isinstance(entry, Mapping) else None
        vector = entry.get("embedding") if isinstance(entry, Mapping) else None
        if not isinstance(index, int) or not 0 <= index < count or vectors[index] is not None:
            raise _bad("an entry without a distinct input index")
        if not isinstance(vector, list) or not vector:
            raise _bad("an entry without a vector of numbers")
        vectors[index] = tuple(float(x) for x in vector)
    usage = answer.get("usage") if isinstance(answer, Mapping) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, Mapping) else None
    return Embeddings(
        tuple(v for v in vectors if v is not None), tokens if isinstance(tokens, int) else 0
    )
