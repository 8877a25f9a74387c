"""SLOs measured continuously and reported through the API (ORCH-3041, ORCH-2104).

Tasks that finish on the main daemon's pool count toward the SLO window of the pool and
of its replica set: GET /v1/replicasets shows the measured figures next to the
objectives, and /metrics exports slo_attainment_ratio per priority and objective.
"""

from __future__ import annotations

from tests.integration.support import POOL_ID, Client, task_body


def test_orch_3041_replica_sets_report_measured_figures_next_to_objectives(
    client: Client,
) -> None:
    for _ in range(3):
        transcript = client.run(task_body(max_tokens=8))
        assert transcript.terminal.event == "end"
    response = client.get("/v1/replicasets")
    assert response.status_code == 200
    [replica_set] = [s for s in response.json() if any(p["pool_id"] == POOL_ID for p in s["pools"])]
    interactive = replica_set["slo"]["interactive"]
    assert interactive["samples"] >= 3
    assert interactive["ttft_p95_objective_ms"] == 900
    assert interactive["tokens_64_p95_objective_ms"] == 2500
    assert interactive["error_ratio_objective"] == 0.005
    assert 0 <= interactive["ttft_p95_ms"] < 60_000
    assert interactive["tokens_64_p95_ms"] >= interactive["ttft_p95_ms"]
    assert interactive["error_ratio"] == 0
    assert 0 <= interactive["attainment_ratio"] <= 1
    assert "batch" not in replica_set["slo"], "only priorities with finished tasks are shown"


def test_orch_3041_metrics_export_attainment_per_objective(client: Client) -> None:
    """ORCH-3041: one ratio per priority and objective; throughput against the best
    per-task decode rate the pool has shown."""
    transcript = client.run(task_body(max_tokens=200))
    assert transcript.terminal.event == "end"
    metrics = client.metrics()
    labels = {"pool_id": POOL_ID, "priority": "interactive"}
    assert metrics.total("slo_attainment_ratio", objective="errors", **labels) == 1.0
    first_token = [
        s
        for s in metrics.samples
        if s.name == "slo_attainment_ratio"
        and s.labels.get("objective") == "first_token_latency"
        and s.labels.get("pool_id") == POOL_ID
    ]
    assert first_token and all(0 <= s.value <= 1 for s in first_token)
    throughput = [
        s
        for s in metrics.samples
        if s.name == "slo_attainment_ratio"
        and s.labels.get("objective") == "throughput"
        and s.labels.get("pool_id") == POOL_ID
    ]
    assert throughput and all(0 < s.value <= 1 for s in throughput), throughput
