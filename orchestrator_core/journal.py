"""Recording a core's inputs, and replaying them into a fresh core.

A `Journal` given to an `Orchestrator` receives the core's configuration once and then
every input event (`inputs`) as it arrives, before the core acts on it. `replay` builds a
new core from the configuration and feeds it the events in order; because the core's state
is a function of exactly these, the replayed core reaches the same state and answers each
event with the same decisions. An input that raised (an unknown pool, an illegal
transition) raises again on replay and changes nothing, so it is replayed as such.

This is what lets several daemons share one replicated event log: a standby restores the
latest snapshot (`persistence`) and replays the log's tail from there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from orchestrator_core.errors import CoreError
from orchestrator_core.inputs import Input, apply

if TYPE_CHECKING:
    from orchestrator_core.orchestrator import CoreConfig, Orchestrator


class Journal:
    """The configuration and the input events of one core, in order."""

    __slots__ = ("config", "events")

    def __init__(self) -> None:
        self.config: CoreConfig | None = None
        self.events: list[Input] = []

    def begin(self, config: CoreConfig) -> None:
        """The core this journal records was built from `config`."""
        self.config = config
        self.events.clear()

    def record(self, event: Input) -> None:
        """One more input event."""
        self.events.append(event)


def feed(core: Orchestrator, events: Iterable[Input]) -> list[object]:
    """Apply `events` to `core` in order; each one's result, or the CoreError it raised."""
    results: list[object] = []
    for event in events:
        try:
            results.append(apply(core, event))
        except CoreError as exc:
            results.append(exc)
    return results


def replay(
    config: CoreConfig, events: Iterable[Input], journal: Journal | None = None
) -> tuple[Orchestrator, list[object]]:
    """A fresh core built from `config`, fed `events`: the core and each event's result."""
    from orchestrator_core.orchestrator import Orchestrator

    core = Orchestrator(
        config.pools,
        config.sessions,
        dedup_window=config.dedup_window,
        rate_limit_clients=config.rate_limit_clients,
        journal=journal,
    )
    return core, feed(core, events)
