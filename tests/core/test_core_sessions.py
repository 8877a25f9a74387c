"""Sessions: short-lived, bounded KV residency, info and delete.

ORCH-3021 (TTL <= 10 min, <= 8 turns), ORCH-3022 (KV bounded by LRU, pressure exported),
ORCH-2004 / ORCH-2005 (GET / DELETE decisions).
"""

from __future__ import annotations

import pytest
from corekit import admit, dispatches, orchestrator, pool_spec, task

from orchestrator_core import (
    ConfigError,
    ErrorKind,
    EvictionReason,
    FinishReason,
    Orchestrator,
    SessionConfig,
    SessionEvicted,
    SessionInfo,
)


def sid(n: int) -> str:
    return f"5e55e55e-0000-4000-8000-{n:012d}"


def run_turn(
    orch: Orchestrator, n: int, session: int, now: int, tokens: int = 10
) -> list[tuple[str, EvictionReason]]:
    """One turn, admitted, dispatched and ended at `now`; the evictions it caused."""
    admit(orch, task(n, session_id=sid(session)), now)
    actions = orch.poll(now)
    (dispatch,) = dispatches(actions)
    for _ in range(tokens):
        orch.on_token(dispatch.task_id, now)
    orch.on_finish(dispatch.task_id, FinishReason.STOP, tokens, now)
    return [(a.session_id, a.reason) for a in actions if isinstance(a, SessionEvicted)]


def evictions(orch: Orchestrator, now: int) -> list[tuple[str, EvictionReason]]:
    return [(a.session_id, a.reason) for a in orch.poll(now) if isinstance(a, SessionEvicted)]


def test_orch_3021_the_ttl_slides_with_use_and_expires() -> None:
    orch = orchestrator(sessions=SessionConfig(ttl_ms=1000))
    run_turn(orch, 1, 1, now=0)
    assert orch.session_info(sid(1), 400) == SessionInfo(sid(1), 600, 1, 0, False)
    run_turn(orch, 2, 1, now=500)
    info = orch.session_info(sid(1), 900)
    assert info is not None and (info.ttl_ms_remaining, info.turns) == (600, 2)
    assert orch.next_deadline_ms() == 1500
    assert evictions(orch, 1499) == []
    assert evictions(orch, 1500) == [(sid(1), EvictionReason.TTL)]
    assert orch.session_info(sid(1), 1500) is None


def test_orch_3021_an_expired_session_restarts_fresh_on_its_next_turn() -> None:
    orch = orchestrator(sessions=SessionConfig(ttl_ms=1000))
    run_turn(orch, 1, 1, now=0)
    assert run_turn(orch, 2, 1, now=5000) == [(sid(1), EvictionReason.TTL)]
    info = orch.session_info(sid(1), 5000)
    assert info is not None and info.turns == 1


def test_orch_3021_after_max_turns_the_next_turn_starts_a_fresh_session() -> None:
    orch = orchestrator(sessions=SessionConfig(max_turns=8))
    for n in range(8):
        run_turn(orch, n, 1, now=n)
    info = orch.session_info(sid(1), 8)
    assert info is not None and info.turns == 8
    assert run_turn(orch, 8, 1, now=9) == [(sid(1), EvictionReason.TURNS)]
    info = orch.session_info(sid(1), 9)
    assert info is not None and (info.turns, info.kv_warmth) == (1, False)


@pytest.mark.parametrize(
    "config",
    [
        SessionConfig(ttl_ms=600_001),
        SessionConfig(ttl_ms=0),
        SessionConfig(max_turns=9),
        SessionConfig(max_turns=0),
        SessionConfig(kv_budget_bytes=-1),
        SessionConfig(max_sessions=0),
    ],
)
def test_orch_3021_limits_beyond_the_hard_caps_are_refused(config: SessionConfig) -> None:
    with pytest.raises(ConfigError):
        Orchestrator([pool_spec()], config)


