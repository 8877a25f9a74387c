"""xtask end to end, on a miniature repository: regen, then check catching every staleness."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from codegen import layout
from tests.tooling.support import proof_name, req_id, run_xtask

GENERATED = (
    layout.GENERATED_INIT,
    layout.MODELS,
    layout.OPERATIONS,
    layout.canonical_json_path("data"),
    layout.canonical_json_path("control"),
    layout.CONFIG_SCHEMA,
    layout.REQUIREMENTS_INDEX,
    layout.TRACEABILITY,
)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _failed(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.fixture
def fresh(repo: Path) -> Path:
    """The miniature repository after `python xtask.py regen`."""
    _ok(run_xtask(repo, "regen"))
    return repo


def _snapshot(root: Path) -> dict[str, bytes]:
    return {rel: (root / rel).read_bytes() for rel in GENERATED}


def test_regen_writes_everything_and_check_then_passes(fresh: Path) -> None:
    out = _ok(run_xtask(fresh, "check"))
    for target in ("contracts", "regen-openapi", "regen-schema", "spec-extract", "trace"):
        assert f"✔ {target}" in out
    assert out.rstrip().endswith("check passed")


def test_regenerating_gives_identical_bytes(fresh: Path) -> None:
    before = _snapshot(fresh)
    out = _ok(run_xtask(fresh, "regen"))
    assert "wrote" not in out
    assert _snapshot(fresh) == before


def test_check_catches_an_edited_contract_and_changes_nothing(fresh: Path) -> None:
    contract = fresh / "contracts/openapi/data.yaml"
    contract.write_text(contract.read_text().replace("description: How many.", "description: N."))
    before = _snapshot(fresh)
    out = _failed(run_xtask(fresh, "check"))
    assert "✘ regen-openapi" in out
    assert "orchestratord_server/generated/models.py is stale" in out
    assert "orchestratord_server/generated/openapi_data.json is stale" in out
    assert '+    count: StrictInt = Field(ge=1, le=2147483647, description="N.")' in out
    assert "check failed: regen-openapi." in out
    assert _snapshot(fresh) == before


def test_check_fails_on_an_x_req_id_the_spec_lacks(fresh: Path) -> None:
    contract = fresh / "contracts/openapi/control.yaml"
    text = contract.read_text()
    contract.write_text(text.replace(f"x-req-id: [{req_id(102)}]", f"x-req-id: [{req_id(9999)}]"))
    _ok(run_xtask(fresh, "regen"))
    out = _failed(run_xtask(fresh, "check"))
    assert (
        f"contracts/openapi/control.yaml operation drainThing: x-req-id {req_id(9999)}"
        " is not in the spec"
    ) in out
    assert "check failed: contracts." in out


def test_check_catches_hand_edits_spec_config_and_trace_changes(fresh: Path) -> None:
    models = fresh / layout.MODELS
    models.write_text(models.read_text() + "# edited\n")
    spec = fresh / ".specs/orchestrator-spec.md"
    spec.write_text(spec.read_text().replace("Things stream", "Things are streamed"))
    config = fresh / "orchestratord_server/config.py"
    config.write_text(config.read_text().replace("default=8080", "default=9090"))
    (fresh / "tests/test_more.py").write_text(f"def {proof_name(104)}() -> None:\n    pass\n")
    out = _failed(run_xtask(fresh, "check"))
    assert "orchestratord_server/generated/models.py is stale (+0 -1 lines)" in out
    assert "requirements/index.yaml is stale" in out
    assert "contracts/config.schema.json is stale" in out
    assert "requirements/TRACEABILITY.md is stale" in out
    assert "check failed: regen-openapi, regen-schema, spec-extract, trace." in out


def test_an_id_named_in_code_but_absent_from_the_spec_fails_trace(fresh: Path) -> None:
    (fresh / "orchestrator_core/typo.py").write_text(f'"""Implements {req_id(9999)}."""\n')
    _ok(run_xtask(fresh, "spec-extract"))
    out = _failed(run_xtask(fresh, "trace"))
    assert f"{req_id(9999)} is named in orchestrator_core/typo.py but the spec lacks it" in out


def test_leftover_generated_files_fail_check(fresh: Path) -> None:
    (fresh / layout.GENERATED_DIR / "old_models.py").write_text("x = 1\n")
    out = _failed(run_xtask(fresh, "check"))
    assert "orchestratord_server/generated/old_models.py is unexpected" in out


def test_bad_input_is_reported_per_target_without_a_traceback(repo: Path) -> None:
    (repo / ".specs/orchestrator-spec.md").unlink()
    out = _failed(run_xtask(repo, "check"))
    assert "✘ spec-extract" in out
    assert ".specs/orchestrator-spec.md: spec not found" in out
    assert "✘ contracts" in out
