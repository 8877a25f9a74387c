"""/metrics serves exactly the metrics contract (ORCH-3028, contracts/metrics.yaml)."""

from __future__ import annotations

from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import CheckedClient

CONTRACT = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "contracts" / "metrics.yaml").read_text()
)


def _sample_every_family(client: CheckedClient) -> None:
    """Give each family one labelled child so its series appear in the scrape."""
    metrics = client.app_state.metrics
    for entry in CONTRACT["metrics"]:
        family = metrics[entry["name"]].labels(**{label: "x" for label in entry["labels"]})
        if entry["type"] == "histogram":
            family.observe(3.0)
        elif entry["type"] == "counter":
            family.inc()
        else:
            family.set(0.5)


def _scrape(client: CheckedClient) -> dict[str, object]:
    text = client.get("/metrics", key=None).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_orch_3028_every_contract_metric_is_served_with_exactly_its_labels(
    client: CheckedClient,
) -> None:
    _sample_every_family(client)
    families = _scrape(client)
    for entry in CONTRACT["metrics"]:
        base = entry["name"].removesuffix("_total")
        family = families[base]
        assert family.type == entry["type"], entry["name"]
        label_sets = {
            frozenset(sample.labels) - {"le"}
            for sample in family.samples
            if not sample.name.endswith("_created")
        }
        assert label_sets == {frozenset(entry["labels"])}, entry["name"]


def test_orch_3028_no_series_carries_a_forbidden_label(client: CheckedClient) -> None:
    _sample_every_family(client)
    forbidden = set(CONTRACT["forbidden_labels"])
    for family in _scrape(client).values():
        for sample in family.samples:
            assert not forbidden & set(sample.labels), sample.name


def test_orch_3028_histograms_resolve_one_millisecond_to_a_minute(client: CheckedClient) -> None:
    _sample_every_family(client)
    family = _scrape(client)["latency_first_token_ms"]
    bounds = sorted(float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket"))
    assert bounds[0] == 1.0
    assert 60000.0 in bounds
    assert 900.0 in bounds and 2500.0 in bounds
