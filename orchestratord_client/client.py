"""The synchronous client: every data and control operation over one `httpx.Client`.

Answers come back as the generated models; refusals raise the typed errors of
`orchestratord_client.errors`. `stream()` iterates a task's events and reconnects on its
own when the connection drops, resuming after the last event it read (`Last-Event-ID`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator, Iterator
from types import TracebackType

import httpx

from orchestratord_client import protocol
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
from orchestratord_client.sse import (
    ControlEvent,
    EventReader,
    SseDecoder,
    StreamEvent,
    control_event,
)

Id = str | uuid.UUID


class Client:
    """A client of one daemon; `url` and `api_key` default to `$ORCHD_URL`, `$ORCHD_API_KEY`.

    Use it as a context manager, or call `close()`. `timeout` bounds each request; an
    open stream waits for its next event up to `stream_timeout` seconds (None: no limit,
    the task's own deadline ends it).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        stream_timeout: float | None = None,
    ) -> None:
        self.url = protocol.base_url(url)
        self._http = httpx.Client(
            base_url=self.url,
            headers=protocol.headers(protocol.api_key(api_key)),
            timeout=timeout,
        )
        self.stream_timeout = httpx.Timeout(timeout, read=stream_timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- data plane

    def submit(self, request: TaskRequest) -> AdmissionResponse:
        """Admit a task; TooManyRequests (429) when its queue is full."""
        return self._typed(protocol.call("createTask", request), AdmissionResponse)

    def stream(
        self,
        task_id: Id,
        *,
        from_index: int = 0,
        reconnects: int = 3,
        queue_updates: bool = False,
    ) -> TaskStream:
        """The task's events, typed; token events before `from_index` are skipped. With
        `queue_updates`, while the task waits, MetricsEvents with its `queue_position`
        and `predicted_start_ms` as of now come first (they carry no id).

        Closing the only open stream of an unfinished task cancels the task (the daemon
        frees its slot). A dropped connection is reopened up to `reconnects` times in a
        row, each time with `Last-Event-ID`, so the daemon resumes after the last event
        read: none is repeated or lost.
        """
        return TaskStream(self, str(task_id), from_index, reconnects, queue_updates)

    def task(self, task_id: Id) -> TaskStatus:
        """Where the task is now; a queued one's position and predicted start as of now."""
        return self._typed(protocol.call("getTask", id=task_id), TaskStatus)

    def cancel(self, task_id: Id) -> None:
        """Cancel a queued or running task; canceling a finished one is fine too."""
        self._empty(protocol.call("cancelTask", id=task_id))

    def session(self, session_id: Id) -> SessionInfo:
        return self._typed(protocol.call("getSession", id=session_id), SessionInfo)

    def delete_session(self, session_id: Id) -> None:
        self._empty(protocol.call("deleteSession", id=session_id))

    # -- control plane

    def replica_sets(self) -> list[ReplicaSet]:
        return self._typed(protocol.call("listReplicaSets"), ListReplicaSetsResponse200).root

    def pool_health(self, pool_id: str) -> PoolHealth:
        return self._typed(protocol.call("getPoolHealth", id=pool_id), PoolHealth)

    def events(self) -> Generator[ControlEvent, None, None]:
        """The control-plane event stream, typed: a ControlSnapshot, then PoolHealth,
        TaskSummary and PoolStats events as things change. It does not end by itself:
        close the generator to stop. A dropped connection raises httpx.TransportError;
        call again for a new snapshot (the stream has nothing to resume)."""
        response = self._open(protocol.call("streamControlEvents"), {})
        try:
            decoder = SseDecoder()
            for line in response.iter_lines():
                raw = decoder.feed(line)
                event = None if raw is None else control_event(raw)
                if event is not None:
                    yield event
        finally:
            response.close()

    def drain(self, pool_id: str, deadline_ms: int) -> PoolActionAccepted:
        body = DrainRequest(deadline_ms=deadline_ms)
        return self._typed(protocol.call("drainPool", body, id=pool_id), PoolActionAccepted)

    def reload(self, pool_id: str, new_model_ref: str) -> PoolActionAccepted:
        body = ReloadRequest(new_model_ref=new_model_ref)
        return self._typed(protocol.call("reloadPool", body, id=pool_id), PoolActionAccepted)

    # -- the daemon itself

    def livez(self) -> Liveness:
        return self._typed(protocol.call("getLivez"), Liveness)

    def readyz(self) -> Readiness:
        """The daemon's and each pool's readiness; `ready` is False while not ready (503)."""
        return self._typed(protocol.call("getReadyz"), Readiness)

    def metrics(self) -> str:
        """The Prometheus text exposition."""
        call = protocol.call("getMetrics")
        response = self._http.request(call.method, call.path)
        return protocol.decode_text(call, response)

    # -- transport

    def _typed(self, call: Call, model: type[M]) -> M:
        response = self._http.request(call.method, call.path, json=call.json)
        return protocol.decode(call, response, model)

    def _empty(self, call: Call) -> None:
        response = self._http.request(call.method, call.path, json=call.json)
        protocol.decode_empty(call, response)

    def _open(self, call: Call, headers: dict[str, str]) -> httpx.Response:
        """Open a streaming answer; the typed error (its body read) when it is not 200."""
        request = self._http.build_request(
            call.method, call.path, headers=headers, timeout=self.stream_timeout
        )
        response = self._http.send(request, stream=True)
        if not response.is_success:
            try:
                response.read()
            finally:
                response.close()
            protocol.check(response)
        return response


class TaskStream:
    """A task's events as they arrive: iterate it, and close it (or use `with`) when done.

    `next_index` is the index of the next token; after StreamInterrupted, pass it as
    `from_index` to carry on. `last_event_id` is the id of the last event read.
    """

    def __init__(
        self,
        client: Client,
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

    def __iter__(self) -> Iterator[StreamEvent]:
        return self._events

    def __enter__(self) -> TaskStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and drop the connection."""
        self._events.close()

    def _follow(self) -> Generator[StreamEvent, None, None]:
        call = protocol.call("streamTask", query=self._query, id=self.task_id)
        failures = 0
        while True:
            try:
                response = self._client._open(call, self._reader.headers())
                try:
                    self._reader.reconnected()
                    for line in response.iter_lines():
                        event = self._reader.line(line)
                        if event is None:
                            continue
                        failures = 0
                        yield event
                        if self._reader.finished:
                            return
                finally:
                    response.close()
                reason = "the stream ended before its terminal event"
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            failures += 1
            if failures > self._reconnects:
                raise StreamInterrupted(self.task_id, self.next_index, reason)
            time.sleep(protocol.RECONNECT_DELAY_S * failures)
