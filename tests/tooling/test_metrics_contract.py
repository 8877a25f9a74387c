"""The metrics contract is checked before it is generated (ORCH-3028)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from codegen import metrics_contract
from codegen.errors import CodegenError
from tests.tooling.support import FIXTURES, REPO


def _repo_with(tmp_path: Path, doc: dict[str, object]) -> Path:
    (tmp_path / "contracts").mkdir(parents=True)
    (tmp_path / "contracts/metrics.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


def _fixture() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load((FIXTURES / "metrics.yaml").read_text())
    return loaded


def test_the_real_contract_renders_with_provenance() -> None:
    rendered = json.loads(metrics_contract.render(REPO))
    assert rendered["x-generated"]["source"] == "contracts/metrics.yaml"
    assert "tasks_enqueued_total" in {m["name"] for m in rendered["metrics"]}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"labels": ["engine", "task_id"]}, "forbidden labels"),
        ({"labels": ["engine", "colour"]}, "without a budget"),
        ({"name": "things"}, "ends in _total"),
        ({"type": "summary"}, "type must be one of"),
        ({"help": " "}, "help text is required"),
        ({"name": "Things_total"}, "lower snake case"),
        ({"name": "orchestratord_things"}, "ends in _total"),
        ({"name": "orchestratord_things_total", "type": "gauge"}, "only a counter's name"),
        ({"name": "orchestratord_things_ms_total"}, "base units"),
        ({"source": "elsewhere"}, "source must be one of"),
        ({"label_values": {"colour": ["red"]}}, "label_values for labels"),
    ],
)
def test_malformed_entries_are_refused(
    tmp_path: Path, change: dict[str, object], fragment: str
) -> None:
    doc = _fixture()
    metrics = doc["metrics"]
    assert isinstance(metrics, list)
    metrics[0] = {**metrics[0], **change}
    with pytest.raises(CodegenError, match=fragment):
        metrics_contract.render(_repo_with(tmp_path, doc))


def test_a_repeated_name_is_refused(tmp_path: Path) -> None:
    doc = _fixture()
    metrics = doc["metrics"]
    assert isinstance(metrics, list)
    metrics.append(metrics[0])
    with pytest.raises(CodegenError, match="repeated"):
        metrics_contract.render(_repo_with(tmp_path, doc))


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("orchestratord_thing_latency", "ends in _seconds or _bytes"),
        ("orchestratord_thing_latency_ms", "base units"),
        ("orchestratord_thing_size_megabytes", "base units"),
        ("orchestratord_thing_bytes", "no histogram_buckets_bytes"),
        ("thing_latency_seconds", "no histogram_buckets_seconds"),
    ],
)
def test_a_histogram_is_named_for_its_unit_and_has_buckets_for_it(
    tmp_path: Path, name: str, fragment: str
) -> None:
    doc = _fixture()
    metrics = doc["metrics"]
    assert isinstance(metrics, list)
    metrics[1] = {**metrics[1], "name": name}
    with pytest.raises(CodegenError, match=fragment):
        metrics_contract.render(_repo_with(tmp_path, doc))


def test_prefixed_families_that_follow_the_naming_rules_render(tmp_path: Path) -> None:
    """A `_seconds` histogram with its bucket list, a `_total` counter and a scrape-time
    gauge; the spec's unprefixed `_ms` histogram keeps its name."""
    doc = _fixture()
    metrics = doc["metrics"]
    assert isinstance(metrics, list)
    doc["histogram_buckets_seconds"] = [0.001, 1, 600]
    metrics += [
        {**metrics[1], "name": "orchestratord_thing_duration_seconds"},
        {**metrics[0], "name": "orchestratord_things_done_total"},
        {**metrics[0], "name": "orchestratord_things", "type": "gauge", "source": "scrape"},
    ]
    rendered = json.loads(metrics_contract.render(_repo_with(tmp_path, doc)))
    assert [m["name"] for m in rendered["metrics"]] == [
        "things_total",
        "thing_latency_ms",
        "orchestratord_thing_duration_seconds",
        "orchestratord_things_done_total",
        "orchestratord_things",
    ]


@pytest.mark.parametrize(
    ("buckets", "fragment"),
    [
        ([1, 1, 2], "increasing order"),
        ([2, 1], "increasing order"),
        ([], "increasing order"),
        (["1"], "increasing order"),
        ("1,2", "increasing order"),
    ],
)
def test_a_histograms_own_buckets_must_increase(
    tmp_path: Path, buckets: object, fragment: str
) -> None:
    doc = _fixture()
    metrics = doc["metrics"]
    assert isinstance(metrics, list)
    metrics[1] = {**metrics[1], "buckets": buckets}
    with pytest.raises(CodegenError, match=fragment):
        metrics_contract.render(_repo_with(tmp_path, doc))


def test_a_histogram_with_its_own_signed_buckets_needs_no_unit_list(tmp_path: Path) -> None:
    """A signed error has negative bounds, which no unit's list has."""
    doc = _fixture()
    metrics = doc["metrics"]
    assert isinstance(metrics, list)
    signed = {**metrics[1], "name": "orchestratord_thing_error_seconds", "buckets": [-1, 0, 1]}
    metrics.append(signed)
    rendered = json.loads(metrics_contract.render(_repo_with(tmp_path, doc)))
    assert rendered["metrics"][-1]["buckets"] == [-1, 0, 1]
    metrics[-1] = {**metrics[0], "name": "orchestratord_things_total", "buckets": [1]}
    with pytest.raises(CodegenError, match="only a histogram has buckets"):
        metrics_contract.render(_repo_with(tmp_path / "counter", doc))


def test_closed_values_of_a_label_over_all_families_must_fit_its_budget(tmp_path: Path) -> None:
    """A scrape can show every closed value at once, so their union is what the budget
    bounds, not each family's own list."""
    doc = _fixture()
    metrics = doc["metrics"]
    assert isinstance(metrics, list)
    metrics[0] = {**metrics[0], "label_values": {"engine": ["llamacpp", "vllm", "tgi"]}}
    metrics[1] = {**metrics[1], "label_values": {"engine": ["triton"]}}
    (tmp_path / "fits").mkdir()
    metrics_contract.render(_repo_with(tmp_path / "fits", doc))
    metrics[1] = {**metrics[1], "label_values": {"engine": ["triton", "sglang"]}}
    (tmp_path / "over").mkdir()
    with pytest.raises(CodegenError, match=r"engine has 5 closed values .* budget of 4"):
        metrics_contract.render(_repo_with(tmp_path / "over", doc))
