"""The names and labels in a PromQL expression, checked against what the daemon serves.

Shared by tests/tooling/test_alert_rules.py and tests/tooling/test_dashboard.py. The
served series are the families of contracts/metrics.yaml (a histogram through its
`_bucket`, `_sum` and `_count` series, `_bucket` with `le`), each with the target labels
Prometheus adds, plus Prometheus' own `up` and the standard `process_*` / `python_*`
series. The parsing is a few regular expressions, enough for the expressions in deploy/;
`promtool` (see `promtool()`) is what checks they are valid PromQL.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from typing import Any

import pytest
import yaml

from tests.tooling.support import REPO

CONTRACT = yaml.safe_load((REPO / "contracts/metrics.yaml").read_text())
#: The example alerting rules, parsed into RULE_LIST.
RULES = REPO / "deploy/prometheus/alerts.yml"
#: Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})
#: Prefixes of the standard collector series, served with labels the contract does not list.
STANDARD_PREFIXES = ("process_", "python_")
#: PromQL words that are not metric names.
KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "bool", "offset", "inf", "nan"}
)  # fmt: skip
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")

STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)(?!\w)(\s*\()?")


def _families() -> dict[str, frozenset[str]]:
    """Every series name an expression may use, with the labels it carries."""
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


def labels_of(name: str) -> frozenset[str] | None:
    """The labels of a series an expression names; None for a standard series (any of its
    labels); AssertionError when it is not one the daemon serves."""
    if name in FAMILIES:
        return FAMILIES[name]
    if name.startswith(STANDARD_PREFIXES):
        return None  # standard collector series: any of their labels
    raise AssertionError(f"{name} is neither in contracts/metrics.yaml nor a standard series")


def blank_braces(match: re.Match[str]) -> str:
    """A string literal with its braces hidden, so a selector ends at its own `}`."""
    return match.group(0).replace("{", " ").replace("}", " ")


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects: identifiers that are not functions,
    keywords, label names (of matchers and grouping clauses) or parts of strings."""
    text = STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in KEYWORDS or word[0].isdigit():
            continue
        names.add(word)
    return names


def selectors(expr: str) -> list[tuple[str, list[str]]]:
    """Each `name{...}` selector of an expression: the name and the labels it matches on."""
    return [
        (name, MATCHER.findall(matchers))
        for name, matchers in SELECTOR.findall(STRING.sub(blank_braces, expr))
    ]


def grouping_labels(expr: str) -> list[str]:
    """The labels of an expression's `by`, `without`, `on`, `ignoring` and `group_*`
    clauses, in order, repeats included."""
    return [
        label
        for clause in GROUPING.findall(expr)
        for label in filter(None, (part.strip() for part in clause.split(",")))
    ]


def unserved(expr: str, shown: Iterable[str] = ()) -> list[str]:
    """What an expression uses that the daemon does not serve; empty when all is served.

    Every series name must be served (see `labels_of`), every label a selector matches on
    must be one its series carries, and every grouping label, and every label in `shown`
    (those an alert annotation or a panel legend prints), one that some series named in
    the expression carries (a standard series: at least the target labels).
    """
    problems: list[str] = []
    known: dict[str, frozenset[str] | None] = {}
    carried: set[str] = set()
    for name in sorted(metric_names(expr)):
        try:
            known[name] = labels_of(name)
        except AssertionError as error:
            problems.append(str(error))
            continue
        labels = known[name]
        carried |= labels if labels is not None else TARGET_LABELS
    for name, matched in selectors(expr):
        labels = known.get(name)  # None for a standard series, or an unknown one (above)
        for label in matched:
            if labels is not None and label not in labels:
                problems.append(f"{name}{{{label}=...}}: {name} has no label {label}")
    for label in grouping_labels(expr):
        if label not in carried:
            problems.append(f"grouping by {label}: no series named carries it")
    for label in shown:
        if label not in carried:
            problems.append(f"shows {label}: no series named carries it")
    return problems


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    assert set(doc) == {"groups"}
    rules = []
    for group in doc["groups"]:
        assert set(group) == {"name", "rules"}, group.get("name")
        assert group["rules"], group["name"]
        rules.extend(group["rules"])
    return rules


#: The alerting rules of deploy/prometheus/alerts.yml, every group's in order.
RULE_LIST = _rules()


def promtool() -> str:
    """promtool from scripts/engines/install-promtool.sh, else from the PATH."""
    unpacked = REPO / ".engines/prometheus/usr/bin/promtool"
    found = str(unpacked) if unpacked.is_file() else shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run `bash scripts/setup.sh --engines`")
    return found
