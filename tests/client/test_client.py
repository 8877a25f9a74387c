"""The Python client (sync and async) against a real daemon and llama.cpp engine.

Submits, streams, cancels, reconnects and meets every refusal the daemon gives, checking
that answers are the generated models and refusals the typed errors with their envelope.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Callable, Iterator

import pytest

from orchestratord_client import (
    AsyncClient,
    Client,
    EndEvent,
    ErrorEvent,
    NotFound,
    NotImplementedByServer,
    StartedEvent,
    StreamEvent,
    TokenEvent,
    TooManyRequests,
    Unauthorized,
    completion,
    retrying,
)
from orchestratord_client.errors import Backpressure, InvalidRequest, ServerError, Unavailable
from orchestratord_client.generated.models import (
    AdmissionResponse,
    ErrorKind,
    FinishReason,
    MetricsEvent,
    PoolAction,
    PoolActionAccepted,
    QueuePolicy,
    TaskRequest,
    Workload,
)
from orchestratord_client.protocol import KEY_ENV
from orchestratord_client.retry import DEFAULT_JITTER
from orchestratord_client.sse import RawEvent, typed_event
from tests.client.conftest import CAPACITY, SLOTS, wait_serving
from tests.client.proxy import cutting_proxy
from tests.integration.support import (
    DATA_KEY,
    LONG_CTX,
    LONG_MAX_TOKENS,
    MODEL_REF,
    POOL_ID,
    Daemon,
)
from tests.integration.support import Client as CheckedClient

pytestmark = pytest.mark.integration

#: Bytes of a stream's answer after which the proxy cuts it: a few dozen token frames.
CUT_AFTER_BYTES = 1500
CANCEL_AT_TOKEN = 200
#: A drain window long enough that a running task is still going when the test drains
#: again with deadline 0 (which then applies, being the earlier).
DRAIN_WINDOW_MS = 60_000
UNKNOWN_MODEL = "no-such-model"


@pytest.fixture
def client(daemon: Daemon, tracker: CheckedClient) -> Iterator[Client]:
    with Client(daemon.base_url, DATA_KEY) as client:
        yield client


def short_task(ctx: int = 1024) -> TaskRequest:
    return completion("Once upon a time", model_ref=MODEL_REF, max_tokens=16, ctx=ctx)


def long_task() -> TaskRequest:
    return completion(
        "Once upon a time", model_ref=MODEL_REF, ctx=LONG_CTX, max_tokens=LONG_MAX_TOKENS
    )


def admit(client: Client, tracker: CheckedClient, task: TaskRequest) -> AdmissionResponse:
    tracker.submitted.append(str(task.task_id))
    return client.submit(task)


def check_events(events: list[StreamEvent], task: TaskRequest) -> str:
    """ORCH-2002's order on typed events; the concatenated text."""
    assert isinstance(events[0], StartedEvent)
    assert events[0].task_id == task.task_id
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert [t.i for t in tokens] == list(range(len(tokens)))
    end = events[-1]
    assert isinstance(end, EndEvent), end
    assert end.tokens_out == len(tokens)
    assert not [e for e in events[:-1] if isinstance(e, EndEvent | ErrorEvent)]
    return "".join(t.t for t in tokens)


def test_submit_and_stream_typed(client: Client, tracker: CheckedClient) -> None:
    """ORCH-2001, ORCH-2002: submit answers the typed admission; the stream yields typed
    events whose tokens make the same text the raw SSE transcript holds."""
    task = short_task()
    admission = admit(client, tracker, task)
    assert isinstance(admission, AdmissionResponse)
    assert admission.task_id == task.task_id
    with client.stream(task.task_id) as stream:
        events = list(stream)
    text = check_events(events, task)
    assert text
    assert text == tracker.transcript(str(task.task_id)).text


def test_async_submit_and_stream_typed(daemon: Daemon, tracker: CheckedClient) -> None:
    """ORCH-2001, ORCH-2002: the async client gives the same typed admission and events."""
    task = short_task()
    tracker.submitted.append(str(task.task_id))

    async def scenario() -> tuple[AdmissionResponse, list[StreamEvent]]:
        async with AsyncClient(daemon.base_url, DATA_KEY) as client:
            admission = await client.submit(task)
            async with client.stream(task.task_id) as stream:
                return admission, [event async for event in stream]

    admission, events = asyncio.run(scenario())
    assert admission.task_id == task.task_id
    assert check_events(events, task) == tracker.transcript(str(task.task_id)).text


