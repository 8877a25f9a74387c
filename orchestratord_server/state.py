"""What the handlers share for one running server: config, key rings, metrics registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from orchestratord_server.auth import KeyRing, Plane
from orchestratord_server.config import Config
from orchestratord_server.metrics import Metrics


@dataclass(slots=True)
class ServerState:
    """The state of one server instance; built once at start-up."""

    config: Config
    key_rings: dict[Plane, KeyRing] | None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    ready_pools: set[str] = field(default_factory=set)
    metrics: Metrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.registry)
