"""What instances sharing a state write and read: log records and snapshot task records.

Every instance must read back exactly what another wrote, or their cores would drift
apart: each entry kind round-trips through `cluster.wire`, token texts of any Unicode
survive, a record this version cannot read is refused (not half-applied), and a task's
record (request, placement, token texts, transcript) round-trips through a snapshot.
"""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_core import (
    CancelReason,
    Dispatch,
    Engine,
    ErrorKind,
    FinishReason,
    PreloadFailure,
    PreloadOutcome,
    Priority,
    ProbeReport,
    ReplicaReport,
    TaskSpec,
)
from orchestrator_core import inputs as core_inputs
from orchestratord_server.cluster import wire
from orchestratord_server.config import embedded_default
from orchestratord_server.generated.models import TaskRequest
from orchestratord_server.runtime import task_records
from orchestratord_server.runtime.entries import Admission, Entry, TokenOut
from orchestratord_server.runtime.tasks import EngineOptions, TaskContext
from orchestratord_server.transcripts import Transcript, emit, token_frame

TASK = str(uuid.uuid4())
REQUEST = TaskRequest.model_validate(
    {
        "task_id": TASK,
        "session_id": str(uuid.uuid4()),
        "workload": "completion",
        "model_ref": "m",
        "engine": "llamacpp",
        "ctx": 1024,
        "priority": "batch",
        "prompt": "Héllo ✓",
        "max_tokens": 16,
        "seed": 7,
        "deadline_ms": 30_000,
    }
)
SPEC = TaskSpec(
    task_id=TASK,
    engine=Engine.LLAMACPP,
    model_ref="m",
    ctx=1024,
    max_tokens=16,
    prompt_tokens=10,
    priority=Priority.BATCH,
    session_id=str(REQUEST.session_id),
    client_id="c",
    tenant_id="c",
    seed=7,
)
ENTRIES: list[Entry] = [
    Admission(SPEC, REQUEST, EngineOptions(stop=("\n",), temperature=0.5), True, 5),
    TokenOut(TASK, "tok", 6),
    core_inputs.Cancel(TASK, 7, CancelReason.DISCONNECT),
    core_inputs.Unwatched(TASK, 8),
    core_inputs.Watched(TASK, 9),
    core_inputs.Finish(TASK, FinishReason.LENGTH, 12, 10),
    core_inputs.Fail(TASK, ErrorKind.MIGRATION_FAILED, "why", 11, None),
    core_inputs.Poll(12),
    core_inputs.Reap(TASK),
    core_inputs.DeleteSession(str(REQUEST.session_id), 13),
    core_inputs.Drain("p", 1000, 14),
    core_inputs.Reload("p", "m2", 15),
    core_inputs.Preloaded("p", "r0", 3, ReplicaReport("b1", "sha256:00", 2), 16),
    core_inputs.PreloadFailed(
        "p", "r0", 4, PreloadFailure(PreloadOutcome.ENGINE_UNAVAILABLE, "down", True), 17
    ),
    core_inputs.Probed("p", "r0", 4, ProbeReport(True, True, kv_usage=0.5), 18),
]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: type(e).__name__)
def test_every_entry_kind_reads_back_equal_with_its_origin_and_term(entry: Entry) -> None:
    record = wire.decode(wire.encode(entry, "host-1", 9))
    assert record == wire.Record("host-1", 9, entry)


def test_a_term_record_reads_back() -> None:
    term = wire.Term(41, "host-2")
    assert wire.decode(wire.encode(term, "host-2", 41)).entry == term


@given(st.text())
def test_token_texts_of_any_unicode_survive(text: str) -> None:
    entry = TokenOut(TASK, text, 1)
    assert wire.decode(wire.encode(entry, "h", 1)).entry == entry


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"{}", b'{"o":"h","t":1,"e":{"@":"Nope"}}', b'{"o":"h","t":1,"e":[]}'],
)
def test_a_record_this_version_cannot_read_is_refused(data: bytes) -> None:
    with pytest.raises(wire.BadRecord):
        wire.decode(data)


def test_log_subjects_name_the_task_an_entry_is_about() -> None:
    assert wire.task_of(ENTRIES[0]) == TASK
    assert wire.task_of(TokenOut(TASK, "x", 1)) == TASK
    assert wire.task_of(core_inputs.Poll(1)) is None


def test_a_task_record_round_trips_through_a_snapshot() -> None:
    pool = embedded_default().pools[0]
    task = TaskContext(
        task_id=TASK,
        request=REQUEST,
        pool=pool,
        client_id="c",
        transcript=Transcript(keep_events=True),
        prompt_tokens=10,
        model_id="m",
        options=EngineOptions(stop=("x",)),
        dispatch=Dispatch(TASK, pool.id, "local-0", "m", "b1", "sha256:00", 7, False, 0, 0, 3),
        dispatched_ms=100,
        metrics_due_ms=1100,
    )
    emit(task.transcript, "started", {"task_id": TASK})
    task.transcript.append(token_frame("Hé", 0))
    task.texts.append("Hé")
    copy = task_records.load(json.loads(json.dumps(task_records.dump(task))), {pool.id: pool})
    assert task_records.dump(copy) == task_records.dump(task)
    assert copy.transcript.frames == task.transcript.frames
    assert copy.dispatch == task.dispatch
    assert copy.texts == ["Hé"]
