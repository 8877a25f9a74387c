"""Typed exceptions for every refusal the daemon answers, each carrying its ErrorEnvelope.

`error_for(status, headers, body)` turns a non-2xx answer into the matching exception:
client errors (4xx), backpressure (429, 503) with the retry hints of ORCH-2007, and
server failures (5xx, including 501 for a workload this deployment does not provide).
A stream that ends with an `error` event is not an exception: it is the stream's last
event (see `orchestratord_client.sse`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import ValidationError

from orchestratord_client.generated.models import ErrorEnvelope, ErrorKind


class OrchestratordError(Exception):
    """A non-2xx answer of the daemon.

    `status` is the HTTP status; `envelope` the parsed ErrorEnvelope (None only when the
    body was not one, which the contract never allows but a proxy in between might).
    """

    def __init__(self, status: int, envelope: ErrorEnvelope | None, body: bytes = b"") -> None:
        self.status = status
        self.envelope = envelope
        self.body = body
        super().__init__(self.describe())

    @property
    def code(self) -> ErrorKind | None:
        return self.envelope.code if self.envelope else None

    @property
    def message(self) -> str:
        if self.envelope is not None:
            return self.envelope.message
        return self.body.decode("utf-8", errors="replace").strip() or f"HTTP {self.status}"

    @property
    def retriable(self) -> bool:
        """True when the same request can succeed if sent again later (ORCH-3025)."""
        return bool(self.envelope and self.envelope.retriable)

    def describe(self) -> str:
        """One line for people: status, code, message and every invalid field."""
        code = self.code.value if self.code else "?"
        text = f"{self.status} {code}: {self.message}"
        if self.envelope is not None and self.envelope.errors:
            text += "".join(f"\n  {e.loc}: {e.msg}" for e in self.envelope.errors)
        return text


class ClientError(OrchestratordError):
    """4xx other than 429: the request cannot succeed unchanged."""


class InvalidRequest(ClientError):
    """400, 413 or 415 INVALID_PARAMS; `envelope.errors` names every bad field."""


class Unauthorized(ClientError):
    """401: no API key, or an unknown one."""


class Forbidden(ClientError):
    """403: the key has no right to this plane or pool."""


class NotFound(ClientError):
    """404: the task, session or pool in the path is unknown."""


class Conflict(ClientError):
    """409 DUPLICATE_TASK: the task_id is already in use."""


class Backpressure(OrchestratordError):
    """429 or 503: no room now; try again after `backoff_ms` (ORCH-2007, ORCH-3025).

    `backoff_ms` is the precise wait (the `X-Backoff-Ms` header, else the envelope's
    `retry_after_ms`); `retry_after` is the `Retry-After` header in whole seconds, else
    `backoff_ms` rounded up. Both are None when the daemon gave no hint.
    """

    def __init__(
        self,
        status: int,
        envelope: ErrorEnvelope | None,
        body: bytes = b"",
        *,
        backoff_ms: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.backoff_ms = backoff_ms
        self.retry_after = retry_after
        super().__init__(status, envelope, body)


class TooManyRequests(Backpressure):
    """429: the queue is full (ADMISSION_REJECT) or a rate limit or quota is used up."""


class Unavailable(Backpressure):
    """503: the pool is not Ready or is down (POOL_UNREADY, POOL_UNAVAILABLE)."""


class ServerError(OrchestratordError):
    """5xx other than 503: the daemon or an engine failed."""


class NotImplementedByServer(ServerError):
    """501 NOT_IMPLEMENTED: the operation or workload is declared but not served here."""


class StreamInterrupted(Exception):
    """A task's stream kept breaking before its terminal event; reconnecting gave up.

    `next_index` is the index of the first token not received: `stream(task_id,
    from_index=next_index)` carries on from there while the daemon keeps the transcript.
    """

    def __init__(self, task_id: str, next_index: int, reason: str) -> None:
        self.task_id = task_id
        self.next_index = next_index
        super().__init__(f"the stream of task {task_id} broke at token {next_index}: {reason}")


_CLIENT_ERRORS: Mapping[int, type[ClientError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
}


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return None


def _envelope(body: bytes) -> ErrorEnvelope | None:
    try:
        return ErrorEnvelope.model_validate_json(body)
    except ValidationError:
        return None


def error_for(status: int, headers: Mapping[str, str], body: bytes) -> OrchestratordError:
    """The typed exception of a non-2xx answer; `headers` must look names up case-blind."""
    envelope = _envelope(body)
    if status in (429, 503):
        backoff_ms = _header_int(headers, "X-Backoff-Ms")
        if backoff_ms is None and envelope is not None:
            backoff_ms = envelope.retry_after_ms
        retry_after = _header_int(headers, "Retry-After")
        if retry_after is None and backoff_ms is not None:
            retry_after = math.ceil(backoff_ms / 1000)
        kind = TooManyRequests if status == 429 else Unavailable
        return kind(status, envelope, body, backoff_ms=backoff_ms, retry_after=retry_after)
    if status == 501:
        return NotImplementedByServer(status, envelope, body)
    if status >= 500:
        return ServerError(status, envelope, body)
    return _CLIENT_ERRORS.get(status, ClientError)(status, envelope, body)
