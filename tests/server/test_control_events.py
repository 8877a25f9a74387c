"""The control-plane event stream (`GET /v1/events`) of a real daemon on llama.cpp.

One daemon for the module: one pool of one slot on a tiny random-weight GGUF with a long
context (so a task runs for as long as a test needs it to), its model in the catalog so
that it can be reloaded, and separate data and control keys. Followers read the stream on
a background thread each; every frame they read is checked against the contract: its
shape (one `event:` and one single-line `data:` line, or a comment), the frame schema
(ControlEventFrame, with `assert_conforms` when the follower closes), and its data both
with the generated pydantic model of its event name (`x-sse-events`) and with the
contract's own component schema.

The stream's authentication (401 without a key, 403 with the data key when the control
plane has its own) is not repeated here: tests/security/test_route_auth.py covers every
route of the operation table, this one included.

Drain and reload take the pool out of service: they run last.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from orchestratord_server.app import contract
from orchestratord_server.generated.operations import OPERATIONS
from tests.integration.support import (
    DATA_KEY,
    MODEL_REF,
    POOL_ID,
    Client,
    Daemon,
    daemon_config,
    long_task_body,
    running_daemon,
    task_body,
    tiny_pool_config,
)
from tests.support import tiny_gguf
from tests.support.contract import assert_conforms

pytestmark = pytest.mark.integration

CONTROL_KEY = "control-events-control-key-5c1d"
OPERATION = OPERATIONS["streamControlEvents"]
EVENTS = OPERATION.sse_events
LIVE_STATES = ("queued", "dispatched", "streaming")
TERMINAL_STATES = ("ended", "canceled", "failed")
LIFE_ORDER = {state: i for i, state in enumerate((*LIVE_STATES, "terminal"))}
#: Long enough for any event the feed sends within a second to arrive.
WAIT_S = 15.0


# -- contract checks of the frames ---------------------------------------------------------


@cache
def _data_validators() -> dict[str, OAS30Validator]:
    """The contract's schema of each event's data, by event name (`x-sse-events`)."""
    doc = contract("control")
    declared = doc["paths"][OPERATION.path]["get"]["x-sse-events"]
    return {
        entry["name"]: OAS30Validator(
            {**doc, **entry["schema"]}, format_checker=oas30_format_checker
        )
        for entry in declared
    }


@dataclass(frozen=True)
class Event:
    """One frame of the stream, as read."""

    event: str
    text: str
    data: dict[str, Any]
    at: float


def parse_event(raw: bytes, at: float) -> Event | None:
    """One frame (its blank line split off): None for a comment, else its event, checked
    against the contract."""
    lines = raw.decode("utf-8").split("\n")
    if all(line.startswith(":") for line in lines):
        return None
    assert len(lines) == 2, f"a frame is one event and one data line: {raw!r}"
    event_line, data_line = lines
    assert event_line.startswith("event: "), raw
    assert data_line.startswith("data: "), raw
    event, text = event_line.removeprefix("event: "), data_line.removeprefix("data: ")
    assert event in EVENTS, f"event {event!r} is not one the contract declares"
    EVENTS[event].model_validate_json(text)
    data = json.loads(text)
    assert isinstance(data, dict), raw
    errors = [e.message for e in _data_validators()[event].iter_errors(data)]
    assert not errors, f"{event} data against the contract: {errors}\n{text}"
    return Event(event, text, data, at)


class Follower:
    """One client of `GET /v1/events`, reading on a thread of its own."""

    def __init__(self, base_url: str, key: str = CONTROL_KEY) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=httpx.Timeout(10.0, read=30.0))
        self._headers = {"Authorization": f"Bearer {key}"}
        self.events: list[Event] = []
        self.comments = 0
        self._received = b""
        self._response: httpx.Response | None = None
        self.headers: httpx.Headers | None = None
        self._condition = threading.Condition()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._ended = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with self._http.stream("GET", OPERATION.path, headers=self._headers) as response:
                self._response = response
                self.headers = response.headers
                assert response.status_code == 200, response.read()
                assert response.headers["content-type"].startswith("text/event-stream")
                buffer = b""
                for chunk in response.iter_raw():
                    buffer += chunk
                    while b"\n\n" in buffer:
                        raw, buffer = buffer.split(b"\n\n", 1)
                        self._received += raw + b"\n\n"
                        event = parse_event(raw, time.monotonic())
                        with self._condition:
                            if event is None:
                                self.comments += 1
                            else:
                                self.events.append(event)
                            self._condition.notify_all()
                    if self._stop.is_set():
                        return
        except BaseException as exc:  # handed to the test's thread
            if not self._stop.is_set():
                self._error = exc
        finally:
            with self._condition:
                self._ended = True
                self._condition.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            raise AssertionError(f"the event stream failed: {self._error!r}") from self._error

    def wait_for(
        self,
        predicate: Callable[[Event], bool],
        *,
        after: int = 0,
        timeout: float = WAIT_S,
        what: str = "",
    ) -> tuple[int, Event]:
        """The first event at index `after` or later that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        index = after
        with self._condition:
            while True:
                self._raise()
                while index < len(self.events):
                    if predicate(self.events[index]):
                        return index, self.events[index]
                    index += 1
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    self._raise()
                    ended = "the stream ended" if self._ended else f"{timeout:g}s passed"
                    raise AssertionError(f"{ended} before {what or predicate}: {self.summary()}")
                self._condition.wait(left)

    def snapshot(self) -> dict[str, Any]:
        """The first frame, which must be the snapshot."""
        _, first = self.wait_for(lambda e: True, what="the first frame")
        assert first.event == "snapshot", f"the first frame is {first.event}, not snapshot"
        return first.data

    def task_events(self, task_id: str) -> list[dict[str, Any]]:
        with self._condition:
            return [e.data for e in self.events if e.event == "task" and is_task(e, task_id)]

    def wait_task(
        self, task_id: str, predicate: Callable[[dict[str, Any]], bool], what: str = ""
    ) -> dict[str, Any]:
        _, event = self.wait_for(
            lambda e: e.event == "task" and is_task(e, task_id) and predicate(e.data),
            what=what or f"a task event of {task_id}",
        )
        return event.data

    def wait_ended(self, task_id: str) -> dict[str, Any]:
        """The task's terminal event."""
        return self.wait_task(task_id, lambda d: d["state"] in TERMINAL_STATES, "its end")

    def wait_closed(self, timeout: float) -> None:
        """Wait for the daemon to end the stream (cleanly: no error while reading)."""
        with self._condition:
            self._condition.wait_for(lambda: self._ended, timeout)
            assert self._ended, f"the stream was still open after {timeout:g}s"
        self._raise()

    def summary(self) -> str:
        return ", ".join(f"{e.event}:{e.text[:120]}" for e in self.events[-12:])

    def close(self) -> None:
        """Stop reading; fail if anything read broke the contract."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._http.close()
        assert not self._thread.is_alive(), "the follower did not stop"
        self._raise()
        assert self._response is not None
        # Status, headers and every frame against the contract's ControlEventFrame.
        assert_conforms(self._response, self._received)


def is_task(event: Event, task_id: str) -> bool:
    return bool(event.data.get("task_id") == task_id)


def life_stage(state: str) -> int:
    return LIFE_ORDER["terminal" if state in TERMINAL_STATES else state]


def without_changing_figures(health: dict[str, Any]) -> dict[str, Any]:
    """A pool's health without the figures that move by themselves between two reads."""
    health = json.loads(json.dumps(health))
    metrics = health["metrics"]
    metrics.pop("kv_cache_usage_ratio", None)
    for replica in metrics.get("replicas", []):
        replica.pop("kv_cache_usage_ratio", None)
        replica.pop("retry_in_ms", None)
    telemetry = health.get("gpu_telemetry") or {}
    for device in telemetry.get("devices") or []:
        for key in ("utilization", "memory_used_bytes", "memory_free_bytes"):
            device.pop(key, None)
    return health


