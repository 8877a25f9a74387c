"""The Grafana dashboard (deploy/grafana/orchestratord.json) only queries what the daemon serves.

Without a daemon (fast):

- the file is canonical JSON (2-space indent, ASCII) and a dashboard Grafana imports: a
  schema version, a uid, a `datasource` variable every panel and variable queries through,
  `instance` and `pool_id` variables read with `label_values` from real families;
- every panel has a unique id, a type, a title and a gridPos inside the 24-column grid,
  no two panels overlap, and every non-row panel has a unit and targets, each with an
  `expr` and a refId unique in its panel;
- every metric an expression names is a family of contracts/metrics.yaml (or a standard
  `process_*` / `python_*` series), and every label it matches, groups by or shows in its
  legend is one those series carry: the rule tests/tooling/test_alert_rules.py applies to
  the alerts, both through tests/tooling/promql_names.py;
- every `$variable` an expression uses is defined, and promtool parses every expression
  once the variables are filled in.

With a real daemon (`integration` marker; about five seconds): a daemon on the tiny
llama.cpp model runs tasks of both priorities to their end, has a task fail (its deadline
passes while it waits), one canceled and one refused with 429, then /metrics is scraped.
Every metric named by a dashboard panel or by an alert of deploy/prometheus/alerts.yml
must be on it, in two senses:

- declared: the scrape has its family's `# HELP` and `# TYPE` lines. prometheus_client
  writes those for every registered family, series or not, so this alone would only prove
  the name is registered;
- with samples: at least one series of it is in the scrape, which is what a panel plots.
  Families this daemon cannot have a series of are listed in NO_SERIES_HERE with the
  reason; the test insists that they are indeed empty here, so the list cannot go stale.

`up` is Prometheus' own series, not on /metrics; it is left out of the scrape check.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from tests.tooling.promql_names import (
    RULE_LIST,
    grouping_labels,
    labels_of,
    metric_names,
    promtool,
    selectors,
    unserved,
)
from tests.tooling.support import REPO

if TYPE_CHECKING:
    from tests.integration.support import Client

DASHBOARD_FILE = REPO / "deploy/grafana/orchestratord.json"
DASHBOARD_TEXT = DASHBOARD_FILE.read_text(encoding="utf-8")
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_TEXT)
GRID_COLUMNS = 24
PANEL_TYPES = frozenset({"row", "timeseries", "stat"})
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: Grafana's own variables, and what they stand for when promtool parses a query.
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")
_LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_LABEL_VALUES = re.compile(r"label_values\(\s*(?:(.+),\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)")


def _all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in panels:
        yield panel
        yield from _all_panels(panel.get("panels", []))


PANELS = list(_all_panels(DASHBOARD["panels"]))
QUERY_PANELS = [panel for panel in PANELS if panel["type"] != "row"]
TARGETS = [(panel, target) for panel in QUERY_PANELS for target in panel["targets"]]
VARIABLES = {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}


def _target_id(item: tuple[dict[str, Any], dict[str, Any]]) -> str:
    panel, target = item
    return f"{panel['id']}{target['refId']}"


# -- the file and the dashboard -------------------------------------------------------------


def test_the_file_is_canonical_json() -> None:
    """2-space indent, key order as written, ASCII only: diffs stay small and exact."""
    canonical = json.dumps(DASHBOARD, indent=2) + "\n"
    assert canonical == DASHBOARD_TEXT, "reformat: python -m json.tool --indent 2"


def test_it_is_an_importable_dashboard_with_a_datasource_variable() -> None:
    assert 36 <= DASHBOARD["schemaVersion"] <= 41
    assert DASHBOARD["uid"] == "orchestratord"
    assert DASHBOARD["title"]
    assert DASHBOARD["id"] is None  # Grafana assigns its own on import
    assert DASHBOARD["time"]["from"].startswith("now-")
    assert list(VARIABLES)[:1] == ["datasource"], "the datasource variable comes first"
    assert VARIABLES["datasource"]["type"] == "datasource"
    assert VARIABLES["datasource"]["query"] == "prometheus"
    for panel in QUERY_PANELS:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_every_panel_is_well_formed() -> None:
    ids = [panel["id"] for panel in PANELS]
    assert len(ids) == len(set(ids)), ids
    for panel in PANELS:
        assert isinstance(panel["id"], int) and panel["id"] > 0, panel
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert isinstance(panel["title"], str) and panel["title"].strip()
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}, panel["title"]
        assert all(isinstance(grid[key], int) and grid[key] >= 0 for key in grid)
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= GRID_COLUMNS
        if panel["type"] == "row":
            assert grid == {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": grid["y"]}, panel["title"]
            continue
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert re.fullmatch(r"[A-Z]", target["refId"]), panel["title"]
            assert isinstance(target["expr"], str) and target["expr"].strip(), panel["title"]


def test_panels_are_laid_out_in_order_without_overlapping() -> None:
    top_level = DASHBOARD["panels"]
    places = [(panel["gridPos"]["y"], panel["gridPos"]["x"]) for panel in top_level]
    assert places == sorted(places), "panels are listed top to bottom, left to right"
    taken: dict[tuple[int, int], str] = {}
    for panel in top_level:
        grid = panel["gridPos"]
        for y in range(grid["y"], grid["y"] + grid["h"]):
            for x in range(grid["x"], grid["x"] + grid["w"]):
                assert (x, y) not in taken, (panel["title"], taken.get((x, y)))
                taken[(x, y)] = panel["title"]


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    used = set().union(*(metric_names(target["expr"]) for _, target in TARGETS))
    assert {
        "queue_depth",
        "orchestratord_pool_queue_capacity",
        "orchestratord_queue_wait_seconds_bucket",
        "tasks_enqueued_total",
        "orchestratord_admission_refusals_total",
        "latency_first_token_ms_bucket",
        "latency_decode_ms_bucket",
        "orchestratord_task_duration_seconds_bucket",
        "orchestratord_tasks_completed_total",
        "tokens_out_total",
        "orchestratord_replica_state",
        "orchestratord_replica_breaker_state",
        "orchestratord_replica_restarts_total",
        "orchestratord_pool_ready",
        "orchestratord_pool_running_tasks",
        "orchestratord_pool_slots",
        "slo_attainment_ratio",
        "gpu_utilization",
        "vram_used_bytes",
        "kv_cache_usage_ratio",
    } <= used


# -- the queries ------------------------------------------------------------------------------


@pytest.mark.parametrize("item", TARGETS, ids=_target_id)
def test_every_metric_and_label_a_panel_uses_is_served(
    item: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    panel, target = item
    expr, where = target["expr"], (panel["title"], target["refId"])
    assert metric_names(expr), where
    legend = _LEGEND_LABEL.findall(target.get("legendFormat", ""))
    problems = unserved(expr, legend)
    assert not problems, (*where, problems)
    # After an aggregation only the labels it keeps are left to show.
    grouped = set(grouping_labels(expr))
    for label in legend:
        assert not grouped or label in grouped, (*where, label)


def test_every_variable_is_defined_and_label_values_reads_a_real_family() -> None:
    defined = set(VARIABLES) | set(BUILTIN_VARIABLES)
    for panel, target in TARGETS:
        for name in _VARIABLE.findall(target["expr"]):
            assert name in defined, (panel["title"], name)
    assert {"instance", "pool_id"} <= set(VARIABLES)
    for name in ("instance", "pool_id"):
        variable = VARIABLES[name]
        assert variable["type"] == "query" and variable["datasource"] == DATASOURCE
        assert variable["query"]["query"] == variable["definition"], name
        match = _LABEL_VALUES.fullmatch(variable["definition"])
        assert match, variable["definition"]
        selector, label = match.groups()
        assert label == name
        assert selector, f"{name}: label_values over a named family, not every series"
        (family,) = metric_names(selector)
        labels = labels_of(family)
        assert labels is not None and label in labels, (name, family)
        for _, matched in selectors(selector):
            assert set(matched) <= labels, (name, selector)
        for used in _VARIABLE.findall(selector):
            assert list(VARIABLES).index(used) < list(VARIABLES).index(name), (name, used)
        # "All" must also match an empty pool_id (refusals before a pool was chosen).
        assert variable["includeAll"] and variable["allValue"] == ".*", name


def _filled(expr: str) -> str:
    """The expression as Grafana sends it, with every variable set to All (or a duration)."""
    return _VARIABLE.sub(lambda m: BUILTIN_VARIABLES.get(m.group(1), ".*"), expr)


def test_promtool_parses_every_panel_query(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:panel_{_target_id(item)}", "expr": _filled(item[1]["expr"])}
        for item in TARGETS
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- against a real daemon ------------------------------------------------------------------

#: Queried families a CPU llama.cpp daemon has no series of, and why.
NO_SERIES_HERE = {
    "gpu_utilization": "NVML readings exist only for GPU pools; this pool is a CPU one",
    "vram_used_bytes": "NVML readings exist only for GPU pools; this pool is a CPU one",
    "kv_cache_usage_ratio": "llama.cpp reports no KV-cache usage (vLLM does)",
}
#: Prometheus' own series: an alert may use it, /metrics never has it.
PROMETHEUS_OWN = frozenset({"up"})


def _queried_names() -> set[str]:
    dashboard = set().union(*(metric_names(target["expr"]) for _, target in TARGETS))
    alerts = set().union(*(metric_names(rule["expr"]) for rule in RULE_LIST))
    return (dashboard | alerts) - PROMETHEUS_OWN


def _declarations(text: str) -> tuple[set[str], dict[str, str]]:
    """The families the exposition has a `# HELP` line for, and each one's `# TYPE`."""
    helped = set(re.findall(r"^# HELP ([A-Za-z_:][A-Za-z0-9_:]*) ", text, re.M))
    typed = dict(re.findall(r"^# TYPE ([A-Za-z_:][A-Za-z0-9_:]*) (\w+)$", text, re.M))
    return helped, typed


