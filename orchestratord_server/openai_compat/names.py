"""The model names OpenAI clients see and send.

A pool is listed under its `served_name`, or under the model it serves now when it has
none, and also answers to its `aliases` and to its model reference. Names belong to pools,
not to model files, so a reload (`POST /v1/pools/{id}/reload`) keeps a served name while
the model behind it changes. The configuration makes sure one name never stands for two
different models (`Config._check_model_names`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orchestrator_core import Route
from orchestratord_server.config import PoolConfig


@dataclass(frozen=True, slots=True)
class _PoolNames:
    served: str | None
    aliases: frozenset[str]


class ModelNames:
    """Served names and aliases per pool, matched against the pools' routes now."""

    def __init__(self, pools: Iterable[PoolConfig]) -> None:
        self._pools = {
            pool.id: _PoolNames(pool.served_name, frozenset(pool.aliases)) for pool in pools
        }

    def listed(self, route: Route) -> str:
        """The name a pool's model is listed under."""
        names = self._pools.get(route.pool_id)
        return names.served if names is not None and names.served else route.model_ref

    def listing(self, routes: Sequence[Route]) -> list[str]:
        """Every listed name once, in the order of the routes (config order)."""
        return list(dict.fromkeys(self.listed(route) for route in routes))

    def matches(self, name: str, route: Route) -> bool:
        """Whether ``name`` names the model of the route's pool."""
        names = self._pools.get(route.pool_id)
        if name in (route.model_ref, self.listed(route)):
            return True
        return names is not None and name in names.aliases

    def routes(self, name: str, routes: Sequence[Route]) -> tuple[Route, ...]:
        """The routes (pools) that ``name`` reaches."""
        return tuple(route for route in routes if self.matches(name, route))
