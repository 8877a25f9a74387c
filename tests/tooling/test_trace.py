"""The traceability report: per ID its contract operations, code and tests; gaps listed."""

from __future__ import annotations

from pathlib import Path

from codegen import contracts, spec_extract, trace
from tests.tooling.support import req_id


def _report(repo: Path) -> tuple[trace.Trace, str]:
    collected = trace.collect(repo, contracts.load(repo))
    return collected, trace.render(spec_extract.load(repo), collected)


def _row(report: str, number: int) -> str:
    return next(line for line in report.splitlines() if line.startswith(f"| [{req_id(number)}]"))


def test_contract_operations_code_and_tests_are_traced_per_id(repo: Path) -> None:
    collected, report = _report(repo)
    assert [r.label for r in collected.contracts[req_id(101)]] == ["createThing", "deleteThing"]
    assert collected.code[req_id(101)] == ("orchestrator_core/things.py",)
    assert collected.tests[req_id(102)] == ("tests/test_things.py",)
    row = _row(report, 102)
    assert "| SHOULD/MUST |  | Creating \\| draining things is bounded |" in row
    assert "[createThing](../contracts/openapi/data.yaml)" in row
    assert "[drainThing](../contracts/openapi/control.yaml)" in row
    assert "[orchestrator_core/things.py](../orchestrator_core/things.py)" in row
    assert "[tests/test_things.py](../tests/test_things.py)" in row
    assert f"[{req_id(101)}](../.specs/orchestrator-spec.md#{req_id(101).lower()})" in report


def test_generated_code_is_not_counted_as_code(repo: Path) -> None:
    generated = repo / "orchestratord_server/generated"
    generated.mkdir()
    (generated / "operations.py").write_text(f"IDS = ({req_id(104)!r},)\n")
    collected, _ = _report(repo)
    assert req_id(104) not in collected.code


def test_summary_and_untested_list_put_seed_requirements_first(repo: Path) -> None:
    _, report = _report(repo)
    assert (
        "**Summary:** 4 requirements (2 seed); 4 in contracts, 2 named in code, 1 named in"
        " tests; 3 without a test (2 of them seed)."
    ) in report
    untested = report.split("## Without a test", 1)[1]
    positions = [untested.index(req_id(n)) for n in (101, 103, 104)]
    assert positions == sorted(positions)
    assert f"- ★ [{req_id(101)}]" in untested
    assert req_id(102) not in untested


def test_ids_named_in_code_but_absent_from_the_spec_are_listed(repo: Path) -> None:
    (repo / "orchestrator_core/typo.py").write_text(f'"""Implements {req_id(9999)}."""\n')
    collected, report = _report(repo)
    assert trace.unknown_ids(spec_extract.load(repo), collected) == {
        req_id(9999): ("orchestrator_core/typo.py",)
    }
    assert f"- {req_id(9999)}: orchestrator_core/typo.py" in report


def test_the_report_is_deterministic(repo: Path) -> None:
    assert _report(repo)[1] == _report(repo)[1]
