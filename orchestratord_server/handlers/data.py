"""Data-plane handlers (OrchQueue v1): tasks, streams, cancel, sessions.

The contract, validation and auth of these routes are live; their behaviour is wired to
orchestrator_core by the data-plane issue (#5), and until then they answer 501.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from orchestratord_server.handlers.not_implemented import not_implemented
from orchestratord_server.state import ServerState

DATA_PLANE_ISSUE = 5


class DataPlane:
    """Handlers for data.yaml's operations (ORCH-2001..2005)."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    async def createTask(self, **_: Any) -> Response:
        return not_implemented("createTask", DATA_PLANE_ISSUE)

    async def streamTask(self, **_: Any) -> Response:
        return not_implemented("streamTask", DATA_PLANE_ISSUE)

    async def cancelTask(self, **_: Any) -> Response:
        return not_implemented("cancelTask", DATA_PLANE_ISSUE)

    async def getSession(self, **_: Any) -> Response:
        return not_implemented("getSession", DATA_PLANE_ISSUE)

    async def deleteSession(self, **_: Any) -> Response:
        return not_implemented("deleteSession", DATA_PLANE_ISSUE)
