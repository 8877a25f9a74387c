"""Many concurrent clients on one asyncio loop, for the overload and shutdown scenarios.

:class:`AsyncClients` submits tasks and reads their streams over one ``httpx.AsyncClient``
with enough connections for every simulated client, recording each answer in a
:class:`~tests.faults.checks.Ledger`. Streams are parsed frame by frame as they arrive
(each frame validated against its event model by ``parse_frame``), so the time of the
first token is the moment the client really had it. The contract check of the answers
(openapi-core, a few milliseconds each) runs after the load, on what was kept, so it
does not slow the clients down while they measure.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.faults.checks import Ledger
from tests.integration.support import DATA_KEY, Frame, check_transcript, parse_frame
from tests.support.contract import assert_conforms

#: Connections the clients share: more than the clients of any scenario, so none waits.
CONNECTIONS = 64


@dataclass(frozen=True)
class Streamed:
    """One task's stream as a client read it; ``first_token_s`` is None without tokens."""

    task_id: str
    submitted_at: float
    first_token_at: float | None

    @property
    def first_token_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.submitted_at


@dataclass
class AsyncClients:
    """Clients of one daemon sharing a connection pool; everything they saw is kept."""

    base_url: str
    ledger: Ledger = field(default_factory=Ledger)
    refused: list[httpx.Response] = field(default_factory=list)
    kept: list[tuple[httpx.Response, bytes]] = field(default_factory=list)
    http: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {DATA_KEY}"},
            timeout=httpx.Timeout(30.0, read=90.0),
            limits=httpx.Limits(max_connections=CONNECTIONS),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def submit(self, body: dict[str, Any]) -> httpx.Response:
        """POST /v1/tasks; the answer goes to the ledger (refusals are kept)."""
        response = await self.http.post("/v1/tasks", json=body)
        if not self.ledger.submitted(body, response):
            self.refused.append(response)
        return response

    async def stream(
        self, task_id: str, submitted_at: float, first_token: asyncio.Event | None = None
    ) -> Streamed:
        """Read the task's stream to its end; the transcript goes to the ledger.

        ``first_token`` is set as soon as the first token event has arrived.
        """
        frames: list[Frame] = []
        received = b""
        first_token_at: float | None = None
        async with self.http.stream("GET", f"/v1/tasks/{task_id}/stream") as response:
            assert response.status_code == 200, await response.aread()
            buffer = b""
            async for chunk in response.aiter_raw():
                received += chunk
                buffer += chunk
                while b"\n\n" in buffer:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    frame = parse_frame(raw)
                    if frame.event == "token" and first_token_at is None:
                        first_token_at = time.monotonic()
                        if first_token is not None:
                            first_token.set()
                    frames.append(frame)
            assert buffer == b"", f"stream ended inside a frame: {buffer!r}"
        self.kept.append((response, received))
        self.ledger.finished(task_id, check_transcript(frames, task_id=task_id))
        return Streamed(task_id, submitted_at, first_token_at)

    async def run(self, body: dict[str, Any]) -> tuple[httpx.Response, Streamed | None]:
        """Submit; when admitted, read the stream to its end."""
        submitted_at = time.monotonic()
        response = await self.submit(body)
        if response.status_code != 202:
            return response, None
        return response, await self.stream(str(body["task_id"]), submitted_at)

    def check_contract(self, sample: int) -> None:
        """Contract-check up to ``sample`` refusals and ``sample`` streams."""
        for response in self.refused[:sample]:
            assert_conforms(response)
        for response, received in self.kept[:sample]:
            assert_conforms(response, received)


def backoff_s(response: httpx.Response) -> float:
    """The refusal's retry hints, checked to agree (ORCH-2007), as seconds to wait."""
    backoff_ms = int(response.headers["X-Backoff-Ms"])
    assert backoff_ms >= 1
    assert response.json()["retry_after_ms"] == backoff_ms
    assert int(response.headers["Retry-After"]) == max(1, math.ceil(backoff_ms / 1000))
    return backoff_ms / 1000


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