def test_cancel_mid_stream(client: Client, tracker: CheckedClient) -> None:
    """ORCH-2003, ORCH-3017: canceling a running task ends its stream with end/canceled;
    every token event before it was delivered exactly once."""
    task = long_task()
    admit(client, tracker, task)
    with client.stream(task.task_id) as stream:
        events: list[StreamEvent] = []
        for event in stream:
            events.append(event)
            if isinstance(event, TokenEvent) and event.i == 5:
                client.cancel(task.task_id)
    check_events(events, task)
    end = events[-1]
    assert isinstance(end, EndEvent)
    assert end.finish_reason is FinishReason.CANCELED
    assert 6 <= end.tokens_out < LONG_MAX_TOKENS


def test_reconnect_resumes_without_duplicates(client: Client, tracker: CheckedClient) -> None:
    """ORCH-2002: a stream reopened from `next_index` continues at that token (the daemon
    replays the transcript; the client skips what it had), so nothing repeats or is lost."""
    task = long_task()
    admit(client, tracker, task)
    # A second reader keeps the task alive while the first one disconnects.
    with client.stream(task.task_id) as keeper:
        assert isinstance(next(iter(keeper)), StartedEvent)
        received: list[StreamEvent] = []
        first = client.stream(task.task_id)
        for event in first:
            received.append(event)
            if isinstance(event, TokenEvent) and event.i == 9:
                break
        first.close()
        assert first.next_index == 10
        with client.stream(task.task_id, from_index=first.next_index) as second:
            for event in second:
                received.append(event)
                if isinstance(event, TokenEvent) and event.i == 30:
                    client.cancel(task.task_id)
    # Each stream object yields `started` once; the second one's is its own.
    assert sum(isinstance(e, StartedEvent) for e in received) == 2
    resumed = received[:1] + [e for e in received[1:] if not isinstance(e, StartedEvent)]
    check_events(resumed, task)


def test_orch_2002_a_dropped_connection_reconnects_and_resumes_after_the_last_event_id(
    daemon: Daemon, client: Client, tracker: CheckedClient
) -> None:
    """When the connection breaks mid-frame, the stream reconnects on its own with
    `Last-Event-ID` and carries on from the next event: what it yields is the task's
    transcript exactly, every event once (metrics included), in order."""
    task = long_task()
    admit(client, tracker, task)
    with (
        client.stream(task.task_id) as keeper,
        cutting_proxy(daemon.port, cuts=2, limit=CUT_AFTER_BYTES) as proxy,
        Client(proxy.url, DATA_KEY) as through_proxy,
    ):
        assert isinstance(next(iter(keeper)), StartedEvent)
        events: list[StreamEvent] = []
        with through_proxy.stream(task.task_id) as stream:
            for event in stream:
                events.append(event)
                if isinstance(event, TokenEvent) and event.i == CANCEL_AT_TOKEN:
                    client.cancel(task.task_id)
            last_event_id = stream.last_event_id
        assert proxy.cuts_done == 2
    check_events(events, task)
    whole = tracker.transcript(str(task.task_id))
    assert events == [typed_event(RawEvent(f.event, json.dumps(f.data))) for f in whole.frames]
    assert last_event_id == str(whole.terminal.id)


def test_overflow_is_typed_429_with_retry_hints(client: Client, tracker: CheckedClient) -> None:
    """ORCH-2007, ORCH-3005, ORCH-3025: a full queue raises TooManyRequests carrying the
    envelope, `backoff_ms` and `retry_after` (the same wait, rounded up to seconds)."""
    for _ in range(SLOTS + CAPACITY):
        admit(client, tracker, long_task())
    with pytest.raises(TooManyRequests) as refused:
        admit(client, tracker, long_task())
    error = refused.value
    assert error.status == 429
    assert error.envelope is not None
    assert error.code is ErrorKind.ADMISSION_REJECT
    assert error.envelope.policy is QueuePolicy.REJECT
    assert error.retriable
    assert error.backoff_ms is not None
    assert error.backoff_ms == error.envelope.retry_after_ms
    assert error.retry_after == math.ceil(error.backoff_ms / 1000)


def test_retry_helper_waits_and_succeeds_once_there_is_room(
    client: Client, tracker: CheckedClient
) -> None:
    """ORCH-2007, ORCH-3025: `retrying` resubmits after each 429, waiting the refusal's
    backoff (capped), and returns the admission once the queue has room."""
    running = [admit(client, tracker, long_task()) for _ in range(SLOTS + CAPACITY)]
    task = long_task()
    tracker.submitted.append(str(task.task_id))
    waits: list[tuple[Backpressure, float]] = []

    def make_room(refusal: Backpressure, wait: float) -> None:
        waits.append((refusal, wait))
        if len(waits) == 1:
            client.cancel(running[0].task_id)

    admission = retrying(
        lambda: client.submit(task), attempts=50, max_wait_s=0.2, on_retry=make_room
    )
    assert admission.task_id == task.task_id
    assert waits
    for refusal, wait in waits:
        assert isinstance(refusal, TooManyRequests)
        assert refusal.backoff_ms is not None
        asked = max(refusal.backoff_ms / 1000, 0.01)
        # At least what the daemon asked, stretched by the jitter, within the cap; a hint
        # beyond the cap spreads just below it.
        lowest = asked if asked < 0.2 else 0.2 / (1 + DEFAULT_JITTER)
        assert lowest <= wait <= min(asked * (1 + DEFAULT_JITTER), 0.2)


