"""A Jepsen-style chaos run over real instances, and the checker of what clients saw.

Client threads submit, stream and cancel through random instances for a while, reading
streams in pieces (a client drops its connection now and then, or loses it to a killed
instance, and resumes on another instance with `Last-Event-ID`). A fault thread SIGKILLs
instances (the scheduler among them) and a NATS node and starts them again. Everything a
client saw is recorded as `History`; `check` then proves, against the final transcripts:

- every acknowledged admission (202) ends with exactly one terminal event, and so does
  every task whose admission answer was lost but which exists;
- every piece of every stream a client read is where it belongs in the final transcript:
  ids are contiguous, no event is lost, repeated or reordered across resumes;
- a transcript read right after a cancel's 204 is the final one (no token after it);
- no slot leaked and no task is left queued or running;
- the admissions the instances counted (`tasks_enqueued_total`, scraped before each
  kill while no admission is under way) are the 202s the clients got, plus at most the
  admissions whose answer was lost or unconfirmed (counted by the instance that wrote
  them once they were applied) that turned out to exist.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.integration.support import DATA_KEY, Daemon, Metrics, task_body

HEADERS = {"Authorization": f"Bearer {DATA_KEY}"}


@dataclass(frozen=True)
class Event:
    """One SSE event as a client read it: its id, name and data line."""

    id: int
    name: str
    data: str


def parse_events(raw: bytes) -> list[Event]:
    """Whole frames of ``raw`` (a partial last frame is dropped)."""
    events = []
    for block in raw.split(b"\n\n")[:-1]:
        fields: dict[str, str] = {}
        for line in block.decode().split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        events.append(Event(int(fields["id"]), fields["event"], fields["data"]))
    return events


@dataclass
class TaskHistory:
    """What clients saw of one task."""

    task_id: str
    acknowledged: bool  # a 202 arrived (False: the answer was lost)
    #: Each piece of a stream read: the events in the order they arrived.
    pieces: list[list[Event]] = field(default_factory=list)
    #: The transcript read on the canceling instance right after its 204.
    after_cancel: list[Event] | None = None


@dataclass
class History:
    tasks: dict[str, TaskHistory] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    admitted_counted: float = 0.0  # tasks_enqueued_total over every instance life
    kills: list[str] = field(default_factory=list)
    resumes: int = 0
    connect_refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refuse(self, code: str) -> None:
        with self.lock:
            self.refused[code] = self.refused.get(code, 0) + 1


class AdmissionGate:
    """Readers-writer lock: clients hold it shared while they submit, the fault thread
    exclusively while it scrapes an instance's counters and kills it, so no admission is
    half-counted."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._writer = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Cluster:
    """The instances of a run, some of which may be down at any moment."""

    def __init__(self, instances: list[Daemon]) -> None:
        self.instances = instances
        self.lock = threading.Lock()

    def live(self) -> list[Daemon]:
        with self.lock:
            return [d for d in self.instances if d.process is not None and d.exit_code is None]

    def pick(self, rng: random.Random) -> Daemon | None:
        live = self.live()
        return rng.choice(live) if live else None


def read_piece(
    base_url: str, task_id: str, after: int | None, stop_after: int | None
) -> tuple[list[Event], bool]:
    """Read the task's stream from ``base_url`` (resuming after event ``after``); stop after
    ``stop_after`` events if given. The events read, and whether the terminal one came."""
    headers = dict(HEADERS)
    if after is not None:
        headers["Last-Event-ID"] = str(after)
    raw = b""
    events: list[Event] = []
    timeout = httpx.Timeout(10.0, read=30.0)
    with (
        contextlib.suppress(httpx.TransportError),
        httpx.stream(
            "GET", f"{base_url}/v1/tasks/{task_id}/stream", headers=headers, timeout=timeout
        ) as response,
    ):
        if response.status_code != 200:
            return [], False
        for chunk in response.iter_raw():
            raw += chunk
            events = parse_events(raw)
            if events and events[-1].name in ("end", "error"):
                return events, True
            if stop_after is not None and len(events) >= stop_after:
                return events, False
    return parse_events(raw), False