# -- the daemon ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GGUF with a long training context, so that generations can run long."""
    path = tmp_path_factory.mktemp("events-model") / "tiny-long.gguf"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny_gguf, "TRAIN_CTX", 65_536)
        return tiny_gguf.write_tiny_gguf(path)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, model: Path) -> Iterator[Daemon]:
    """One slot, a queue of 4, the model in the catalog (reloadable), two keys."""
    pool = tiny_pool_config(model, slots=1, capacity=4, launch_model=False)
    config = daemon_config(pool)
    config["models"] = [{"ref": MODEL_REF, "path": str(model)}]
    config["auth"]["control_api_keys"] = [CONTROL_KEY]
    with running_daemon(tmp_path_factory.mktemp("events-daemon"), config) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def data(daemon: Daemon) -> Client:
    """The data plane's client; it remembers every task the module submitted."""
    return daemon.client(DATA_KEY)


@pytest.fixture(scope="module")
def control(daemon: Daemon) -> Client:
    return daemon.client(CONTROL_KEY)


@pytest.fixture
def follow(daemon: Daemon, data: Client, control: Client) -> Iterator[Callable[[], Follower]]:
    """Opens followers; after the test each is closed and checked, the tasks canceled."""
    followers: list[Follower] = []

    def open_one() -> Follower:
        follower = Follower(daemon.base_url)
        followers.append(follower)
        return follower

    control.wait_idle(timeout=30)
    yield open_one
    data.cancel_all()
    failures = []
    for follower in followers:
        try:
            follower.close()
        except AssertionError as failure:
            failures.append(failure)
    control.wait_idle(timeout=30)
    if failures:
        raise failures[0]


