"""Drain and reload through the HTTP shell, without engines (ORCH-2101, ORCH-2102, ORCH-2103).

The pool of these tests is reached by URL (nothing listens there), so it never becomes
Ready; what is checked is what the control plane answers and what health reports.
"""

from __future__ import annotations

from orchestratord_server.config import EMBEDDED_MODEL_REF
from tests.server.conftest import CONTROL_KEY, CheckedClient


def test_orch_2101_drain_answers_202_and_health_reports_draining(client: CheckedClient) -> None:
    """ORCH-2101, ORCH-2103: a drain is accepted at once and shows in the pool's health."""
    with client._client:
        response = client.post(
            "/v1/pools/pool-a/drain", json={"deadline_ms": 5000}, key=CONTROL_KEY
        )
        assert response.status_code == 202
        body = response.json()
        assert body["pool_id"] == "pool-a"
        assert body["action"] == "drain"
        assert 0 < body["deadline_ms"] <= 5000
        health = client.get("/v1/pools/pool-a/health", key=CONTROL_KEY).json()
        assert health["draining"] is True
        assert health["ready"] is False


def test_orch_2101_a_second_drain_reports_the_earlier_deadline(client: CheckedClient) -> None:
    """ORCH-2101: draining again never extends the window; the answer says what applies."""
    with client._client:
        client.post("/v1/pools/pool-a/drain", json={"deadline_ms": 1000}, key=CONTROL_KEY)
        again = client.post("/v1/pools/pool-a/drain", json={"deadline_ms": 60_000}, key=CONTROL_KEY)
        assert again.status_code == 202
        assert again.json()["deadline_ms"] <= 1000


def test_orch_2101_drain_of_an_unknown_pool_is_404(client: CheckedClient) -> None:
    with client._client:
        response = client.post("/v1/pools/nope/drain", json={"deadline_ms": 0}, key=CONTROL_KEY)
        assert response.status_code == 404
        assert response.json()["code"] == "NOT_FOUND"


def test_orch_2101_drain_needs_a_deadline(client: CheckedClient) -> None:
    with client._client:
        response = client.post("/v1/pools/pool-a/drain", json={}, key=CONTROL_KEY)
        assert response.status_code == 400
        assert [e["loc"] for e in response.json()["errors"]] == ["body.deadline_ms"]


def test_orch_2102_reload_to_an_unknown_model_changes_nothing(client: CheckedClient) -> None:
    """ORCH-2102: a reference the daemon cannot resolve is refused before anything moves."""
    with client._client:
        response = client.post(
            "/v1/pools/pool-a/reload", json={"new_model_ref": "no-such-model"}, key=CONTROL_KEY
        )
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == "INVALID_PARAMS"
        assert body["errors"][0]["loc"] == "body.new_model_ref"
        assert "unknown model 'no-such-model'" in body["message"]
        health = client.get("/v1/pools/pool-a/health", key=CONTROL_KEY).json()
        assert health["desired_model_ref"] == health["applied_model_ref"] == "tiny"
        assert health["draining"] is False


def test_orch_2102_a_pool_of_url_engines_cannot_be_reloaded(client: CheckedClient) -> None:
    """ORCH-3031: the daemon only swaps models of engines it runs; others get a clear 400."""
    with client._client:
        response = client.post(
            "/v1/pools/pool-a/reload",
            json={"new_model_ref": EMBEDDED_MODEL_REF},
            key=CONTROL_KEY,
        )
        assert response.status_code == 400
        assert "reached by URL" in response.json()["message"]


def test_orch_2102_reload_of_an_unknown_pool_is_404(client: CheckedClient) -> None:
    with client._client:
        response = client.post(
            "/v1/pools/nope/reload", json={"new_model_ref": "tiny"}, key=CONTROL_KEY
        )
        assert response.status_code == 404
