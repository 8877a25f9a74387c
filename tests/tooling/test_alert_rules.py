"""The example alerting rules (deploy/prometheus/alerts.yml) only use what the daemon serves.

Each rule is a well-formed Prometheus alerting rule (alert, expr, for, a severity label,
summary and description annotations); every metric its expression names is a family of
contracts/metrics.yaml (a histogram through its `_bucket`, `_sum` or `_count` series), a
standard `process_*` / `python_*` series or Prometheus' own `up`; every label it matches,
groups by or shows in an annotation is one those series carry. With `promtool` on the
PATH the rules are also checked and unit-tested by it (deploy/prometheus/alerts_test.yml).
The parsing and the table of served series are tests/tooling/promql_names.py, which the
dashboard test (tests/tooling/test_dashboard.py) uses too.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from tests.tooling.promql_names import RULE_LIST, RULES, labels_of, metric_names, promtool, unserved

SEVERITIES = frozenset({"critical", "warning", "info"})
_TEMPLATE_LABEL = re.compile(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)")


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
    assert metric_names(expr), expr
    shown = _TEMPLATE_LABEL.findall("".join(rule["annotations"].values()))
    problems = unserved(expr, shown)
    assert not problems, (rule["alert"], problems)


def test_the_name_extractor_skips_functions_keywords_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, pool_id) (rate(a_seconds_bucket{x="b c"}[5m])))'
        " > 1 and on (pool_id) b_total offset 5m or vector(1)"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total"}


def test_a_rule_naming_an_unknown_metric_is_caught() -> None:
    with pytest.raises(AssertionError, match="not_a_metric"):
        labels_of("not_a_metric")


def test_a_label_the_named_series_do_not_carry_is_caught() -> None:
    assert unserved('sum by (pool_id) (queue_depth{pool_id="a"})', ["pool_id"]) == []
    problems = unserved('sum by (nope) (queue_depth{color="a"}) + not_a_metric', ["shade"])
    assert len(problems) == 4, problems
    for word in ("not_a_metric", "color", "nope", "shade"):
        assert any(word in problem for problem in problems), (word, problems)


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    where = RULES.parent
    for command in (["check", "rules", RULES.name], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run(
            [promtool(), *command], cwd=where, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
