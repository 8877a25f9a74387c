"""Config validation (ORCH-3030, ORCH-1101): examples validate, faults are named by path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from orchestratord_server.cli import main
from orchestratord_server.config import Config, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SCHEMA = json.loads((ROOT / "contracts" / "config.schema.json").read_text())
POOL = {
    "id": "p1",
    "engine": "llamacpp",
    "model": "m",
    "ctx": 2048,
    "devices": [0],
    "replicas": [{"id": "r1", "url": "http://127.0.0.1:9000"}],
}


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_orch_3030_example_validates_against_the_generated_schema(path: Path) -> None:
    """ORCH-3030: every example config passes the JSON Schema and the loader."""
    data = yaml.safe_load(path.read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    config, warnings = load_config(path)
    assert config.pools
    assert warnings == []


def test_schema_matches_the_models() -> None:
    """The committed schema is the one the config models produce."""
    provenance = {"$comment", "$schema"}
    committed = {k: v for k, v in SCHEMA.items() if k not in provenance}
    assert Config.model_json_schema() == committed


def test_orch_3030_broken_config_fails_naming_each_path() -> None:
    """ORCH-3030: one error per fault, each with its path."""
    bad = {
        "pools": [{**POOL, "engine": "mystery", "replicas": [{"id": "r1", "url": "nope"}]}],
        "server": {"port": 70000},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(bad)
    problems = "\n".join(caught.value.problems)
    assert "pools[0].engine" in problems
    assert "pools[0].replicas[0].url" in problems
    assert "server.port" in problems


def test_broken_config_fails_the_schema_too() -> None:
    bad = {"pools": [{**POOL, "queue": {"capacity": 0, "full_policy": "maybe"}}]}
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(bad))
    paths = {"/".join(str(p) for p in e.absolute_path) for e in errors}
    assert {"pools/0/queue/capacity", "pools/0/queue/full_policy"} <= paths


def test_unknown_field_is_an_error_in_strict_mode() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"pools": [{**POOL, "colour": "blue"}]})
    assert caught.value.problems == ["pools[0].colour: unknown field"]


def test_unknown_field_is_a_warning_in_compat_mode() -> None:
    config, warnings = parse_config({"mode": "compat", "pools": [{**POOL, "colour": "blue"}]})
    assert config.pools[0].id == "p1"
    assert warnings == ["pools[0].colour: unknown field (ignored in compat mode)"]


def test_compat_mode_still_rejects_wrong_values() -> None:
    with pytest.raises(ConfigError):
        parse_config({"mode": "compat", "pools": [{**POOL, "ctx": -1, "colour": "blue"}]})


def test_orch_1101_cpu_pool_needs_the_development_opt_in() -> None:
    """ORCH-1101: a CPU pool is refused unless allow_cpu_pools is set."""
    cpu = {**POOL, "device_kind": "cpu"}
    with pytest.raises(ConfigError) as caught:
        parse_config({"pools": [cpu]})
    assert "allow_cpu_pools" in caught.value.problems[0]
    config, _ = parse_config({"allow_cpu_pools": True, "pools": [cpu]})
    assert config.pools[0].device_kind.value == "cpu"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"devices": [0, 0]}, "listed once"),
        ({"devices": [0, 1], "tensor_split": [0.5]}, "one ratio per device"),
        ({"devices": [0, 1], "tensor_split": [0.7, 0.7]}, "sum to 1"),
        ({"replicas": [{"id": "r", "url": "http://h:1", "devices": [3]}]}, "outside"),
        (
            {"replicas": [{"id": "r", "url": "http://h:1"}, {"id": "r", "url": "http://h:2"}]},
            "unique",
        ),
    ],
)
def test_pool_consistency_rules(change: dict[str, object], fragment: str) -> None:
    """ORCH-3011, ORCH-3012: masks and splits must be coherent."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"pools": [{**POOL, **change}]})
    assert fragment in caught.value.problems[0]


def test_duplicate_pool_ids_are_refused() -> None:
    with pytest.raises(ConfigError, match="unique"):
        parse_config({"pools": [POOL, POOL]})


def test_session_limits_are_capped() -> None:
    """ORCH-3021: TTL at most 10 minutes, at most 8 turns."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"sessions": {"ttl_ms": 600_001, "max_turns": 9}})
    assert len(caught.value.problems) == 2


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"pools": [POOL]}))
    assert main(["--check-config", str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [{id: p1}]\n")
    assert main(["--check-config", str(bad)]) == 2
    assert "pools[0].engine" in capsys.readouterr().err


def test_unreadable_and_non_yaml_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("pools: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


@pytest.mark.parametrize("path", sorted(Path("examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_configuration_is_valid(path: Path) -> None:
    """The examples the docs point to load without a warning."""
    _, warnings = load_config(path)
    assert warnings == []


def _named_pools(*names: tuple[str, str, list[str]]) -> dict[str, Any]:
    pools = []
    for index, (model, served, aliases) in enumerate(names):
        pools.append(
            {
                "id": f"p{index}",
                "engine": "llamacpp",
                "model": model,
                "ctx": 1024,
                "device_kind": "cpu",
                "devices": [0],
                "served_name": served,
                "aliases": aliases,
                "replicas": [{"id": "r0", "url": "http://127.0.0.1:9"}],
            }
        )
    return {"allow_cpu_pools": True, "models": [], "pools": pools}


def test_one_model_name_never_stands_for_two_models() -> None:
    """Served names and aliases route OpenAI requests: a name shared by pools of two
    different models is refused; pools of one model may share names."""
    same = _named_pools(("sha256:" + "a" * 64, "m", ["x"]), ("sha256:" + "a" * 64, "m", []))
    Config.model_validate(same)
    clash = _named_pools(("sha256:" + "a" * 64, "m", []), ("sha256:" + "b" * 64, "n", ["m"]))
    with pytest.raises(ValidationError, match="different models under the name 'm'"):
        Config.model_validate(clash)


@pytest.mark.parametrize(
    ("engine", "workload", "message"),
    [("tgi", "embedding", "cannot serve embeddings"), ("llamacpp", "rerank", "rerank")],
)
def test_a_workload_its_engine_cannot_serve_is_refused(
    engine: str, workload: str, message: str
) -> None:
    config = _named_pools(("sha256:" + "a" * 64, "m", []))
    config["pools"][0] |= {"engine": engine, "workload": workload}
    with pytest.raises(ValidationError, match=message):
        Config.model_validate(config)
