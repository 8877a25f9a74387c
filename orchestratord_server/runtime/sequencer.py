"""The order in which entries reach the core, and who carries out engine actions.

A `Sequencer` takes every entry (`entries`) the runtime produces and hands it to the
`Applier` (the runtime) in one total order, on every instance that shares the state. The
core is deterministic, so every instance's core decides the same from the same entries;
exactly one instance, the leader, also carries out the decisions that touch engines
(dispatches, aborts, preloads, probes) and produces the entries only a leader may
(tokens, finishes, failures, polls, preload and probe outcomes, reaps).

`LocalSequencer` is the embedded, in-memory one: one instance, always the leader, and
each entry applied the moment it is proposed. The NATS JetStream one
(`orchestratord_server.cluster`) orders entries through a replicated log.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final, Protocol

from orchestratord_server.runtime.entries import Entry


class Applier(Protocol):
    """Applies entries to the core and carries out what they decide."""

    def apply(self, entry: Entry, local: bool) -> object:
        """Apply one entry (``local``: this instance proposed it); the core's answer."""
        ...

    def leadership(self, leader: bool) -> None:
        """This instance became the leader (True) or stopped being it (False)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Everything applied so far, as JSON data."""
        ...

    def restore(self, data: Mapping[str, Any]) -> None:
        """Continue from a snapshot."""
        ...


class _Pending:
    """The answer of `Sequencer.send` for an entry that is not applied yet."""

    def __repr__(self) -> str:
        return "PENDING"


#: `send` hands this back when the entry will be applied later, in its turn.
PENDING: Final = _Pending()


class StateUnavailable(Exception):
    """The shared state cannot be written now (503 STATE_UNAVAILABLE, retriable).

    `maybe_written`: the write went out but was not confirmed in time, so it may still be
    stored and applied; otherwise nothing was written."""

    def __init__(self, message: str, *, maybe_written: bool = False) -> None:
        super().__init__(message)
        self.maybe_written = maybe_written

    def consequence(self, what: str) -> str:
        """What the client should know about ``what`` (an admission, a change)."""
        if self.maybe_written:
            return (
                f"{self}; the {what} may still take effect: retry with the same ids "
                "(for a task, 409 DUPLICATE_TASK then means it was admitted)"
            )
        return f"{self}; the {what} was not made, retry"


class Sequencer(Protocol):
    """Orders entries for the applier; the runtime's only way to change its core."""

    @property
    def shared(self) -> bool:
        """Other instances share the state: stopping this one hands its work over."""
        ...

    @property
    def leader(self) -> bool:
        """This instance carries out engine actions and may send leader entries."""
        ...

    @property
    def available(self) -> bool:
        """Entries can be ordered now (False while a shared log cannot be reached)."""
        ...

    def now_ms(self) -> int:
        """The clock of every entry's `now_ms`."""
        ...

    async def start(self) -> None:
        """Begin delivering entries to the applier it was made for."""
        ...

    async def leave(self) -> None:
        """Give up leadership for good, still delivering entries (a shared state only)."""
        ...

    async def stop(self) -> None:
        """Stop delivering entries (and give up leadership)."""
        ...

    async def propose(self, entry: Entry) -> object:
        """Order ``entry`` and return the core's answer once it is applied here."""
        ...

    def send(self, entry: Entry) -> object:
        """Order ``entry`` without waiting: its answer if it was applied at once, else
        `PENDING`."""
        ...


class LocalSequencer:
    """One instance, always the leader; each entry is applied as it is proposed, on the
    monotonic clock (also before `start`, which only hands over leadership)."""

    def __init__(self, applier: Applier) -> None:
        self._applier = applier

    @property
    def shared(self) -> bool:
        return False

    @property
    def leader(self) -> bool:
        return True

    @property
    def available(self) -> bool:
        return True

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    async def start(self) -> None:
        self._applier.leadership(True)

    async def leave(self) -> None:
        return None

    async def stop(self) -> None:
        self._applier.leadership(False)

    async def propose(self, entry: Entry) -> object:
        return self._applier.apply(entry, True)

    def send(self, entry: Entry) -> object:
        return self._applier.apply(entry, True)
