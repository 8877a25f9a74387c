"""The NATS JetStream sequencer: one replicated event log, one scheduler at a time.

Theory of operation. Every instance writes its entries (`runtime.entries`) to one
JetStream stream, the event log, and reads the whole log back in order through an
ordered consumer, applying each entry to its own core (`Runtime.apply`). The core is a
pure function of its inputs, so every instance holds the same queues, tasks, sessions and
transcripts; any instance answers every route. A write is durable once JetStream has
acknowledged it: a proposal (an admission, a cancel, a drain) returns the core's answer
only after JetStream stored the entry and this instance applied it, so a 202 means the
admission is in the replicated log.

One instance, the scheduler (leader), carries out what touches engines and writes the
entries only it may write (`wire.LEADER_ENTRIES`: tokens, finishes, polls, preload and
probe outcomes, reaps). It holds a lease, a key in a JetStream key-value bucket whose TTL
expires it unless refreshed; it takes the lease with `create` (which fails while another
holds it) and refreshes it with a compare-and-set on the key's revision. The revision it
took the lease at is its term: it writes a `Term` record first and leads only once that
record comes back through the log, so it has applied everything written before it. Every
leader entry carries its term, and appliers drop leader entries of any term but the
latest `Term` record's: a scheduler that lost its lease cannot dispatch, emit or end
anything, even if its writes still reach the log (fencing). A scheduler that cannot
refresh its lease, or whose writes are not acknowledged in time, steps down by itself.

Snapshots bound the log: every `snapshot_every` entries the scheduler stores the applied
state (core, task records, transcripts) in a JetStream object store with the sequence it
covers, and trims the log up to the snapshot before it (one snapshot's worth of margin
for instances that lag). An instance starts from the latest snapshot and the log's tail,
and serves once it has caught up with the log as it was when it started reading.

Without NATS an instance cannot write: `available` is False, proposals raise
`StateUnavailable` (503 STATE_UNAVAILABLE), and the client reconnects by itself; what the
instance already applied stays readable. An instance whose log reading finds a gap (it
lagged behind a trim) exits, to be restarted from the latest snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import time
from collections import deque
from typing import Any

from nats.aio.msg import Msg
from nats.js import api as js_api
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError, ObjectNotFoundError

from orchestratord_server.cluster import wire
from orchestratord_server.cluster.connection import Stores, connect, ensure
from orchestratord_server.config import NatsConfig
from orchestratord_server.logs import log_event
from orchestratord_server.runtime.entries import Entry
from orchestratord_server.runtime.sequencer import PENDING, Applier, StateUnavailable

log = logging.getLogger("orchestratord.cluster")

LEASE_KEY = "scheduler"
#: Snapshots are stored as `snapshot-<seq>`; the two latest are kept, so a starting
#: instance reading one is not cut short by the next one's write.
SNAPSHOT_PREFIX = "snapshot-"
SNAPSHOTS_KEPT = 2
SNAPSHOT_FORMAT = 1
#: How long reading one snapshot may take before the previous one is tried.
SNAPSHOT_READ_S = 30.0
#: How many applied entries' answers are kept for proposers still waiting for their ack.
RESULTS_KEPT = 8192
#: How long a starting instance waits to catch up with the log before it gives up.
CATCH_UP_S = 45.0


class _Failed:
    """An entry whose application raised: proposers re-raise `error`."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def instance_name() -> str:
    """This instance's name in the log and the lease: host and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


class NatsSequencer:
    """Orders entries through a JetStream stream; see the module's theory of operation."""

    def __init__(self, applier: Applier, settings: NatsConfig, name: str | None = None) -> None:
        self._applier = applier
        self._settings = settings
        self.name = name or instance_name()
        self._stores: Stores | None = None
        self._writes: asyncio.Queue[tuple[str, bytes, asyncio.Future[int] | None]] = asyncio.Queue()
        self._unacked: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._applied = 0
        self._results: dict[int, object] = {}
        self._waiters: dict[int, asyncio.Future[object]] = {}
        self._term = 0
        self._leader = False
        self._lease_rev: int | None = None
        self._lease_at = 0.0
        self._pending_term: int | None = None
        #: The log sequence the latest snapshot covers (the log is trimmed up to the one
        #: before it, when the next is stored).
        self._last_snapshot = 0
        self._since_snapshot = 0
        self._storing = False
        self._caught_up = False
        self._stopping = False
        self._leaving = False
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Any = None

    # -- the Sequencer protocol --------------------------------------------------------

    @property
    def leader(self) -> bool:
        return self._leader

    @property
    def available(self) -> bool:
        stores = self._stores
        return (
            stores is not None and stores.nc.is_connected and self._caught_up and not self._stopping
        )

    def now_ms(self) -> int:
        """Wall-clock milliseconds: entries from several hosts share one time line."""
        return time.time_ns() // 1_000_000

    async def start(self) -> None:
        """Connect, restore the latest snapshot, replay the log's tail, then take part in
        the lease; raises NatsUnreachable when NATS cannot be used."""
        settings = self._settings
        nc = await connect(settings, f"orchestratord {self.name}", on_disconnect=self._disconnected)
        self._stores = stores = await ensure(nc, settings)
        await self._restore(stores)
        info = await stores.js.stream_info(settings.stream)
        target = info.state.last_seq
        if info.state.messages and info.state.first_seq > self._applied + 1:
            raise RuntimeError(
                f"the event log starts at {info.state.first_seq} but the latest snapshot "
                f"covers only up to {self._applied}: the log was trimmed without a snapshot"
            )
        consumer = js_api.ConsumerConfig(
            deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self._applied + 1,
        )
        self._subscription = await stores.js.subscribe(
            f"{settings.subject_prefix}.log.>",
            stream=settings.stream,
            cb=self._on_message,
            ordered_consumer=True,
            config=consumer,
            idle_heartbeat=1.0,
        )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._write_loop(), name="log writer"),
            loop.create_task(self._lease_loop(), name="scheduler lease"),
        ]
        async with asyncio.timeout(CATCH_UP_S):
            while self._applied < target:
                await asyncio.sleep(0.01)
        self._caught_up = True
        log_event(
            log,
            logging.INFO,
            "cluster.joined",
            f"instance {self.name} joined the event log at entry {self._applied}",
            instance=self.name,
            seq=self._applied,
        )

    @property
    def shared(self) -> bool:
        return True

    async def leave(self) -> None:
        """Stop scheduling and hand the lease over at once; go on reading the log (open
        streams keep being served) until `stop`."""
        self._leaving = True
        held = self._lease_rev
        self._step_down("leaving")
        if held is not None and self._stores is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._settings.write_timeout_ms / 1000):
                    await self._stores.lease.delete(LEASE_KEY, last=held)

    async def stop(self) -> None:
        """Stop leading (handing the lease over at once), stop reading, close."""
        await self.leave()
        self._stopping = True
        stores = self._stores
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if stores is None:
            return
        with contextlib.suppress(Exception):
            if self._subscription is not None:
                await self._subscription.unsubscribe()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await stores.nc.flush()
                await stores.nc.close()

    async def propose(self, entry: Entry) -> object:
        if not self.available:
            raise StateUnavailable("the event log (NATS JetStream) cannot be reached")
        acked: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._enqueue(entry, 0, acked)
        timeout = self._settings.write_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout):
                seq = await acked
                result = self._results.get(seq, PENDING)
                if result is PENDING and seq > self._applied:
                    waiter = self._waiters.setdefault(
                        seq, asyncio.get_running_loop().create_future()
                    )
                    result = await waiter
        except TimeoutError:
            raise StateUnavailable(
                f"the event log did not confirm the write within {timeout:g} s",
                maybe_written=True,
            ) from None
        if result is PENDING:  # applied so long ago that its answer was dropped
            raise StateUnavailable(
                "the write was applied but its answer is gone", maybe_written=True
            )
        if isinstance(result, _Failed):
            raise result.error
        return result

    def send(self, entry: Entry) -> object:
        if isinstance(entry, wire.LEADER_ENTRIES):
            if not self._leader:
                return None  # a scheduler no more: drop it (and stop the relay)
            self._enqueue(entry, self._term, None)
        else:
            self._enqueue(entry, 0, None)
        return PENDING

    # -- writing -----------------------------------------------------------------------

    def _subject(self, entry: Entry | wire.Term) -> str:
        prefix = self._settings.subject_prefix
        task_id = wire.task_of(entry)
        return f"{prefix}.log.task.{task_id}" if task_id else f"{prefix}.log.cluster"

    def _enqueue(
        self, entry: Entry | wire.Term, term: int, acked: asyncio.Future[int] | None
    ) -> None:
        payload = wire.encode(entry, self.name, term)
        self._writes.put_nowait((self._subject(entry), payload, acked))

    async def _write_loop(self) -> None:
        """One writer, so this instance's entries reach the log in the order it made them
        (a task's tokens above all); acknowledgements are awaited apart."""
        assert self._stores is not None
        js, writes = self._stores.js, self._writes
        while True:
            subject, payload, acked = await writes.get()
            try:
                ack = await js.publish_async(subject, payload)
            except Exception as exc:
                if acked is not None and not acked.done():
                    acked.set_exception(StateUnavailable(f"the write failed: {exc!r}"))
                elif acked is None:
                    self._step_down(f"a write failed: {exc!r}")
                continue
            if acked is not None:
                ack.add_done_callback(functools.partial(_settle, acked=acked))
            else:
                self._unacked.append((time.monotonic(), ack))

    # -- reading -----------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        try:
            seq = msg.metadata.sequence.stream
            if seq <= self._applied:
                return  # the ordered consumer restarted behind us
            if seq != self._applied + 1:
                self._fatal(f"the event log skipped from {self._applied} to {seq}")
                return
            self._apply(seq, wire.decode(msg.data))
        except Exception:
            log.exception("applying a log entry failed")

    def _apply(self, seq: int, record: wire.Record) -> None:
        entry = record.entry
        result: object = None
        if isinstance(entry, wire.Term):
            self._on_term(entry)
        elif not isinstance(entry, wire.LEADER_ENTRIES) or record.term == self._term:
            try:
                result = self._applier.apply(entry, record.origin == self.name)
            except Exception as exc:  # every instance fails alike; the proposer re-raises
                result = _Failed(exc)
        self._applied = seq
        results = self._results
        results[seq] = result
        if len(results) > RESULTS_KEPT:
            del results[next(iter(results))]
        waiter = self._waiters.pop(seq, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)
        self._since_snapshot += 1
        if (
            self._leader
            and self._since_snapshot >= self._settings.snapshot_every
            and not self._storing
        ):
            self._since_snapshot = 0
            self._take_snapshot(seq)

    def _on_term(self, term: wire.Term) -> None:
        if term.term <= self._term:
            return
        self._term = term.term
        if term.leader == self.name and term.term == self._pending_term:
            self._pending_term = None
            self._leader = True
            log_event(
                log,
                logging.WARNING,
                "cluster.leader",
                f"instance {self.name} schedules from now on (term {term.term})",
                instance=self.name,
                term=term.term,
            )
            self._applier.leadership(True)
        elif self._leader:
            self._step_down(f"{term.leader} took over (term {term.term})")

    # -- the lease ---------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        assert self._stores is not None
        kv = self._stores.lease
        ttl = self._settings.lease_ttl_ms / 1000
        value = self.name.encode()
        while True:
            await asyncio.sleep(ttl / 5)
            if not self._caught_up or self._leaving:
                continue
            try:
                if self._lease_rev is None:
                    revision = await kv.create(LEASE_KEY, value)
                    self._lease_rev, self._lease_at = revision, time.monotonic()
                    self._pending_term = revision
                    self._enqueue(wire.Term(revision, self.name), revision, None)
                else:
                    revision = await kv.update(LEASE_KEY, value, last=self._lease_rev)
                    self._lease_rev, self._lease_at = revision, time.monotonic()
            except KeyWrongLastSequenceError:
                if self._lease_rev is not None:
                    self._step_down("another instance holds the lease")
            except Exception as exc:
                if self._lease_rev is not None and time.monotonic() - self._lease_at > ttl * 0.6:
                    self._step_down(f"the lease could not be refreshed: {exc!r}")
            self._check_acks(ttl)

    def _check_acks(self, ttl: float) -> None:
        """As the scheduler, step down when a write of ours is not acknowledged in time."""
        unacked, now = self._unacked, time.monotonic()
        while unacked and unacked[0][1].done():
            _, ack = unacked.popleft()
            if ack.cancelled() or ack.exception() is not None:
                self._step_down("a write was not acknowledged")
        if unacked and now - unacked[0][0] > min(ttl, self._settings.write_timeout_ms / 1000):
            unacked.clear()
            self._step_down("writes are not acknowledged in time")

    def _step_down(self, why: str) -> None:
        self._lease_rev = self._pending_term = None
        if self._leader:
            self._leader = False
            log_event(
                log,
                logging.WARNING,
                "cluster.follower",
                f"instance {self.name} stops scheduling: {why}",
                instance=self.name,
            )
            self._applier.leadership(False)

    async def _disconnected(self) -> None:
        if self._stopping:
            return
        log_event(
            log,
            logging.WARNING,
            "cluster.disconnected",
            "lost the connection to NATS: admissions are refused until it is back",
            instance=self.name,
        )

    # -- snapshots ---------------------------------------------------------------------

    async def _restore(self, stores: Stores) -> None:
        """Continue from the latest snapshot that reads back whole (none: from the start)."""
        data: dict[str, Any] | None = None
        for seq in sorted(await _snapshot_seqs(stores), reverse=True):
            try:
                async with asyncio.timeout(SNAPSHOT_READ_S):
                    found = await stores.snapshots.get(f"{SNAPSHOT_PREFIX}{seq}")
                data = json.loads(found.data or b"{}")
                break
            except (TimeoutError, NotFoundError, ObjectNotFoundError, ValueError) as exc:
                log.warning(
                    "snapshot at entry %d could not be read (%r); trying an older", seq, exc
                )
        if data is None:
            return
        if data.get("format") != SNAPSHOT_FORMAT:
            raise RuntimeError(f"the latest snapshot has format {data.get('format')!r}")
        self._applier.restore(data["state"])
        self._applied = data["seq"]
        self._term = data["term"]
        self._last_snapshot = data["seq"]

    def _take_snapshot(self, seq: int) -> None:
        previous, self._last_snapshot = self._last_snapshot, seq
        data = {
            "format": SNAPSHOT_FORMAT,
            "seq": seq,
            "term": self._term,
            "state": self._applier.snapshot(),
        }
        self._storing = True
        asyncio.get_running_loop().create_task(self._store_snapshot(seq, previous, data))

    async def _store_snapshot(self, seq: int, previous: int, data: dict[str, Any]) -> None:
        """Encode (off the event loop: the data is a fresh copy nothing else touches) and
        store the snapshot, drop the older ones, and trim the log."""
        assert self._stores is not None
        started = time.monotonic()
        stores = self._stores
        try:
            payload = await asyncio.to_thread(_encode_snapshot, data)
            await stores.snapshots.put(f"{SNAPSHOT_PREFIX}{seq}", payload)
            for old in sorted(await _snapshot_seqs(stores))[:-SNAPSHOTS_KEPT]:
                await stores.snapshots.delete(f"{SNAPSHOT_PREFIX}{old}")
            if previous:
                await stores.js.purge_stream(self._settings.stream, seq=previous + 1)
        except Exception as exc:
            log.warning("storing the snapshot at entry %d failed: %r", seq, exc)
            return
        finally:
            self._storing = False
        log_event(
            log,
            logging.INFO,
            "cluster.snapshot",
            f"snapshot at entry {seq} stored ({len(payload)} bytes in "
            f"{(time.monotonic() - started) * 1000:.0f} ms); log trimmed before {previous + 1}",
            seq=seq,
            bytes=len(payload),
        )

    def _fatal(self, why: str) -> None:
        log_event(
            log,
            logging.CRITICAL,
            "cluster.diverged",
            f"instance {self.name} cannot follow the event log ({why}); restarting it from "
            "the latest snapshot is required",
            instance=self.name,
        )
        self._caught_up = False
        os.kill(os.getpid(), signal.SIGTERM)


def _encode_snapshot(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


async def _snapshot_seqs(stores: Stores) -> list[int]:
    """The log sequences of the snapshots in the store."""
    try:
        infos = await stores.snapshots.list(ignore_deletes=True)
    except NotFoundError:
        return []
    return [
        int(info.name.removeprefix(SNAPSHOT_PREFIX))
        for info in infos
        if info.name and info.name.startswith(SNAPSHOT_PREFIX)
    ]


def _settle(ack: asyncio.Future[Any], *, acked: asyncio.Future[int]) -> None:
    if acked.done():
        return
    if ack.cancelled() or ack.exception() is not None:
        unconfirmed = StateUnavailable(
            "the event log did not acknowledge the write", maybe_written=True
        )
        acked.set_exception(unconfirmed)
    else:
        acked.set_result(ack.result().seq)


def factory(settings: NatsConfig, name: str | None = None) -> Any:
    """A `runtime.SequencerFactory` for ``settings``."""

    def make(applier: Applier) -> NatsSequencer:
        return NatsSequencer(applier, settings, name)

    return make
