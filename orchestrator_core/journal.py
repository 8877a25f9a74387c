"""Recording a core's inputs, and replaying them into a fresh core.

A `Journal` given to an `Orchestrator` (its `InputSink`) receives the core's configuration
once and then every input event (`inputs`) as it arrives, before the core acts on it.
`apply` feeds one event to a core (the method it stands for). `replay` builds a
new core from the configuration and feeds it the events in order; because the core's state
is a function of exactly these, the replayed core reaches the same state and answers each
event with the same decisions. An input that raised (an unknown pool, an illegal
transition) raises again on replay and changes nothing, so it is replayed as such.

This is what lets several daemons share one replicated event log: a standby restores the
latest snapshot (`persistence`) and replays the log's tail from there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from orchestrator_core.errors import CoreError
from orchestrator_core.inputs import (
    Cancel,
    DeleteSession,
    Drain,
    Fail,
    Finish,
    Input,
    Poll,
    Preloaded,
    PreloadFailed,
    Probed,
    Reap,
    Reload,
    ShutDown,
    Submit,
    Token,
    Unwatched,
    Watched,
)
from orchestrator_core.orchestrator import Orchestrator
from orchestrator_core.specs import CoreConfig


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


_APPLY: dict[type, Callable[[Orchestrator, Any], object]] = {
    Submit: lambda core, e: core.submit(e.spec, e.now_ms),
    Cancel: lambda core, e: core.cancel(e.task_id, e.now_ms, e.reason),
    Unwatched: lambda core, e: core.unwatched(e.task_id, e.now_ms),
    Watched: lambda core, e: core.watched(e.task_id, e.now_ms),
    ShutDown: lambda core, e: core.shut_down(e.grace_ms, e.now_ms),
    Token: lambda core, e: core.on_token(e.task_id, e.now_ms),
    Finish: lambda core, e: core.on_finish(e.task_id, e.finish_reason, e.tokens_in, e.now_ms),
    Fail: lambda core, e: core.on_failure(e.task_id, e.kind, e.message, e.now_ms, e.failure_class),
    Poll: lambda core, e: core.poll(e.now_ms),
    Reap: lambda core, e: core.reap(e.task_id),
    DeleteSession: lambda core, e: core.delete_session(e.session_id, e.now_ms),
    Drain: lambda core, e: core.drain(e.pool_id, e.deadline_ms, e.now_ms),
    Reload: lambda core, e: core.reload(e.pool_id, e.model_ref, e.now_ms),
    Preloaded: lambda core, e: core.replica_preloaded(
        e.pool_id, e.replica_id, e.generation, e.report, e.now_ms
    ),
    PreloadFailed: lambda core, e: core.replica_preload_failed(
        e.pool_id, e.replica_id, e.generation, e.failure, e.now_ms
    ),
    Probed: lambda core, e: core.replica_probed(
        e.pool_id, e.replica_id, e.generation, e.probe, e.now_ms
    ),
}


def apply(core: Orchestrator, event: Input) -> object:
    """Feed `event` to `core` (the method it stands for) and return that method's result."""
    return _APPLY[type(event)](core, event)


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
    core = Orchestrator(
        config.pools,
        config.sessions,
        dedup_window=config.dedup_window,
        rate_limit_clients=config.rate_limit_clients,
        stream_grace_ms=config.stream_grace_ms,
        journal=journal,
    )
    return core, feed(core, events)
