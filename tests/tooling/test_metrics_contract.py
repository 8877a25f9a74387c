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
    (tmp_path / "contracts").mkdir()
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
