"""The checks every fault scenario ends with: nothing lost, nothing leaked, counts agree.

A :class:`Ledger` is what the clients of one scenario did and saw: the tasks admitted
(202), the refusals by envelope code, and each admitted task's transcript read to its
end. :func:`check_scenario` then asserts, on the live daemon:

- every admitted task has a transcript with exactly one terminal event (ORCH-2002),
- the daemon logged exactly one terminal record for it, of the same kind (ORCH-3027),
- ``/metrics`` counters moved by exactly what the clients saw (ORCH-3028):
  ``tasks_enqueued_total`` by the admissions, ``tasks_started_total`` by the transcripts
  with a ``started`` event, ``tasks_canceled_total`` by those that ended canceled, and
  ``tasks_rejected_total{reason}`` by the refusals plus the queue evictions; and the
  operator families: ``orchestratord_tasks_completed_total{result, code}`` once per
  admitted task by how it ended, ``orchestratord_admission_refusals_total{reason}`` by
  the refusals, one task-duration observation per admitted task and one queue-wait
  observation per dispatch,
- every pool is idle: nothing running or queued, every slot free (ORCH-3017),
- the daemon's open file descriptors are back within :data:`FD_SLACK` of the baseline
  taken after start-up.

A daemon that has exited (SIGTERM scenario) can only be checked through its transcripts
and logs: :func:`check_transcripts` and :func:`check_terminal_logs`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from tests.integration.support import (
    Client,
    Daemon,
    Metrics,
    Transcript,
    check_transcript,
    wait_until,
)

#: Open descriptors the daemon may hold above its start-up baseline once idle: a few
#: keep-alive connections (clients, engine) that have not timed out yet.
FD_SLACK = 8
#: Keep-alive connections close within ~5 s (uvicorn's and the adapter's timeouts).
FD_SETTLE_S = 15.0
#: Failures that are evictions from a full queue; counted as rejections (ORCH-3005).
EVICTION_CODES = frozenset({"ADMISSION_REJECT", "QUEUE_FULL_DROP_LRU"})
#: pytest's ``record_property`` fixture: how a scenario records its figures.
RecordProperty = Callable[[str, object], None]
TERMINAL_LOG_EVENTS = {
    "task.ended": "ended",
    "task.canceled": "canceled",
    "task.failed": "failed",
    "task.evicted": "failed",
}


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` has open now."""
    return sum(1 for _ in (Path("/proc") / str(pid) / "fd").iterdir())


def outcome(transcript: Transcript) -> str:
    """``ended``, ``canceled`` or ``failed``: how a transcript's terminal event reads."""
    terminal = transcript.terminal
    if terminal.event == "error":
        return "failed"
    return "canceled" if terminal.data["finish_reason"] == "canceled" else "ended"


@dataclass
class Ledger:
    """What the clients of one scenario did and saw."""

    admitted: list[str] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    transcripts: dict[str, Transcript] = field(default_factory=dict)

    def submitted(self, body: dict[str, object], response: httpx.Response) -> bool:
        """Record a submission's answer; True when it was admitted."""
        if response.status_code == 202:
            self.admitted.append(str(body["task_id"]))
            return True
        self.refusals[str(response.json()["code"])] += 1
        return False

    def admit(self, client: Client, body: dict[str, object]) -> None:
        """Submit through a checked client and insist on 202."""
        response = client.submit(body)
        assert self.submitted(body, response), response.text

    def finished(self, task_id: str, transcript: Transcript) -> Transcript:
        self.transcripts[task_id] = transcript
        return transcript

    def read(self, client: Client, task_id: str) -> Transcript:
        """Read a task's whole stream through a checked client and record it."""
        return self.finished(task_id, client.transcript(task_id))

    def outcomes(self) -> Counter[str]:
        return Counter(outcome(t) for t in self.transcripts.values())

    def error_codes(self) -> Counter[str]:
        return Counter(
            str(t.terminal.data["code"])
            for t in self.transcripts.values()
            if t.terminal.event == "error"
        )

    def started(self) -> int:
        return sum(1 for t in self.transcripts.values() if t.started is not None)


def check_transcripts(ledger: Ledger) -> None:
    """Every admitted task was read to exactly one terminal event, and only those."""
    assert len(set(ledger.admitted)) == len(ledger.admitted), "a task id admitted twice"
    assert set(ledger.transcripts) == set(ledger.admitted), (
        "admitted tasks without a transcript: "
        f"{sorted(set(ledger.admitted) - set(ledger.transcripts))}"
    )
    for task_id, transcript in ledger.transcripts.items():
        check_transcript(transcript.frames, task_id=task_id)


