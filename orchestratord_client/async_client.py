"""The asynchronous client: the same operations as `Client`, over one `httpx.AsyncClient`.

Every method is a coroutine answering the generated models or raising the typed errors;
`stream()` gives an async iterator of typed events that reconnects on its own when the
connection drops, resuming after the last event it read (`Last-Event-ID`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from types import TracebackType

import httpx

from orchestratord_client import protocol
from orchestratord_client.client import Id
from orchestratord_client.errors import StreamInterrupted
from orchestratord_client.generated.models import (
    AdmissionResponse,
    DrainRequest,
    ListReplicaSetsResponse200,
    Liveness,
    PoolActionAccepted,
    PoolHealth,
    Readiness,
    ReloadRequest,
    ReplicaSet,
    SessionInfo,
    TaskRequest,
    TaskStatus,
)
from orchestratord_client.protocol import Call, M
from orchestratord_client.sse import EventReader, StreamEvent


class AsyncClient:
    """The async twin of `Client`; use it with `async with`, or `await aclose()`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        stream_timeout: float | None = None,
    ) -> None:
        self.url = protocol.base_url(url)
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=protocol.headers(protocol.api_key(api_key)),
            timeout=timeout,
        )
        self.stream_timeout = httpx.Timeout(timeout, read=stream_timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- data plane

    async def submit(self, request: TaskRequest) -> AdmissionResponse:
        """Admit a task; TooManyRequests (429) when its queue is full."""
        return await self._typed(protocol.call("createTask", request), AdmissionResponse)

    def stream(
        self,
        task_id: Id,
        *,
        from_index: int = 0,
        reconnects: int = 3,
        queue_updates: bool = False,
    ) -> AsyncTaskStream:
        """The task's events, typed; see `Client.stream`."""
        return AsyncTaskStream(self, str(task_id), from_index, reconnects, queue_updates)

    async def task(self, task_id: Id) -> TaskStatus:
        """Where the task is now; a queued one's position and predicted start as of now."""
        return await self._typed(protocol.call("getTask", id=task_id), TaskStatus)

    async def cancel(self, task_id: Id) -> None:
        await self._empty(protocol.call("cancelTask", id=task_id))

    async def session(self, session_id: Id) -> SessionInfo:
        return await self._typed(protocol.call("getSession", id=session_id), SessionInfo)

    async def delete_session(self, session_id: Id) -> None:
        await self._empty(protocol.call("deleteSession", id=session_id))

    # -- control plane

    async def replica_sets(self) -> list[ReplicaSet]:
        call = protocol.call("listReplicaSets")
        return (await self._typed(call, ListReplicaSetsResponse200)).root

    async def pool_health(self, pool_id: str) -> PoolHealth:
        return await self._typed(protocol.call("getPoolHealth", id=pool_id), PoolHealth)

    async def drain(self, pool_id: str, deadline_ms: int) -> PoolActionAccepted:
        body = DrainRequest(deadline_ms=deadline_ms)
        return await self._typed(protocol.call("drainPool", body, id=pool_id), PoolActionAccepted)

    async def reload(self, pool_id: str, new_model_ref: str) -> PoolActionAccepted:
        body = ReloadRequest(new_model_ref=new_model_ref)
        return await self._typed(protocol.call("reloadPool", body, id=pool_id), PoolActionAccepted)

    # -- the daemon itself

    async def livez(self) -> Liveness:
        return await self._typed(protocol.call("getLivez"), Liveness)

    async def readyz(self) -> Readiness:
        """The daemon's and each pool's readiness; `ready` is False while not ready (503)."""
        return await self._typed(protocol.call("getReadyz"), Readiness)

    async def metrics(self) -> str:
        """The Prometheus text exposition."""
        call = protocol.call("getMetrics")
        response = await self._http.request(call.method, call.path)
        return protocol.decode_text(call, response)

    # -- transport

    async def _typed(self, call: Call, model: type[M]) -> M:
        response = await self._http.request(call.method, call.path, json=call.json)
        return protocol.decode(call, response, model)

    async def _empty(self, call: Call) -> None:
        response = await self._http.request(call.method, call.path, json=call.json)
        protocol.decode_empty(call, response)

    async def _open(self, call: Call, headers: dict[str, str]) -> httpx.Response:
        """Open a streaming answer; the typed error (its body read) when it is not 200."""
        request = self._http.build_request(
            call.method, call.path, headers=headers, timeout=self.stream_timeout
        )
        response = await self._http.send(request, stream=True)
        if not response.is_success:
            try:
                await response.aread()
            finally:
                await response.aclose()
            protocol.check(response)
        return response


class AsyncTaskStream:
    """A task's events as they arrive: `async for` over it, and `aclose()` it when done."""

    def __init__(
        self,
        client: AsyncClient,
        task_id: str,
        from_index: int,
        reconnects: int,
        queue_updates: bool = False,
    ) -> None:
        self.task_id = task_id
        self._query = {"queue_updates": "true"} if queue_updates else None
        self._client = client
        self._reader = EventReader(from_index)
        self._reconnects = reconnects
        self._events = self._follow()

    @property
    def next_index(self) -> int:
        return self._reader.resume.next_index

    @property
    def last_event_id(self) -> str | None:
        return self._reader.resume.last_event_id

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events

    async def __aenter__(self) -> AsyncTaskStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and drop the connection."""
        await self._events.aclose()

    async def _follow(self) -> AsyncGenerator[StreamEvent, None]:
        call = protocol.call("streamTask", query=self._query, id=self.task_id)
        failures = 0
        while True:
            try:
                response = await self._client._open(call, self._reader.headers())
                try:
                    self._reader.reconnected()
                    async for line in response.aiter_lines():
                        event = self._reader.line(line)
                        if event is None:
                            continue
                        failures = 0
                        yield event
                        if self._reader.finished:
                            return
                finally:
                    await response.aclose()
                reason = "the stream ended before its terminal event"
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            failures += 1
            if failures > self._reconnects:
                raise StreamInterrupted(self.task_id, self.next_index, reason)
            await asyncio.sleep(protocol.RECONNECT_DELAY_S * failures)