def test_orch_3022_kv_bytes_are_accounted_and_bounded_by_lru() -> None:
    orch = orchestrator(
        pool_spec(kv_bytes_per_token=100), sessions=SessionConfig(kv_budget_bytes=5000)
    )
    run_turn(orch, 1, 1, now=0)  # 20 tokens -> 2000 bytes
    run_turn(orch, 2, 2, now=1)
    assert (orch.kv_bytes, orch.kv_budget_bytes) == (4000, 5000)
    info = orch.session_info(sid(1), 1)
    assert info is not None and info.kv_bytes == 2000
    run_turn(orch, 3, 1, now=2)  # session 1 is now the most recently used
    run_turn(orch, 4, 3, now=3)
    actions = [a for a in orch.poll(3) if isinstance(a, SessionEvicted)]
    assert actions == [SessionEvicted(sid(2), EvictionReason.KV_BUDGET, 2000, "p0", "r0")]
    assert orch.kv_bytes == 4000


def test_orch_3022_a_session_larger_than_the_budget_is_not_kept() -> None:
    orch = orchestrator(
        pool_spec(kv_bytes_per_token=1000), sessions=SessionConfig(kv_budget_bytes=5000)
    )
    run_turn(orch, 1, 1, now=0, tokens=10)
    assert evictions(orch, 0) == [(sid(1), EvictionReason.KV_BUDGET)]
    assert orch.kv_bytes == 0


def test_the_session_table_is_bounded_in_count() -> None:
    orch = orchestrator(sessions=SessionConfig(max_sessions=2))
    assert run_turn(orch, 0, 0, now=0) == run_turn(orch, 1, 1, now=1) == []
    assert run_turn(orch, 2, 2, now=2) == [(sid(0), EvictionReason.CAPACITY)]


def test_orch_2005_delete_forgets_the_session_and_names_its_kv() -> None:
    orch = orchestrator(pool_spec(kv_bytes_per_token=10))
    run_turn(orch, 1, 1, now=0)
    evicted = orch.delete_session(sid(1), 1)
    assert evicted == SessionEvicted(sid(1), EvictionReason.DELETED, 200, "p0", "r0")
    assert orch.session_info(sid(1), 1) is None
    assert orch.delete_session(sid(1), 1) is None
    assert orch.kv_bytes == 0


def test_orch_2004_unknown_sessions_have_no_info() -> None:
    orch = orchestrator()
    assert orch.session_info(sid(7), 0) is None


def test_a_failed_turn_does_not_move_the_affinity() -> None:
    orch = orchestrator(pool_spec(replicas=[("r0", 1), ("r1", 1)]))
    run_turn(orch, 1, 1, now=0)
    admit(orch, task(9), 1)
    orch.poll(1)  # r0 busy now
    admit(orch, task(2, session_id=sid(1)), 1)
    (moved,) = dispatches(orch.poll(1))
    assert moved.replica_id == "r1"
    orch.on_failure(moved.task_id, ErrorKind.WORKER_RESET, "crash", 2)
    orch.cancel(task(9).task_id, 3)
    admit(orch, task(3, session_id=sid(1)), 4)
    (back,) = dispatches(orch.poll(4))
    assert (back.replica_id, back.kv_warmth) == ("r0", True)


def test_a_turn_that_outlives_its_session_records_nothing() -> None:
    orch = orchestrator(sessions=SessionConfig(ttl_ms=100))
    admit(orch, task(1, session_id=sid(1)), 0)
    (dispatch,) = dispatches(orch.poll(0))
    orch.on_finish(dispatch.task_id, FinishReason.STOP, 1, 500)
    assert orch.session_info(sid(1), 500) is None


def test_a_session_that_expires_while_its_turn_waits_is_not_revived() -> None:
    orch = orchestrator(sessions=SessionConfig(ttl_ms=100))
    admit(orch, task(1))
    orch.poll(0)  # the only slot is busy
    admit(orch, task(2, session_id=sid(1)), 0)
    orch.on_finish(task(1).task_id, FinishReason.STOP, 1, 200)
    (dispatch,) = dispatches(orch.poll(200))
    assert dispatch.task_id == task(2).task_id and not dispatch.kv_warmth
    assert orch.session_info(sid(1), 200) is None
