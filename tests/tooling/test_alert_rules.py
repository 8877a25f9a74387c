"""The example alerting rules (deploy/prometheus/alerts.yml) only use what the daemon serves.

Each rule is a well-formed Prometheus alerting rule (alert, expr, for, a severity label,
summary and description annotations); every metric its expression names is a family of
contracts/metrics.yaml (a histogram through its `_bucket`, `_sum` or `_count` series), a
standard `process_*` / `python_*` series or Prometheus' own `up`; every label it matches,
groups by or shows in an annotation is one those series carry. With `promtool` on the
PATH the rules are also checked and unit-tested by it (deploy/prometheus/alerts_test.yml).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.tooling.support import REPO

RULES = REPO / "deploy/prometheus/alerts.yml"
CONTRACT = yaml.safe_load((REPO / "contracts/metrics.yaml").read_text())
#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
SEVERITIES = frozenset({"critical", "warning", "info"})
#: PromQL words that are not metric names.
KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan"}
)  # fmt: skip
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(?!\w)(\s*\()?")
_TEMPLATE_LABEL = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)")


def _families() -> dict[str, frozenset[str]]:
    """Every series name a rule may use, with the labels it carries."""
    known: dict[str, frozenset[str]] = {"up": TARGET_LABELS}
    for entry in CONTRACT["metrics"]:
        labels = frozenset(entry["labels"]) | TARGET_LABELS
        if entry["type"] == "histogram":
            for suffix in HISTOGRAM_SERIES:
                known[entry["name"] + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            known[entry["name"]] = labels
    return known


FAMILIES = _families()


def _labels_of(name: str) -> frozenset[str] | None:
    """The labels of a series a rule names; None when it is not one the daemon serves."""
    if name in FAMILIES:
        return FAMILIES[name]
    if name.startswith(("process_", "python_")):
        return None  # standard collector series: any of their labels
    raise AssertionError(f"{name} is neither in contracts/metrics.yaml nor a standard series")


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects: identifiers that are not functions,
    keywords, label names (of matchers and grouping clauses) or parts of strings."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in KEYWORDS or word[0].isdigit():
            continue
        names.add(word)
    return names


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"}
    rules = []
    for group in doc["groups"]:
        assert set(group) == {"name", "rules"}, group.get("name")
        assert group["rules"], group["name"]
        rules.extend(group["rules"])
    return rules


RULE_LIST = _rules()


def test_rule_files_parse_into_named_groups_of_alerts() -> None:
    names = [rule["alert"] for rule in RULE_LIST]
    assert len(names) == len(set(names)), names
    for rule in RULE_LIST:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"Orchestratord[A-Za-z]+", rule["alert"])
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_the_rules_cover_what_an_operator_pages_on() -> None:
    used = set().union(*(metric_names(rule["expr"]) for rule in RULE_LIST))
    assert {
        "up",
        "queue_depth",
        "orchestratord_pool_free_slots",
        "orchestratord_replica_breaker_state",
        "orchestratord_tasks_completed_total",
        "slo_attainment_ratio",
        "orchestratord_replica_restarts_total",
    } <= used


@pytest.mark.parametrize("rule", RULE_LIST, ids=lambda rule: rule["alert"])
def test_every_metric_and_label_a_rule_uses_is_served(rule: dict[str, Any]) -> None:
    expr = rule["expr"]
    names = metric_names(expr)
    assert names, expr
    carried: set[str] = set()
    for name in names:
        labels = _labels_of(name)
        carried |= labels if labels is not None else set()
    for name, matchers in _SELECTOR.findall(_STRING.sub(_blank_braces, expr)):
        labels = _labels_of(name)
        for label in _MATCHER.findall(matchers):
            assert labels is None or label in labels, (rule["alert"], name, label)
    for clause in _GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in clause.split(","))):
            assert label in carried, (rule["alert"], label)
    shown = "".join(rule["annotations"].values())
    for label in _TEMPLATE_LABEL.findall(shown):
        assert label in carried, (rule["alert"], label)


def _blank_braces(match: re.Match[str]) -> str:
    """A string literal with its braces hidden, so a selector ends at its own `}`."""
    return match.group(0).replace("{", " ").replace("}", " ")


def test_the_name_extractor_skips_functions_keywords_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, pool_id) (rate(a_seconds_bucket{x="b c"}[5m])))'
        " > 1 and on (pool_id) b_total offset 5m or vector(1)"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total"}


def test_a_rule_naming_an_unknown_metric_is_caught() -> None:
    with pytest.raises(AssertionError, match="not_a_metric"):
        _labels_of("not_a_metric")


def _promtool() -> str:
    """promtool from scripts/engines/install-promtool.sh, else from the PATH."""
    unpacked = REPO / ".engines/prometheus/usr/bin/promtool"
    found = str(unpacked) if unpacked.is_file() else shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run `bash scripts/setup.sh --engines`")
    return found


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = _promtool()
    where = RULES.parent
    for command in (["check", "rules", RULES.name], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run(
            [promtool, *command], cwd=where, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