def terminal_log_records(daemon: Daemon) -> dict[str, list[str]]:
    """Each task id's terminal log records, as ``ended`` / ``canceled`` / ``failed``."""
    found: dict[str, list[str]] = {}
    for record in daemon.log_records():
        kind = TERMINAL_LOG_EVENTS.get(str(record.get("event")))
        if kind is not None and record.get("job_id"):
            found.setdefault(str(record["job_id"]), []).append(kind)
    return found


def check_terminal_logs(daemon: Daemon, ledger: Ledger) -> None:
    """The daemon logged exactly one terminal record per admitted task, of its kind."""
    expected = {task_id: [outcome(t)] for task_id, t in ledger.transcripts.items()}

    def logged() -> dict[str, list[str]]:
        records = terminal_log_records(daemon)
        return {task_id: records.get(task_id, []) for task_id in expected}

    wait_until(lambda: logged() == expected, timeout=10, what="a terminal log record per task")


def check_counters(before: Metrics, after: Metrics, ledger: Ledger) -> None:
    """The task counters moved by exactly what the clients saw (ORCH-3028)."""

    def delta(name: str, **labels: str) -> int:
        return round(after.total(name, **labels) - before.total(name, **labels))

    outcomes = ledger.outcomes()
    assert delta("tasks_enqueued_total") == len(ledger.admitted)
    assert delta("tasks_started_total") == ledger.started()
    assert delta("tasks_canceled_total") == outcomes["canceled"]
    rejected = ledger.refusals + Counter(
        {code: n for code, n in ledger.error_codes().items() if code in EVICTION_CODES}
    )
    for code, count in rejected.items():
        assert delta("tasks_rejected_total", reason=code) == count, code
    assert delta("tasks_rejected_total") == sum(rejected.values())
    completed = "orchestratord_tasks_completed_total"
    assert delta(completed) == len(ledger.admitted)
    assert delta(completed, result="finished", code="ok") == outcomes["ended"]
    assert delta(completed, result="canceled") == outcomes["canceled"]
    for code, count in ledger.error_codes().items():
        result = "evicted" if code in EVICTION_CODES else "failed"
        assert delta(completed, result=result, code=code) == count, code
    refusals = "orchestratord_admission_refusals_total"
    for code, count in ledger.refusals.items():
        assert delta(refusals, reason=code) == count, code
    assert delta(refusals) == sum(ledger.refusals.values())
    assert delta("orchestratord_task_duration_seconds_count") == len(ledger.admitted)
    assert delta("orchestratord_queue_wait_seconds_count") == ledger.started()


def check_idle(client: Client, daemon: Daemon, fd_baseline: int) -> int:
    """Every pool idle with every slot free; descriptors back near the baseline.

    Returns the number of open descriptors once they are.
    """
    for pool in daemon.config["pools"]:
        pool_id = str(pool["id"])
        wait_until(partial(client.idle, pool_id), timeout=15, what=f"pool {pool_id} idle")
        health = client.health(pool_id)["metrics"]
        assert health["running"] == 0 and health["slots_free"] == health["slots_total"]
    client.close()

    def settled() -> int | None:
        count = open_fds(daemon.pid)
        return count if count <= fd_baseline + FD_SLACK else None

    fds: int = wait_until(
        settled,
        timeout=FD_SETTLE_S,
        interval=0.25,
        what=f"open descriptors back within {FD_SLACK} of {fd_baseline}",
    )
    return fds


def check_scenario(
    daemon: Daemon, ledger: Ledger, before: Metrics, fd_baseline: int
) -> dict[str, object]:
    """Everything :mod:`tests.faults.checks` promises, on a daemon that still runs.

    Returns the scenario's figures: tasks admitted and how they ended, refusals, tasks
    lost (admitted without exactly one terminal event: always 0 here, or a check failed)
    and the change in open descriptors.
    """
    check_transcripts(ledger)
    check_terminal_logs(daemon, ledger)
    client = daemon.client()
    client.wait_idle()
    check_counters(before, client.metrics(), ledger)
    fds = check_idle(client, daemon, fd_baseline)
    return {
        "admitted": len(ledger.admitted),
        "outcomes": dict(ledger.outcomes()),
        "refused": dict(ledger.refusals),
        "lost": len(ledger.admitted) - len(ledger.transcripts),
        "fd_delta": fds - fd_baseline,
    }
