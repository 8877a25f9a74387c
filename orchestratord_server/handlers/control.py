"""Control-plane handlers: drain, reload, pool health, replica sets.

Their routes, validation and auth are live; the behaviour arrives with the data-plane
issue (#5: health, replica sets) and the pool-manager issue (#6: drain, reload). Until
then they answer 501.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from orchestratord_server.handlers.not_implemented import not_implemented
from orchestratord_server.state import ServerState

POOL_MANAGER_ISSUE = 6
DATA_PLANE_ISSUE = 5


class ControlPlane:
    """Handlers for control.yaml's pool operations (ORCH-2101..2104)."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    async def drainPool(self, **_: Any) -> Response:
        return not_implemented("drainPool", POOL_MANAGER_ISSUE)

    async def reloadPool(self, **_: Any) -> Response:
        return not_implemented("reloadPool", POOL_MANAGER_ISSUE)

    async def getPoolHealth(self, **_: Any) -> Response:
        return not_implemented("getPoolHealth", DATA_PLANE_ISSUE)

    async def listReplicaSets(self, **_: Any) -> Response:
        return not_implemented("listReplicaSets", DATA_PLANE_ISSUE)
