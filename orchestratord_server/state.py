"""What the handlers share for one running server: config, keys, metrics, the runtime
(on the state backend the config names: in memory, or shared through NATS JetStream).

The server's own registry holds the contract's families (ORCH-3028), the collector that
computes the scrape-time ones from the runtime's views, and prometheus_client's standard
process and Python collectors (`process_*`, `python_*`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from orchestratord_server.auth import KeyRing, Plane
from orchestratord_server.config import Config, StateBackend
from orchestratord_server.metrics import Metrics
from orchestratord_server.runtime import Runtime
from orchestratord_server.runtime.collector import ScrapeCollector
from orchestratord_server.versions import build_versions


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
        capacities = {pool.id: pool.queue.capacity for pool in self.config.pools}
        self.registry.register(
            ScrapeCollector(
                self.runtime.pool_views,
                capacities,
                build_versions(),
                self.metrics.scrape_entries(),
            )
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
