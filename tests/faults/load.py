"""Many concurrent clients on one asyncio loop, for the overload and shutdown scenarios.

:class:`AsyncClients` submits tasks and reads their streams over one aiohttp session with
enough connections for every simulated client, recording each answer in a
:class:`~tests.faults.checks.Ledger`. The clients share the daemon's two cores, so they
are the cheapest the named dependencies allow: httpx's connection pool looked through
every connection on each request, and under the overload scenario the clients took more
CPU than the daemon and its engine together, which showed up as the daemon's latency.
Streams are parsed frame by frame as they arrive (each frame validated against its event
model by ``parse_frame``), so the time of the first token is the moment the client
really had it. Answers are kept as ``httpx.Response`` objects, the type the contract
check (openapi-core, a few milliseconds each) reads; it runs after the load, on what was
kept, so it does not slow the clients down while they measure.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
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
    """Clients of one daemon sharing a connection pool; everything they saw is kept.

    Requests raise ``aiohttp.ClientError`` when the daemon cannot be reached or drops the
    connection.
    """

    base_url: str
    ledger: Ledger = field(default_factory=Ledger)
    refused: list[httpx.Response] = field(default_factory=list)
    kept: list[tuple[httpx.Response, bytes]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = field(init=False, default=None)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The clients' session, made on first use inside the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {DATA_KEY}"},
                timeout=aiohttp.ClientTimeout(total=None, connect=30.0, sock_read=90.0),
                connector=aiohttp.TCPConnector(limit=CONNECTIONS),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def submit(self, body: dict[str, Any]) -> httpx.Response:
        """POST /v1/tasks; the answer goes to the ledger (refusals are kept)."""
        async with self.session.post("/v1/tasks", json=body) as answer:
            content = await answer.read()
        request = httpx.Request("POST", str(answer.url), json=body)
        response = _kept(answer, request, content)
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
        async with self.session.get(f"/v1/tasks/{task_id}/stream") as answer:
            assert answer.status == 200, await answer.read()
            buffer = b""
            async for chunk in answer.content.iter_any():
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
        self.kept.append((_kept(answer, httpx.Request("GET", str(answer.url))), received))
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


def _kept(
    answer: aiohttp.ClientResponse, request: httpx.Request, content: bytes = b""
) -> httpx.Response:
    """An aiohttp answer as the httpx response the checks read (a stream's body is handed
    to the contract check beside it)."""
    headers = [
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in answer.raw_headers
    ]
    return httpx.Response(answer.status, headers=headers, content=content, request=request)


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