def streamed_tokens(data: Client, task_id: str) -> tuple[int, dict[str, Any]]:
    """The tokens the task's whole stream delivered, and its terminal event's data."""
    transcript = data.transcript(task_id)
    return len(transcript.tokens), transcript.terminal.data


# -- tests ---------------------------------------------------------------------------------


def test_orch_2103_the_stream_starts_with_a_snapshot_of_the_pools_health(
    follow: Callable[[], Follower], data: Client, control: Client
) -> None:
    """ORCH-2103: the first frame is a snapshot listing the pool with the body of its
    health route, and on an idle daemon no running or queued task."""
    follower = follow()
    snapshot = follower.snapshot()
    health = control.health()
    assert snapshot["interval_ms"] == 250
    assert follower.headers is not None
    assert follower.headers["cache-control"] == "no-cache"
    assert [p["pool_id"] for p in snapshot["pools"]] == [POOL_ID]
    assert without_changing_figures(snapshot["pools"][0]) == without_changing_figures(health)
    pool = snapshot["pools"][0]
    assert (pool["live"], pool["ready"], pool["draining"], pool["phase"]) == (
        True,
        True,
        False,
        "ready",
    )
    assert [t for t in snapshot["tasks"] if t["state"] in LIVE_STATES] == []
    if not data.submitted:
        assert snapshot["tasks"] == []
    # Nothing changes on an idle pool: what follows is its figures once a second.
    index, _ = follower.wait_for(lambda e: e.event == "stats", what="a stats event")
    follower.wait_for(lambda e: e.event == "stats", after=index + 1, what="a second one")
    assert {e.event for e in follower.events[1:]} == {"stats"}, follower.summary()


def test_orch_2103_a_task_goes_from_running_to_canceled_with_growing_tokens(
    follow: Callable[[], Follower], data: Client
) -> None:
    """A long task shows as `task` events, queued or dispatched, then streaming with a
    count of tokens that grows; a cancel ends it with one last event: state canceled,
    outcome canceled/client, and the count of tokens its own stream delivered."""
    follower = follow()
    follower.snapshot()
    body = long_task_body()
    task_id = body["task_id"]
    data.admit(body)
    streaming = follower.wait_task(
        task_id, lambda d: d["state"] == "streaming" and d["tokens_out"] > 0, "tokens"
    )
    first = streaming["tokens_out"]
    follower.wait_task(task_id, lambda d: d["tokens_out"] > first, "more tokens")
    assert data.cancel(task_id).status_code == 204
    last = follower.wait_ended(task_id)
    tokens, terminal = streamed_tokens(data, task_id)
    assert terminal["finish_reason"] == "canceled"
    assert last["state"] == "canceled"
    assert last["outcome"]["result"] == "canceled"
    assert last["outcome"]["code"] == "client"
    assert "finish_reason" not in last["outcome"] and "message" not in last["outcome"]
    assert last["outcome"]["decode_ms"] >= 0
    assert last["tokens_out"] == tokens == terminal["tokens_out"]
    assert last["replica_id"] == "r0" and last["priority"] == "interactive"
    assert "queue_position" not in last and "predicted_start_ms" not in last

    events = follower.task_events(task_id)
    assert events[0]["state"] in LIVE_STATES
    stages = [life_stage(e["state"]) for e in events]
    assert stages == sorted(stages), [e["state"] for e in events]
    counts = [e["tokens_out"] for e in events]
    assert counts == sorted(counts), counts
    for event in events[:-1]:
        assert "outcome" not in event, event
        if event["state"] != "queued":
            assert event["replica_id"] == "r0" and event["queue_time_ms"] >= 0
    assert first_tokens_agree(events)
    # It was the task's last event: a second later nothing more came for it.
    index, _ = follower.wait_for(lambda e: is_task(e, task_id) and e.data == last)
    seen, _ = follower.wait_for(lambda e: e.event == "stats", after=index + 1)
    follower.wait_for(lambda e: e.event == "stats", after=seen + 1)
    assert follower.task_events(task_id)[-1] == last
    assert len([e for e in follower.task_events(task_id) if "outcome" in e]) == 1


