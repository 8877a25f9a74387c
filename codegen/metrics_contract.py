"""The metrics contract (contracts/metrics.yaml) checked and rendered as canonical JSON.

The server registers its Prometheus metrics from the generated JSON, so what `/metrics`
serves cannot drift from the contract (ORCH-3028). Rendering refuses a contract whose
entries are malformed or that puts a forbidden label on a metric.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from codegen import layout
from codegen.errors import CodegenError

TYPES = frozenset({"counter", "gauge", "histogram"})


def _check(doc: Any, source: str) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), list):
        raise CodegenError(f"{source}: expected a mapping with a `metrics` list")
    forbidden = set(doc.get("forbidden_labels", []))
    budget = doc.get("label_budget", {})
    seen: set[str] = set()
    for index, metric in enumerate(doc["metrics"]):
        where = f"{source}: metrics[{index}]"
        if not isinstance(metric, dict):
            raise CodegenError(f"{where}: expected a mapping")
        name, kind, labels = metric.get("name"), metric.get("type"), metric.get("labels")
        if not isinstance(name, str) or name in seen:
            raise CodegenError(f"{where}: missing or repeated name {name!r}")
        seen.add(name)
        if kind not in TYPES:
            raise CodegenError(f"{where} ({name}): type must be one of {sorted(TYPES)}")
        if kind == "counter" and not name.endswith("_total"):
            raise CodegenError(f"{where} ({name}): a counter's exposed name ends in _total")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise CodegenError(f"{where} ({name}): labels must be a list of names")
        if bad := sorted(set(labels) & forbidden):
            raise CodegenError(f"{where} ({name}): forbidden labels {bad}")
        if unbudgeted := sorted(set(labels) - set(budget)):
            raise CodegenError(f"{where} ({name}): labels without a budget {unbudgeted}")
        if not isinstance(metric.get("help"), str) or not metric["help"].strip():
            raise CodegenError(f"{where} ({name}): help text is required")


def render(root: Path) -> str:
    """The checked contract as canonical JSON with its provenance."""
    path = root / layout.METRICS_CONTRACT
    raw = path.read_bytes()
    doc = yaml.safe_load(raw)
    _check(doc, layout.METRICS_CONTRACT)
    doc["x-generated"] = {
        "by": "codegen; do not edit: run `python xtask.py regen-openapi`",
        "source": layout.METRICS_CONTRACT,
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
