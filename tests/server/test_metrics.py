"""/metrics serves exactly the metrics contract (ORCH-3028, contracts/metrics.yaml).

Event families are given one child each (with a value their closed label sets allow);
scrape-time families come from the real pool of the test config, as the core sees it.
"""

from __future__ import annotations

from collections import defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import CheckedClient
from .test_app import TASK

CONTRACT = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "contracts" / "metrics.yaml").read_text()
)
ENTRIES = {entry["name"]: entry for entry in CONTRACT["metrics"]}


def _sample_every_family(client: CheckedClient, every_closed_value: bool = False) -> None:
    """Give each event family one labelled child so its series appear in the scrape; with
    `every_closed_value`, one child per value of each closed label."""
    metrics = client.app_state.metrics
    for entry in CONTRACT["metrics"]:
        if entry.get("source") == "scrape":
            continue
        closed = entry.get("label_values", {})
        first = {label: closed.get(label, ["x"])[0] for label in entry["labels"]}
        children = [first]
        if every_closed_value:
            children += [first | {label: v} for label, values in closed.items() for v in values]
        for labels in children:
            family = metrics[entry["name"]].labels(**labels)
            if entry["type"] == "histogram":
                family.observe(3.0)
            elif entry["type"] == "counter":
                family.inc()
            else:
                family.set(0.5)


def _scrape(client: CheckedClient) -> dict[str, Any]:
    text = client.get("/metrics", key=None).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def _contract_samples(client: CheckedClient) -> list[tuple[str, dict[str, str], float]]:
    """(family, labels, value) of every sample of a contract family in a scrape."""
    families = _scrape(client)
    return [
        (entry["name"], dict(sample.labels), sample.value)
        for entry in CONTRACT["metrics"]
        for sample in families[entry["name"].removesuffix("_total")].samples
    ]


def test_orch_3028_every_contract_metric_is_served_with_exactly_its_labels(
    client: CheckedClient,
) -> None:
    _sample_every_family(client)
    families = _scrape(client)
    for entry in CONTRACT["metrics"]:
        base = entry["name"].removesuffix("_total")
        family = families[base]
        assert family.type == entry["type"], entry["name"]
        assert family.documentation == " ".join(entry["help"].split()), entry["name"]
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


def test_orch_3028_label_values_stay_closed_and_within_budget(client: CheckedClient) -> None:
    """Every value of a closed label is one the contract lists; across the whole scrape no
    label takes more distinct values than its budget, even with every closed value shown."""
    _sample_every_family(client, every_closed_value=True)
    client.post("/v1/tasks", json=TASK)  # a real refusal: its labels come from the core
    seen: dict[str, set[str]] = defaultdict(set)
    for name, labels, _ in _contract_samples(client):
        closed = ENTRIES[name].get("label_values", {})
        for label, value in labels.items():
            if label == "le":
                continue
            seen[label].add(value)
            if label in closed:
                assert value in closed[label], (name, label, value)
    for label, values in seen.items():
        assert len(values) <= CONTRACT["label_budget"][label], (label, sorted(values))
    assert seen["state"] >= {"preloading", "closed"}


def test_orch_3028_ms_histograms_resolve_one_millisecond_to_a_minute(
    client: CheckedClient,
) -> None:
    _sample_every_family(client)
    family = _scrape(client)["latency_first_token_ms"]
    bounds = sorted(float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket"))
    assert bounds[0] == 1.0
    assert 60000.0 in bounds
    assert 900.0 in bounds and 2500.0 in bounds


def test_orch_3028_seconds_histograms_resolve_one_millisecond_to_ten_minutes(
    client: CheckedClient,
) -> None:
    _sample_every_family(client)
    families = _scrape(client)
    for name in ("orchestratord_queue_wait_seconds", "orchestratord_task_duration_seconds"):
        bounds = sorted(
            float(s.labels["le"]) for s in families[name].samples if s.name.endswith("_bucket")
        )
        assert bounds[0] == 0.001, name
        assert bounds[-2:] == [600.0, float("inf")], name
        assert 0.9 in bounds and 2.5 in bounds, name


def test_orch_3028_pool_and_replica_families_describe_the_configured_pool(
    client: CheckedClient,
) -> None:
    """Not started, pool-a takes no work: not ready, no slots; its one replica r1 is
    preloading (1 for that state only), its breaker closed, never restarted."""
    samples = _contract_samples(client)

    def value(name: str, **labels: str) -> float:
        [found] = [v for n, ls, v in samples if n == name and labels.items() <= ls.items()]
        return found

    pool = {"engine": "llamacpp", "pool_id": "pool-a"}
    assert value("orchestratord_pool_ready", **pool) == 0
    assert value("orchestratord_pool_slots", **pool) == 0
    assert value("orchestratord_pool_free_slots", **pool) == 0
    assert value("orchestratord_pool_running_tasks", **pool) == 0
    assert value("orchestratord_pool_queue_capacity", **pool) == 256
    replica = {"pool_id": "pool-a", "replica_id": "r1"}
    states = {ls["state"]: v for n, ls, v in samples if n == "orchestratord_replica_state"}
    assert states == {s: float(s == "preloading") for s in states}
    assert set(states) == set(ENTRIES["orchestratord_replica_state"]["label_values"]["state"])
    assert value("orchestratord_replica_breaker_state", state="closed", **replica) == 1
    assert value("orchestratord_replica_breaker_state", state="open", **replica) == 0
    assert value("orchestratord_replica_restarts_total", **replica) == 0
    assert value("orchestratord_replica_info", engine_version="unknown", **replica) == 1


def test_orch_3028_refusals_are_counted_by_pool_and_reason(client: CheckedClient) -> None:
    """A task for the pool that has no live replica is refused by that pool; one for a
    model nobody serves is refused before a pool is chosen (empty pool_id)."""
    assert client.post("/v1/tasks", json=TASK).status_code == 503
    assert client.post("/v1/tasks", json={**TASK, "model_ref": "nope"}).status_code == 400
    refusals = {
        (ls["pool_id"], ls["reason"]): v
        for n, ls, v in _contract_samples(client)
        if n == "orchestratord_admission_refusals_total"
    }
    assert refusals == {("pool-a", "POOL_UNAVAILABLE"): 1, ("", "INVALID_PARAMS"): 1}


def test_build_info_names_the_installed_version(client: CheckedClient) -> None:
    [build] = [(ls, v) for n, ls, v in _contract_samples(client) if n == "orchestratord_build_info"]
    labels, value = build
    assert value == 1
    assert labels["version"] == metadata.version("orchestratord")
    assert labels["python_version"].count(".") == 2


def test_process_and_python_collectors_are_served(client: CheckedClient) -> None:
    """The standard collectors are on the daemon's own registry, not only the global one."""
    families = _scrape(client)
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["process_cpu_seconds"].type == "counter"
    assert "python_info" in families
    assert "python_gc_collections" in families