def first_tokens_agree(events: list[dict[str, Any]]) -> bool:
    """Every event of one task that has a time to first token gives the same one."""
    firsts = {e["first_token_ms"] for e in events if "first_token_ms" in e}
    assert len(firsts) <= 1, [e.get("first_token_ms") for e in events]
    return True


def test_orch_2103_a_short_task_ends_with_the_tokens_its_stream_delivered(
    follow: Callable[[], Follower], data: Client
) -> None:
    """A task that finishes: state ended, outcome finished/ok with its finish reason, and
    `tokens_out` equal to the token events of its own stream."""
    follower = follow()
    follower.snapshot()
    transcript = data.run(task_body(max_tokens=24))
    task_id = transcript.started["task_id"] if transcript.started else ""
    last = follower.wait_ended(task_id)
    assert transcript.terminal.event == "end"
    assert last["state"] == "ended"
    assert last["outcome"]["result"] == "finished"
    assert last["outcome"]["code"] == "ok"
    assert last["outcome"]["finish_reason"] == transcript.terminal.data["finish_reason"]
    assert last["outcome"]["decode_ms"] >= 0
    assert last["tokens_out"] == len(transcript.tokens) == 24
    assert last["queue_time_ms"] >= 0 and last["first_token_ms"] >= last["queue_time_ms"]
    assert first_tokens_agree(follower.task_events(task_id))


def test_orch_2103_a_task_past_its_deadline_ends_failed_with_its_error(
    follow: Callable[[], Follower], data: Client
) -> None:
    """A task that fails (its own deadline ran out while it streamed): state failed,
    outcome failed with the ErrorKind its stream's `error` event names, and a message."""
    follower = follow()
    follower.snapshot()
    body = long_task_body(deadline_ms=1_500)
    data.admit(body)
    transcript = data.transcript(body["task_id"])
    assert transcript.terminal.event == "error"
    last = follower.wait_ended(body["task_id"])
    assert last["state"] == "failed"
    assert last["outcome"]["result"] == "failed"
    assert last["outcome"]["code"] == transcript.terminal.data["code"] == "DECODE_TIMEOUT"
    assert "1500 ms" in last["outcome"]["message"]
    assert "finish_reason" not in last["outcome"]
    assert last["tokens_out"] == len(transcript.tokens) > 0
    assert last["outcome"]["decode_ms"] >= 0


def queued_at(position: int) -> Callable[[dict[str, Any]], bool]:
    return lambda d: d["state"] == "queued" and d.get("queue_position") == position