def test_retry_helper_gives_up_after_its_attempts(client: Client, tracker: CheckedClient) -> None:
    """ORCH-2007: when the queue stays full the last refusal is raised, after `attempts`."""
    for _ in range(SLOTS + CAPACITY):
        admit(client, tracker, long_task())
    calls = 0

    def submit() -> AdmissionResponse:
        nonlocal calls
        calls += 1
        return admit(client, tracker, long_task())

    with pytest.raises(TooManyRequests):
        retrying(submit, attempts=3, max_wait_s=0.05)
    assert calls == 3


def test_orch_3029_a_waiting_task_is_read_and_followed_with_its_estimate(
    client: Client, tracker: CheckedClient
) -> None:
    """`task` reads a queued task's position and predicted start now; a stream asked for
    queue updates yields them as MetricsEvents before `started`, and its ids (and so a
    resume) count only the transcript's events."""
    running, waiting = long_task(), short_task()
    for task in (running, waiting):
        admit(client, tracker, task)
    status = client.task(waiting.task_id)
    assert (status.state.value, status.queue_position) == ("queued", 0)
    assert status.predicted_start_ms is not None and status.predicted_start_ms >= 1
    with client.stream(waiting.task_id, queue_updates=True) as stream:
        events = iter(stream)
        update = next(events)
        assert isinstance(update, MetricsEvent), update
        assert (update.queue_position, stream.last_event_id) == (0, None)
        client.cancel(running.task_id)
        rest = list(events)
    began = next(i for i, e in enumerate(rest) if isinstance(e, StartedEvent))
    assert all(isinstance(e, MetricsEvent) and e.queue_position == 0 for e in rest[:began])
    check_events(rest[began:], waiting)
    assert stream.last_event_id == str(len(rest) - began - 1)  # the terminal's id
    assert client.task(waiting.task_id).state.value == "ended"


def test_unknown_ids_are_typed_404s(client: Client) -> None:
    """ORCH-2006: every operation on an unknown id raises NotFound with its envelope."""
    unknown = uuid.uuid4()
    calls: dict[str, Callable[[], object]] = {
        "stream": lambda: next(iter(client.stream(unknown))),
        "task": lambda: client.task(unknown),
        "cancel": lambda: client.cancel(unknown),
        "session": lambda: client.session(unknown),
        "delete_session": lambda: client.delete_session(unknown),
        "pool_health": lambda: client.pool_health("no-such-pool"),
    }
    for name, call in calls.items():
        with pytest.raises(NotFound) as missing:
            call()
        assert missing.value.status == 404, name
        assert missing.value.code is ErrorKind.NOT_FOUND, name