def _family_of(name: str, typed: dict[str, str]) -> str | None:
    """The declared family a series name belongs to: itself, the histogram of its
    `_bucket`, `_sum` or `_count`, or the counter of its `_total`; None when undeclared."""
    if name in typed:
        return name
    stem, _, suffix = name.rpartition("_")
    if typed.get(stem) == "histogram" and suffix in ("bucket", "sum", "count"):
        return stem
    if typed.get(stem) == "counter" and suffix == "total":
        return stem
    return None


def _exercise(client: Client) -> None:
    """Run tasks so that the event families get series: two finish (one per priority);
    with the one slot taken and the queue of one full, a task is refused; the running one
    is canceled, so the queued one starts after its wait (the start prediction's error);
    another's deadline passes while it waits behind it; then it is canceled too."""
    from tests.integration.support import long_task_body, task_body, wait_until

    for priority in ("interactive", "batch"):
        transcript = client.run(task_body(max_tokens=8, priority=priority))
        assert transcript.terminal.event == "end", transcript.events
    running = long_task_body()
    client.admit(running)
    wait_until(lambda: client.health()["metrics"]["running"] == 1, timeout=10, what="dispatch")
    queued = long_task_body()
    client.admit(queued)
    refused = client.submit(task_body())
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "ADMISSION_REJECT"
    assert client.cancel(running["task_id"]).status_code == 204
    assert client.transcript(running["task_id"]).terminal.data["finish_reason"] == "canceled"
    with client.open_stream(queued["task_id"]) as stream:
        assert stream.next_frame().event == "started"
    expiring = long_task_body(deadline_ms=300)
    client.admit(expiring)
    failed = client.transcript(expiring["task_id"]).terminal
    assert (failed.event, failed.data["code"]) == ("error", "DECODE_TIMEOUT"), failed.data
    assert client.cancel(queued["task_id"]).status_code == 204
    assert client.transcript(queued["task_id"]).terminal.data["finish_reason"] == "canceled"
    client.wait_idle()


