"""The metrics contract (contracts/metrics.yaml) checked and rendered as canonical JSON.

The server registers its Prometheus metrics from the generated JSON, so what `/metrics`
serves cannot drift from the contract (ORCH-3028). Rendering refuses a contract whose
entries are malformed or that puts a forbidden label on a metric, a histogram without a
bucket list (its own `buckets`, else the one for its unit), and an operator family
(prefix `orchestratord_`) that breaks the Prometheus naming rules: base units only,
counters end `_total`, histograms end `_seconds` or `_bytes`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import yaml

from codegen import layout
from codegen.errors import CodegenError

TYPES = frozenset({"counter", "gauge", "histogram"})
#: Where a family's samples come from: registered and moved by events, or computed from
#: the core's views at each scrape.
SOURCES = frozenset({"events", "scrape"})
#: The prefix of the families that follow the Prometheus naming rules.
PREFIX = "orchestratord_"
#: What a prefixed histogram measures, by the suffix its name ends with.
HISTOGRAM_UNITS = ("seconds", "bytes")
#: Units that are not base units: a prefixed name may not carry them.
NON_BASE_UNITS = frozenset(
    {"ms", "millis", "milliseconds", "us", "microseconds", "ns", "nanoseconds", "minutes",
     "hours", "days", "kb", "mb", "gb", "kib", "mib", "gib", "kilobytes", "megabytes",
     "gigabytes", "percent"}
)  # fmt: skip
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _unit(name: str) -> str:
    """The unit suffix of a histogram's name (its last word)."""
    return name.rsplit("_", 1)[-1]


def _check_name(name: str, kind: str, where: str) -> None:
    """The Prometheus naming rules, for a family whose name has the prefix."""
    if not _NAME.fullmatch(name):
        raise CodegenError(f"{where}: a metric name is lower snake case")
    if not name.startswith(PREFIX):
        return
    words = name.removeprefix(PREFIX).split("_")
    if bad := sorted(set(words) & NON_BASE_UNITS):
        raise CodegenError(f"{where}: use base units (seconds, bytes), not {bad}")
    if kind != "counter" and name.endswith("_total"):
        raise CodegenError(f"{where}: only a counter's name ends in _total")
    if kind == "histogram" and _unit(name) not in HISTOGRAM_UNITS:
        raise CodegenError(f"{where}: a histogram's name ends in _seconds or _bytes")


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
        where = f"{where} ({name})"
        if kind not in TYPES:
            raise CodegenError(f"{where}: type must be one of {sorted(TYPES)}")
        if kind == "counter" and not name.endswith("_total"):
            raise CodegenError(f"{where}: a counter's exposed name ends in _total")
        _check_name(name, kind, where)
        if "buckets" in metric:
            _check_buckets(metric["buckets"], kind, where)
        elif kind == "histogram" and f"histogram_buckets_{_unit(name)}" not in doc:
            raise CodegenError(f"{where}: no histogram_buckets_{_unit(name)} for its unit")
        if metric.get("source", "events") not in SOURCES:
            raise CodegenError(f"{where}: source must be one of {sorted(SOURCES)}")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise CodegenError(f"{where}: labels must be a list of names")
        if bad := sorted(set(labels) & forbidden):
            raise CodegenError(f"{where}: forbidden labels {bad}")
        if unbudgeted := sorted(set(labels) - set(budget)):
            raise CodegenError(f"{where}: labels without a budget {unbudgeted}")
        if stray := sorted(set(metric.get("label_values", {})) - set(labels)):
            raise CodegenError(f"{where}: label_values for labels it does not have {stray}")
        if not isinstance(metric.get("help"), str) or not metric["help"].strip():
            raise CodegenError(f"{where}: help text is required")
    _check_closed_values_fit_budget(doc["metrics"], budget, source)


def _check_buckets(buckets: Any, kind: str, where: str) -> None:
    """A family's own bucket list: a histogram's, numbers in increasing order."""
    if kind != "histogram":
        raise CodegenError(f"{where}: only a histogram has buckets")
    numbers = isinstance(buckets, list) and all(
        isinstance(b, int | float) and not isinstance(b, bool) for b in buckets
    )
    if not numbers or not buckets or any(a >= b for a, b in itertools.pairwise(buckets)):
        raise CodegenError(f"{where}: buckets must be numbers in increasing order")


def _check_closed_values_fit_budget(
    metrics: list[dict[str, Any]], budget: dict[str, int], source: str
) -> None:
    """A label's closed values, over every family that lists them, fit its budget: a
    scrape can show all of them at once."""
    closed: dict[str, set[str]] = {}
    for metric in metrics:
        for label, values in metric.get("label_values", {}).items():
            closed.setdefault(label, set()).update(values)
    for label, values in sorted(closed.items()):
        if len(values) > budget[label]:
            raise CodegenError(
                f"{source}: label {label} has {len(values)} closed values over its families "
                f"but a budget of {budget[label]}"
            )


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
