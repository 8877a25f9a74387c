"""Operational routes of the daemon itself: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from orchestratord_server.generated.models import Liveness, Readiness
from orchestratord_server.state import ServerState

JSON = "application/json"


class Operations:
    """Handlers for getLivez, getReadyz and getMetrics."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    async def getLivez(self) -> Response:
        """The process answers: it is live."""
        return Response(Liveness(status="ok").model_dump_json(), media_type=JSON)

    async def getReadyz(self) -> Response:
        """200 once every preloading pool has finished its first attempt and at least one
        pool is Ready, else 503 (ORCH-3002); also 503 while a shared state (NATS) cannot
        be reached."""
        readiness = self._state.runtime.readiness()
        pools = [{"pool_id": pool_id, "ready": ready} for pool_id, ready in readiness.pools]
        serving = readiness.serving and self._state.runtime.available
        body = Readiness.model_validate({"ready": serving, "pools": pools})
        return Response(
            body.model_dump_json(), status_code=200 if serving else 503, media_type=JSON
        )

    async def getMetrics(self) -> Response:
        """Prometheus text exposition of this server's registry (ORCH-3028)."""
        self._state.runtime.refresh_gauges()
        return Response(generate_latest(self._state.registry), media_type=CONTENT_TYPE_LATEST)