def test_orch_3029_queued_tasks_show_their_position_and_predicted_start_as_the_queue_moves(
    follow: Callable[[], Follower], data: Client
) -> None:
    """ORCH-3029: with one slot busy, two more tasks queue at positions 0 and 1, each with
    a predicted start; when the running one ends the next runs and the last moves to 0.
    A task canceled while queued ends without ever having started."""
    follower = follow()
    follower.snapshot()
    running, second, third = long_task_body(), long_task_body(), long_task_body()
    data.admit(running)
    follower.wait_task(running["task_id"], lambda d: d["state"] == "streaming")
    data.admit(second)
    data.admit(third)
    queued = [
        follower.wait_task(
            body["task_id"],
            queued_at(position),
            f"queued at {position}",
        )
        for position, body in enumerate((second, third))
    ]
    for event in queued:
        assert event["predicted_start_ms"] >= 0
        assert "replica_id" not in event and "queue_time_ms" not in event, event
        assert event["tokens_out"] == 0
    assert queued[1]["predicted_start_ms"] >= queued[0]["predicted_start_ms"]
    # A snapshot lists the running task first, then the queue in serving order.
    live = [t for t in follow().snapshot()["tasks"] if t["state"] in LIVE_STATES]
    ids = [running["task_id"], second["task_id"], third["task_id"]]
    assert [t["task_id"] for t in live] == ids, live
    assert [t.get("queue_position") for t in live] == [None, 0, 1], live
    mark = len(follower.events)
    assert data.cancel(running["task_id"]).status_code == 204
    ended = follower.wait_ended(running["task_id"])
    assert (ended["state"], ended["outcome"]["code"]) == ("canceled", "client")
    _, moved = follower.wait_for(
        lambda e: is_task(e, second["task_id"]) and e.data["state"] in ("dispatched", "streaming"),
        after=mark,
        what="the second task to start",
    )
    assert moved.data["replica_id"] == "r0" and "queue_position" not in moved.data
    _, last = follower.wait_for(
        lambda e: is_task(e, third["task_id"]) and e.data.get("queue_position") == 0,
        after=mark,
        what="the third task to move up",
    )
    assert last.data["state"] == "queued" and last.data["predicted_start_ms"] >= 0
    # Canceled while queued: it never started, so no replica, queue time or decode time.
    assert data.cancel(third["task_id"]).status_code == 204
    never = follower.wait_ended(third["task_id"])
    assert never["state"] == "canceled" and never["tokens_out"] == 0
    assert never["outcome"] == {"result": "canceled", "code": "client"}
    for field in ("replica_id", "queue_time_ms", "first_token_ms", "queue_position"):
        assert field not in never, never
    assert data.cancel(second["task_id"]).status_code == 204
    assert follower.wait_ended(second["task_id"])["state"] == "canceled"


def test_orch_3028_orch_3041_stats_come_once_a_second_and_add_up_to_the_tasks_tokens(
    follow: Callable[[], Follower], data: Client
) -> None:
    """ORCH-3028: a `stats` event per pool about once a second; over a task's run the
    tokens they count add up to the tokens the task streamed, it counts as ended once,
    and the median time to first token of its second is its own."""
    follower = follow()
    follower.snapshot()
    # Start from a second in which nothing happened.
    quiet, _ = follower.wait_for(
        lambda e: e.event == "stats" and e.data["tokens_out"] == 0 and e.data["tasks_ended"] == 0,
        what="a quiet second",
    )
    body = task_body(ctx=16_384, max_tokens=2_000)
    data.admit(body)
    tokens, terminal = streamed_tokens(data, body["task_id"])
    assert terminal["tokens_out"] == tokens == 2_000
    end_at, ended = follower.wait_for(
        lambda e: is_task(e, body["task_id"]) and "outcome" in e.data, after=quiet
    )
    closing, _ = follower.wait_for(lambda e: e.event == "stats", after=end_at)
    # One more second, so that nothing is counted late.
    settled, _ = follower.wait_for(lambda e: e.event == "stats", after=closing + 1)
    stats = [e for e in follower.events[quiet + 1 : settled + 1] if e.event == "stats"]
    figures = [s.data for s in stats]
    assert {f["pool_id"] for f in figures} == {POOL_ID}
    assert sum(f["tokens_out"] for f in figures) == tokens, figures
    assert sum(f["tasks_ended"] for f in figures) == 1, figures
    assert figures[-1]["tokens_out"] == 0 and figures[-1]["tasks_ended"] == 0
    assert all(f["slots_total"] == 1 and f["queue_depth"] == 0 for f in figures), figures
    assert figures[-1]["tasks_running"] == 0
    firsts = [f["first_token_p50_ms"] for f in figures if "first_token_p50_ms" in f]
    assert firsts == [ended.data["first_token_ms"]], figures
    # About once a second, by their own measure and by when they came.
    for earlier, later in itertools.pairwise(stats):
        assert 0.6 <= later.at - earlier.at <= 2.0, [s.at for s in stats]
    assert all(900 <= f["interval_ms"] <= 1_600 for f in figures), figures
    # ORCH-3041: the pool event of the pool gone idle carries the SLO figures of the
    # interactive class, the finished task among their samples.
    _, idle = follower.wait_for(
        lambda e: e.event == "pool" and e.data["metrics"]["running"] == 0, after=quiet
    )
    slo = idle.data["metrics"]["slo"]["interactive"]
    assert slo["samples"] >= 1 and slo["ttft_p95_ms"] >= 0, slo