class Client(threading.Thread):
    """Submits tasks and follows or cancels them through random instances."""

    def __init__(
        self, cluster: Cluster, history: History, gate: AdmissionGate, seed: int, until: float
    ) -> None:
        super().__init__(daemon=True, name=f"chaos client {seed}")
        self.cluster = cluster
        self.history = history
        self.gate = gate
        self.rng = random.Random(seed)
        self.until = until
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while time.monotonic() < self.until:
                self.one_task()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def one_task(self) -> None:
        rng = self.rng
        daemon = self.cluster.pick(rng)
        if daemon is None:
            time.sleep(0.1)
            return
        max_tokens = rng.choice((8, 32, 128, 400, 1200))
        body = task_body(max_tokens=max_tokens, ctx=16_384, seed=rng.randrange(1 << 30))
        task_id = str(body["task_id"])
        with self.gate.shared():
            try:
                response = httpx.post(
                    f"{daemon.base_url}/v1/tasks", json=body, headers=HEADERS, timeout=10
                )
            except httpx.ConnectError:
                with self.history.lock:
                    self.history.connect_refused += 1  # never sent: the instance is down
                return
            except httpx.TransportError:
                self.record(task_id, acknowledged=False)
                return
        if response.status_code != 202:
            code = response.json().get("code", str(response.status_code))
            self.history.refuse(code)
            if code == "STATE_UNAVAILABLE" and "may still take effect" in response.text:
                self.record(task_id, acknowledged=False)  # written, not confirmed
            time.sleep(0.05)
            return
        task = self.record(task_id, acknowledged=True)
        if rng.random() < 0.25:
            self.cancel_later(task)
        else:
            self.follow(task)

    def record(self, task_id: str, *, acknowledged: bool) -> TaskHistory:
        task = TaskHistory(task_id, acknowledged)
        with self.history.lock:
            self.history.tasks[task_id] = task
        return task

    def follow(self, task: TaskHistory) -> None:
        """Read to the terminal event, dropping the connection now and then and resuming
        on another instance after the last event read."""
        last: int | None = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            daemon = self.cluster.pick(self.rng)
            if daemon is None:
                time.sleep(0.1)
                continue
            stop_after = self.rng.choice((None, None, 3, 20))
            events, done = read_piece(daemon.base_url, task.task_id, last, stop_after)
            if events:
                task.pieces.append(events)
                last = events[-1].id
            if done:
                return
            with self.history.lock:
                self.history.resumes += 1
            time.sleep(0.02)

    def cancel_later(self, task: TaskHistory) -> None:
        """Read a few events, then cancel through some instance and read the transcript
        there at once."""
        daemon = self.cluster.pick(self.rng)
        if daemon is None:
            return
        events, done = read_piece(daemon.base_url, task.task_id, None, self.rng.choice((1, 4)))
        if events:
            task.pieces.append(events)
        if done:
            return
        daemon = self.cluster.pick(self.rng)
        if daemon is None:
            return
        with contextlib.suppress(httpx.TransportError):
            response = httpx.post(
                f"{daemon.base_url}/v1/tasks/{task.task_id}/cancel", headers=HEADERS, timeout=10
            )
            if response.status_code == 204:
                whole, closed = read_piece(daemon.base_url, task.task_id, None, None)
                if closed:
                    task.after_cancel = whole


def scrape_admissions(daemon: Daemon) -> float:
    response = httpx.get(f"{daemon.base_url}/metrics", timeout=5)
    return Metrics.parse(response.text).total("tasks_enqueued_total")


class Faults(threading.Thread):
    """Every ~`period` seconds SIGKILL an instance (every other time the scheduler) and
    start it again a moment later; once, SIGKILL a NATS node and restart it."""

    def __init__(
        self,
        cluster: Cluster,
        history: History,
        gate: AdmissionGate,
        *,
        until: float,
        period: float,
        scheduler: Callable[[], Daemon | None],
        nats_kill: Callable[[], None],
        nats_start: Callable[[], None],
    ) -> None:
        super().__init__(daemon=True, name="chaos faults")
        self.cluster = cluster
        self.history = history
        self.gate = gate
        self.until = until
        self.period = period
        self.scheduler = scheduler
        self.nats_kill = nats_kill
        self.nats_start = nats_start
        self.rng = random.Random(7)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            round_ = 0
            began = time.monotonic()
            # Faults are due on a schedule from the start (a period apart, give or take a
            # fifth), not a period after the last restart ended: a slow machine's restarts
            # would otherwise squeeze the run's later faults out of it.
            while (due := began + self.period * (round_ + self.rng.uniform(0.8, 1.2))) < (
                self.until - self.period / 2
            ):
                time.sleep(max(0.0, due - time.monotonic()))
                round_ += 1
                if round_ == 3:
                    self.nats_kill()
                    self.history.kills.append("SIGKILL nats node n2")
                    time.sleep(3)
                    self.nats_start()
                    continue
                scheduler = self.scheduler()
                target = scheduler if round_ % 2 else self.cluster.pick(self.rng)
                if target is None:
                    continue
                self.kill_and_restart(target, scheduler=target is scheduler)
        except BaseException as exc:
            self.error = exc

    def kill_and_restart(self, daemon: Daemon, *, scheduler: bool) -> None:
        with self.gate.exclusive():
            counted = scrape_admissions(daemon)
            assert daemon.process is not None
            daemon.process.kill()
            daemon.process.wait(10)
            with self.cluster.lock:
                daemon.exit_code = daemon.process.returncode
        self.history.admitted_counted += counted
        lives = len(list(daemon.workdir.glob("stderr-life*.log")))
        daemon.stderr_path.rename(daemon.workdir / f"stderr-life{lives}.log")
        role = " (the scheduler)" if scheduler else ""
        self.history.kills.append(f"SIGKILL {daemon.workdir.name}{role}")
        time.sleep(self.rng.uniform(0.5, 2.0))
        with self.cluster.lock:
            daemon.exit_code = None
            daemon.process = None
        daemon.start()