def test_bad_key_is_typed_401(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """ORCH-3035: a wrong or missing key raises Unauthorized."""
    monkeypatch.delenv(KEY_ENV, raising=False)
    for key in ("not-a-key", None):
        with Client(daemon.base_url, key) as client, pytest.raises(Unauthorized) as refused:
            client.replica_sets()
        assert refused.value.code is ErrorKind.UNAUTHORIZED


def test_invalid_task_is_typed_400_naming_the_field(client: Client) -> None:
    """ORCH-3014, ORCH-2006: a ctx beyond the model's limit raises InvalidRequest whose
    envelope names `body.ctx`."""
    with pytest.raises(InvalidRequest) as refused:
        client.submit(short_task(ctx=LONG_CTX * 64))
    assert refused.value.envelope is not None
    assert [e.loc for e in refused.value.envelope.errors or []] == ["body.ctx"]


def test_an_unserved_workload_is_typed_501(client: Client) -> None:
    """ORCH-2001: an embedding, which the engines here do not run, raises the typed 501
    NotImplementedByServer (a ServerError that is not worth retrying)."""
    task = TaskRequest.model_validate(
        {
            **short_task().model_dump(),
            "workload": Workload.EMBEDDING,
            "prompt": None,
            "inputs": ["a", "b"],
        }
    )
    with pytest.raises(NotImplementedByServer) as refused:
        client.submit(task)
    assert isinstance(refused.value, ServerError)
    assert refused.value.code is ErrorKind.NOT_IMPLEMENTED
    assert not refused.value.retriable


def test_drain_is_typed_and_takes_the_pool_out_of_service(
    client: Client, in_service: CheckedClient
) -> None:
    """ORCH-2101: drain answers the typed PoolActionAccepted with the deadline that applies
    (the earlier of two drains); health says draining and not ready, a submission is a
    typed 503 POOL_UNREADY, the running task goes on within the window, and a drain with
    deadline 0 ends it canceled."""
    task = long_task()
    admit(client, in_service, task)
    with client.stream(task.task_id) as stream:
        events = iter(stream)
        seen: list[StreamEvent] = [next(e for e in events if isinstance(e, TokenEvent))]
        accepted = client.drain(POOL_ID, DRAIN_WINDOW_MS)
        assert isinstance(accepted, PoolActionAccepted)
        assert (accepted.pool_id, accepted.action) == (POOL_ID, PoolAction.DRAIN)
        assert accepted.deadline_ms is not None
        assert 0 < accepted.deadline_ms <= DRAIN_WINDOW_MS
        health = client.pool_health(POOL_ID)
        assert (health.draining, health.ready) == (True, False)
        assert health.metrics["running"] == 1
        with pytest.raises(Unavailable) as refused:
            client.submit(short_task())
        assert refused.value.code is ErrorKind.POOL_UNREADY
        assert client.drain(POOL_ID, 0).deadline_ms == 0
        assert client.drain(POOL_ID, DRAIN_WINDOW_MS).deadline_ms == 0
        seen.extend(events)
    end = seen[-1]
    assert isinstance(end, EndEvent), end
    assert end.finish_reason is FinishReason.CANCELED
    assert client.pool_health(POOL_ID).draining


def test_reload_brings_a_drained_pool_back_on_its_model(
    client: Client, in_service: CheckedClient
) -> None:
    """ORCH-2102, ORCH-3002: reloading a drained pool to its own model answers the typed
    PoolActionAccepted naming the model; the pool preloads it and is Ready again, serving
    tasks on the same model (same digest) as before."""
    before = client.pool_health(POOL_ID)
    client.drain(POOL_ID, 0)
    accepted = client.reload(POOL_ID, MODEL_REF)
    assert isinstance(accepted, PoolActionAccepted)
    assert (accepted.pool_id, accepted.action) == (POOL_ID, PoolAction.RELOAD)
    assert accepted.new_model_ref == MODEL_REF
    wait_serving(in_service)
    after = client.pool_health(POOL_ID)
    assert (after.ready, after.draining) == (True, False)
    assert after.applied_model_ref == after.desired_model_ref == MODEL_REF
    assert after.model_digest == before.model_digest
    assert after.last_error is None
    task = short_task()
    admit(client, in_service, task)
    assert check_events(list(client.stream(task.task_id)), task)


def test_reload_to_an_unknown_model_is_typed_400_naming_the_field(
    daemon: Daemon, client: Client
) -> None:
    """ORCH-2102, ORCH-2006: a reload to a model the daemon does not know raises
    InvalidRequest naming `body.new_model_ref` (sync and async clients), and the pool
    goes on serving its model untouched."""

    async def reload_async() -> None:
        async with AsyncClient(daemon.base_url, DATA_KEY) as async_client:
            await async_client.reload(POOL_ID, UNKNOWN_MODEL)

    calls: list[Callable[[], object]] = [
        lambda: client.reload(POOL_ID, UNKNOWN_MODEL),
        lambda: asyncio.run(reload_async()),
    ]
    for call in calls:
        with pytest.raises(InvalidRequest) as refused:
            call()
        assert refused.value.code is ErrorKind.INVALID_PARAMS
        assert refused.value.envelope is not None
        assert [e.loc for e in refused.value.envelope.errors or []] == ["body.new_model_ref"]
    health = client.pool_health(POOL_ID)
    assert (health.ready, health.draining) == (True, False)
    assert health.desired_model_ref == health.applied_model_ref == MODEL_REF


def test_pools_sessions_and_probes_are_typed(client: Client, tracker: CheckedClient) -> None:
    """ORCH-2103, ORCH-2104, ORCH-2004, ORCH-2005: replica sets, pool health, a session
    after one turn (then deleted), readiness, liveness and metrics."""
    (replica_set,) = client.replica_sets()
    assert replica_set.model_ref == MODEL_REF
    assert [p.pool_id for p in replica_set.pools or []] == [POOL_ID]
    health = client.pool_health(POOL_ID)
    assert (health.live, health.ready, health.draining) == (True, True, False)
    assert health.metrics["slots_total"] == SLOTS
    task = short_task()
    admit(client, tracker, task)
    list(client.stream(task.task_id))
    session = client.session(task.session_id)
    assert session.turns == 1
    client.delete_session(task.session_id)
    with pytest.raises(NotFound):
        client.session(task.session_id)
    assert client.livez().status.value == "ok"
    readiness = client.readyz()
    assert readiness.ready
    assert [(p.pool_id, p.ready) for p in readiness.pools] == [(POOL_ID, True)]
    assert "# TYPE tasks_enqueued_total counter" in client.metrics()