@pytest.mark.integration
def test_every_queried_metric_is_on_a_real_daemons_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Imported here: they take seconds to import, which the daemon-less tests need not pay.
    from tests.integration.support import (
        Metrics,
        daemon_config,
        running_daemon,
        tiny_pool_config,
    )
    from tests.support import tiny_gguf

    # A long training context lets a task run long enough to hold the slot (as the
    # integration suite's long_model fixture does; tests/tooling cannot reach it).
    monkeypatch.setattr(tiny_gguf, "TRAIN_CTX", 65_536)
    model = tiny_gguf.write_tiny_gguf(tmp_path / "tiny-long.gguf")
    config = daemon_config(tiny_pool_config(model, slots=1, capacity=1))
    with running_daemon(tmp_path / "daemon", config) as daemon:
        client = daemon.client()
        _exercise(client)
        response = client.get("/metrics", key=None)
        assert response.status_code == 200, response.text
    text = response.text
    helped, typed = _declarations(text)
    sampled = {sample.name for sample in Metrics.parse(text).samples}

    queried = _queried_names()
    undeclared = sorted(n for n in queried if _family_of(n, typed) not in helped)
    assert not undeclared, f"queried but not declared (HELP and TYPE) on /metrics: {undeclared}"
    assert set(NO_SERIES_HERE) <= queried, "NO_SERIES_HERE names a family nobody queries"
    empty = sorted(n for n in queried - set(NO_SERIES_HERE) if n not in sampled)
    assert not empty, f"queried but without a series after the exercise: {empty}"
    stale = sorted(n for n in NO_SERIES_HERE if n in sampled)
    assert not stale, f"these have series now; drop them from NO_SERIES_HERE: {stale}"