def test_orch_2103_two_followers_see_the_same_task_events_and_a_late_one_its_end(
    follow: Callable[[], Follower], data: Client
) -> None:
    """Two followers at once get the same events of a task, byte for byte; one that
    connects after the task ended finds it, with its outcome, in its snapshot."""
    first, second = follow(), follow()
    first.snapshot()
    second.snapshot()
    body = task_body(ctx=16_384, max_tokens=600)
    task_id = body["task_id"]
    data.admit(body)
    tokens, _ = streamed_tokens(data, task_id)
    ended = first.wait_ended(task_id)
    assert second.wait_ended(task_id) == ended
    assert ended["tokens_out"] == tokens

    def texts(follower: Follower) -> list[str]:
        return [e.text for e in follower.events if e.event == "task" and is_task(e, task_id)]

    assert texts(first) == texts(second)
    assert len(texts(first)) >= 1
    late = follow().snapshot()
    summaries = [t for t in late["tasks"] if t["task_id"] == task_id]
    assert summaries == [ended]


def test_orch_2101_orch_2102_drain_and_reload_show_as_pool_events(
    follow: Callable[[], Follower], data: Client, control: Client
) -> None:
    """ORCH-2101, ORCH-2102: a drain shows as a `pool` event with `draining: true` and
    ends the running task at its deadline (canceled by the drain); a reload to the same
    model brings a `pool` event that is ready again."""
    follower = follow()
    follower.snapshot()
    body = long_task_body()
    data.admit(body)
    follower.wait_task(body["task_id"], lambda d: d["state"] == "streaming")
    response = control.post(f"/v1/pools/{POOL_ID}/drain", json={"deadline_ms": 1_000})
    assert response.status_code == 202, response.text
    _, draining = follower.wait_for(
        lambda e: e.event == "pool" and e.data["draining"], what="a draining pool event"
    )
    assert draining.data["pool_id"] == POOL_ID and draining.data["ready"] is False
    ended = follower.wait_ended(body["task_id"])
    follower.wait_for(
        lambda e: e.event == "pool" and e.data["phase"] == "drained", what="a drained pool event"
    )
    left = [
        e.data["metrics"]["drain_remaining_ms"]
        for e in follower.events
        if e.event == "pool" and e.data["phase"] == "draining"
    ]
    assert left == sorted(left, reverse=True) and all(0 <= ms <= 1_000 for ms in left), left
    assert ended["state"] == "canceled"
    assert ended["outcome"] == {
        "result": "canceled",
        "code": "drain",
        "decode_ms": ended["outcome"]["decode_ms"],
    }
    mark = len(follower.events)
    response = control.post(f"/v1/pools/{POOL_ID}/reload", json={"new_model_ref": MODEL_REF})
    assert response.status_code == 202, response.text
    _, ready = follower.wait_for(
        lambda e: e.event == "pool" and e.data["ready"],
        after=mark,
        timeout=60,
        what="the pool ready again",
    )
    pool = ready.data
    assert (pool["draining"], pool["phase"], pool["live"]) == (False, "ready", True)
    assert pool["applied_model_ref"] == pool["desired_model_ref"] == MODEL_REF
    phases = [e.data["phase"] for e in follower.events[mark:] if e.event == "pool"]
    assert phases[-1] == "ready", phases
    # The pool event says what the health route says.
    last_pool = [e.data for e in follower.events if e.event == "pool"][-1]
    assert without_changing_figures(control.health()) == without_changing_figures(last_pool)


def test_the_streams_end_when_the_daemon_shuts_down(tmp_path: Path, model: Path) -> None:
    """An open event stream ends (cleanly, after its last look) when the daemon begins
    to shut down, so it does not hold the daemon's exit back."""
    config = daemon_config(tiny_pool_config(model, slots=1, capacity=4))
    daemon = Daemon(tmp_path, config).start()
    try:
        # Without control keys, the data-plane key opens the control plane too.
        follower = Follower(daemon.base_url, key=DATA_KEY)
        follower.snapshot()
        follower.wait_for(lambda e: e.event == "stats", what="a stats event")
        began = time.monotonic()
        daemon.stop()
        took = time.monotonic() - began
        follower.wait_closed(timeout=5)
        follower.close()
    finally:
        daemon.stop()
    daemon.assert_stopped_cleanly()
    assert took < 5, f"the daemon took {took:.1f}s to stop with a follower connected"