@dataclass
class Verdict:
    """The checker's findings, and the run's figures for RELIABILITY.md."""

    problems: list[str]
    figures: dict[str, Any]


def logged(cluster: Cluster, event: str) -> int:
    """How many log records named ``event`` every life of every instance wrote."""
    count = 0
    for daemon in cluster.instances:
        for path in (daemon.stderr_path, *daemon.workdir.glob("stderr-life*.log")):
            with contextlib.suppress(OSError):
                count += path.read_text(errors="replace").count(f'"event":"{event}"')
    return count


def check(history: History, cluster: Cluster, pool_id: str) -> Verdict:
    """Prove the invariants of the module docstring over `history` (see there)."""
    problems: list[str] = []
    live = cluster.live()
    rng = random.Random(11)
    outcomes: dict[str, int] = {}
    uncertain_existing = 0
    for task in history.tasks.values():
        daemon = rng.choice(live)
        final, closed = read_piece(daemon.base_url, task.task_id, None, None)
        if not final and not task.acknowledged:
            continue  # never admitted: the answer was lost before the write
        uncertain_existing += not task.acknowledged
        if not closed:
            problems.append(f"{task.task_id}: no terminal event (acknowledged={task.acknowledged})")
            continue
        names = [e.name for e in final]
        if [e.id for e in final] != list(range(len(final))):
            problems.append(f"{task.task_id}: ids are not 0..n-1")
        terminals = [i for i, n in enumerate(names) if n in ("end", "error")]
        if terminals != [len(names) - 1]:
            problems.append(f"{task.task_id}: {len(terminals)} terminal events")
        indexes = [json.loads(e.data)["i"] for e in final if e.name == "token"]
        if indexes != list(range(len(indexes))):
            problems.append(f"{task.task_id}: token indexes have a gap or repeat")
        for piece in task.pieces:
            start = piece[0].id
            if final[start : start + len(piece)] != piece:
                problems.append(f"{task.task_id}: a piece read at {start} differs from the final")
        if task.after_cancel is not None and task.after_cancel != final:
            problems.append(f"{task.task_id}: the transcript changed after the cancel's 204")
        last = final[-1]
        data = json.loads(last.data)
        key = f"end {data['finish_reason']}" if last.name == "end" else f"error {data['code']}"
        outcomes[key] = outcomes.get(key, 0) + 1
    for daemon in live:
        health = httpx.get(f"{daemon.base_url}/v1/pools/{pool_id}/health", headers=HEADERS).json()
        metrics = health["metrics"]
        if metrics["running"] or metrics["queue_depth"]:
            problems.append(f"{daemon.workdir.name}: tasks left running or queued: {metrics}")
        if metrics["slots_free"] != metrics["slots_total"]:
            problems.append(f"{daemon.workdir.name}: slots leaked: {metrics}")
    counted = history.admitted_counted + sum(scrape_admissions(d) for d in live)
    acknowledged = sum(t.acknowledged for t in history.tasks.values())
    if not acknowledged <= counted <= acknowledged + uncertain_existing:
        problems.append(
            f"tasks_enqueued_total says {counted:g}; clients got {acknowledged} 202s and "
            f"{uncertain_existing} tasks exist whose answer was lost or unconfirmed"
        )
    figures = {
        "acknowledged": acknowledged,
        "answers_lost_or_unconfirmed": sum(not t.acknowledged for t in history.tasks.values()),
        "of_which_admitted": uncertain_existing,
        "admissions_counted": counted,
        "outcomes": outcomes,
        "refused": history.refused,
        "pieces_read": sum(len(t.pieces) for t in history.tasks.values()),
        "resumes": history.resumes,
        "posts_refused_by_a_down_instance": history.connect_refused,
        "cancels_checked": sum(t.after_cancel is not None for t in history.tasks.values()),
        "kills": history.kills,
        "takeovers": logged(cluster, "cluster.leader"),
        "tasks_migrated": logged(cluster, "task.migrating"),
        "snapshots": logged(cluster, "cluster.snapshot"),
    }
    return Verdict(problems, figures)
