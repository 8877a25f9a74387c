"""What the handlers share for one running server: config, keys, metrics, the runtime
(on the state backend the config names: in memory, or shared through NATS JetStream)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from orchestratord_server.auth import KeyRing, Plane
from orchestratord_server.config import Config, StateBackend
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime import Runtime


@dataclass(slots=True)
class ServerState:
    """The state of one server instance; built once at start-up."""

    config: Config
    key_rings: dict[Plane, KeyRing] | None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    metrics: Metrics = field(init=False)
    runtime: Runtime = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.registry)
        state = self.config.state
        if state.backend is StateBackend.nats:
            from orchestratord_server.cluster.sequencer import factory

            self.runtime = Runtime(self.config, self.metrics, factory(state.nats))
        else:
            self.runtime = Runtime(self.config, self.metrics)
