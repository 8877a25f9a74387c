"""Short-lived sessions with bounded KV residency (ORCH-3021, ORCH-3022, ORCH-3023).

A session lives until `ttl_ms` after its last use (sliding TTL, at most 10 minutes) and
for at most `max_turns` turns (at most 8): the turn after the last one starts a fresh
session, cold. Each ended turn records the replica it ran on (the session's affinity,
ORCH-3009) and the KV bytes it leaves resident there, computed by the caller's
bytes-per-token estimate.

The table is one insertion-ordered map in order of last use. The TTL is the same for all
sessions and the clock never goes back, so the head is both the least recently used
session and the first to expire: expiry and LRU eviction under the KV budget (or the
session-count bound) are O(1) each. Every forgotten session yields a `SessionEvicted`
decision so the server can tell the engine to drop the KV where it can. KV is never
migrated between replicas: a turn that lands elsewhere is cold (`kv_warmth=false`,
`kv_migrated=false`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator_core.decisions import EvictionReason, SessionEvicted
from orchestrator_core.replica import Replica
from orchestrator_core.specs import SessionConfig

Emit = Callable[[SessionEvicted], None]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What `GET /v1/sessions/{id}` returns (ORCH-2004)."""

    session_id: str
    ttl_ms_remaining: int
    turns: int
    kv_bytes: int
    kv_warmth: bool


class Session:
    """One session's turns, KV bytes and affinity (the replica and its epoch)."""

    __slots__ = (
        "epoch",
        "kv_bytes",
        "kv_warmth",
        "last_used_ms",
        "pool_id",
        "replica_id",
        "session_id",
        "turns",
    )

    def __init__(self, session_id: str, now_ms: int) -> None:
        self.session_id = session_id
        self.turns = 0
        self.last_used_ms = now_ms
        self.kv_bytes = 0
        self.kv_warmth = False
        self.pool_id: str | None = None
        self.replica_id: str | None = None
        self.epoch = 0


class SessionTable:
    """All live sessions, least recently used first."""

    __slots__ = ("_sessions", "config", "kv_bytes")

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.kv_bytes = 0

    def get(self, session_id: str, now_ms: int) -> Session | None:
        """The session if it exists and has not expired (no side effect)."""
        session = self._sessions.get(session_id)
        if session is None or session.last_used_ms + self.config.ttl_ms <= now_ms:
            return None
        return session

    def _forget(self, session: Session, reason: EvictionReason) -> SessionEvicted:
        del self._sessions[session.session_id]
        self.kv_bytes -= session.kv_bytes
        return SessionEvicted(
            session.session_id, reason, session.kv_bytes, session.pool_id, session.replica_id
        )

    def begin_turn(self, session_id: str, now_ms: int, emit: Emit) -> Session:
        """Count an admitted turn; expired or exhausted sessions restart cold."""
        sessions = self._sessions
        session = sessions.get(session_id)
        if session is not None:
            if session.last_used_ms + self.config.ttl_ms <= now_ms:
                emit(self._forget(session, EvictionReason.TTL))
                session = None
            elif session.turns >= self.config.max_turns:
                emit(self._forget(session, EvictionReason.TURNS))
                session = None
        if session is None:
            while len(sessions) >= self.config.max_sessions:
                emit(self._forget(next(iter(sessions.values())), EvictionReason.CAPACITY))
            session = sessions[session_id] = Session(session_id, now_ms)
        else:
            sessions.move_to_end(session_id)
        session.turns += 1
        session.last_used_ms = now_ms
        return session

    def record_end(
        self,
        session_id: str,
        pool_id: str,
        replica: Replica,
        kv_bytes: int,
        now_ms: int,
        emit: Emit,
    ) -> None:
        """A turn ended well: remember its replica and KV; enforce the KV budget."""
        session = self.get(session_id, now_ms)
        if session is None:
            return
        session.pool_id, session.replica_id = pool_id, replica.replica_id
        session.epoch = replica.epoch
        self.kv_bytes += kv_bytes - session.kv_bytes
        session.kv_bytes = kv_bytes
        session.last_used_ms = now_ms
        self._sessions.move_to_end(session_id)
        while self.kv_bytes > self.config.kv_budget_bytes:
            head = next(iter(self._sessions.values()))
            emit(self._forget(head, EvictionReason.KV_BUDGET))

    def expire(self, now_ms: int, emit: Emit) -> None:
        """Forget every session whose TTL has run out."""
        sessions = self._sessions
        cutoff = now_ms - self.config.ttl_ms
        while sessions:
            head = next(iter(sessions.values()))
            if head.last_used_ms > cutoff:
                break
            emit(self._forget(head, EvictionReason.TTL))

    def next_expiry_ms(self) -> int | None:
        """When the least recently used session expires, or None."""
        if not self._sessions:
            return None
        return next(iter(self._sessions.values())).last_used_ms + self.config.ttl_ms

    def info(self, session_id: str, now_ms: int) -> SessionInfo | None:
        """The session's public view, or None when unknown or expired."""
        session = self.get(session_id, now_ms)
        if session is None:
            return None
        remaining = session.last_used_ms + self.config.ttl_ms - now_ms
        return SessionInfo(
            session_id, remaining, session.turns, session.kv_bytes, session.kv_warmth
        )

    def export_state(self) -> list[list[Any]]:
        """Every session's fields, least recently used first."""
        return [
            [
                s.session_id,
                s.turns,
                s.last_used_ms,
                s.kv_bytes,
                s.kv_warmth,
                s.pool_id,
                s.replica_id,
                s.epoch,
            ]
            for s in self._sessions.values()
        ]

    def restore_state(self, data: list[list[Any]]) -> None:
        """Take back what `export_state` gave."""
        self._sessions.clear()
        self.kv_bytes = 0
        for session_id, turns, last_used, kv_bytes, warmth, pool_id, replica_id, epoch in data:
            session = Session(session_id, last_used)
            session.turns, session.kv_bytes, session.kv_warmth = turns, kv_bytes, warmth
            session.pool_id, session.replica_id, session.epoch = pool_id, replica_id, epoch
            self._sessions[session_id] = session
            self.kv_bytes += kv_bytes

    def delete(self, session_id: str, now_ms: int) -> SessionEvicted | None:
        """Forget a session on request (ORCH-2005); None when unknown or expired."""
        session = self.get(session_id, now_ms)
        if session is None:
            return None
        return self._forget(session, EvictionReason.DELETED)
