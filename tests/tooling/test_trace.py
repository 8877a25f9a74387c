"""The traceability report: per ID its contract operations, code and tests; gaps listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen import contracts, spec_extract, trace
from codegen.errors import CodegenError
from tests.tooling.support import proof_name, req_id

THINGS = "tests/test_things.py"


def _report(repo: Path) -> tuple[trace.Trace, str]:
    collected = trace.collect(repo, contracts.load(repo))
    return collected, trace.render(spec_extract.load(repo), collected)


def _row(report: str, number: int) -> str:
    return next(line for line in report.splitlines() if line.startswith(f"| [{req_id(number)}]"))


def test_contract_operations_code_and_tests_are_traced_per_id(repo: Path) -> None:
    collected, report = _report(repo)
    assert [r.label for r in collected.contracts[req_id(101)]] == ["createThing", "deleteThing"]
    assert collected.code[req_id(101)] == ("orchestrator_core/things.py",)
    assert collected.tests[req_id(102)] == (trace.Proof(f"{THINGS}::{proof_name(102)}", THINGS),)
    row = _row(report, 102)
    assert "| SHOULD/MUST |  | Creating \\| draining things is bounded |" in row
    assert "[createThing](../contracts/openapi/data.yaml)" in row
    assert "[drainThing](../contracts/openapi/control.yaml)" in row
    assert "[orchestrator_core/things.py](../orchestrator_core/things.py)" in row
    assert f"[{THINGS}::{proof_name(102)}](../{THINGS})" in row
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
        "**Summary:** 4 requirements (2 seed); 4 in contracts, 2 named in code, 1 proven by a"
        " test function; 3 without a test (2 of them seed)."
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


def _write(repo: Path, rel: str, text: str) -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_mentions_outside_a_test_functions_name_prove_nothing(repo: Path) -> None:
    _write(
        repo,
        "tests/test_mentions.py",
        f'"""Proves {req_id(103)}."""\n\n# {req_id(103)}\n\n\n'
        "def helper_orch_0103() -> None:\n    pass\n\n\n"
        f'def test_streams() -> None:\n    """{req_id(103)}: things stream."""\n\n'
        f"    def {proof_name(103, what='nested')}() -> None:\n        pass\n",
    )
    _write(repo, "tests/support.py", f"def {proof_name(103)}() -> None:\n    pass\n")
    _write(repo, "tests/fakes/engine.py", f"def {proof_name(103)}() -> None:\n    pass\n")
    collected, report = _report(repo)
    assert req_id(103) not in collected.tests
    assert collected.test_text[req_id(103)] == ("tests/test_mentions.py",)
    assert f"- ★ [{req_id(103)}]" in report.split("## Without a test", 1)[1]


def test_test_classes_and_several_ids_per_name_are_proofs(repo: Path) -> None:
    both = proof_name(103, 104, what="streamed_and_listed")
    _write(
        repo,
        "tests/sub/test_more.py",
        f"class TestThings:\n    async def {both}(self) -> None:\n        pass\n\n\n"
        "class TestSkipped:\n    def __init__(self) -> None:\n        pass\n\n"
        f"    def {proof_name(101)}(self) -> None:\n        pass\n\n\n"
        f"class Helper:\n    def {proof_name(101, what='too')}(self) -> None:\n        pass\n",
    )
    collected, _ = _report(repo)
    proof = trace.Proof(f"tests/sub/test_more.py::TestThings::{both}", "tests/sub/test_more.py")
    assert collected.tests[req_id(103)] == collected.tests[req_id(104)] == (proof,)
    assert req_id(101) not in collected.tests


def test_only_orch_nnnn_between_word_breaks_counts(repo: Path) -> None:
    _write(
        repo,
        "tests/test_odd.py",
        "def test_borch_0103() -> None:\n    pass\n\n\n"
        "def test_orch_01034() -> None:\n    pass\n\n\n"
        "def test_orch_0104() -> None:\n    pass\n",
    )
    collected, _ = _report(repo)
    assert req_id(103) not in collected.tests
    assert [p.node for p in collected.tests[req_id(104)]] == ["tests/test_odd.py::test_orch_0104"]


def test_an_id_absent_from_the_spec_in_a_test_name_is_unknown(repo: Path) -> None:
    _write(repo, "tests/test_typo.py", f"def {proof_name(9998)}() -> None:\n    pass\n")
    collected, report = _report(repo)
    assert trace.unknown_ids(spec_extract.load(repo), collected) == {
        req_id(9998): (f"tests/test_typo.py::{proof_name(9998)}",)
    }
    assert f"- {req_id(9998)}: tests/test_typo.py::{proof_name(9998)}" in report


def test_a_test_module_that_does_not_parse_is_named(repo: Path) -> None:
    _write(repo, "tests/test_broken.py", "def test_(:\n")
    with pytest.raises(CodegenError, match=r"tests/test_broken\.py: cannot parse test module"):
        _report(repo)
