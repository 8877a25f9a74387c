"""Helpers for the tooling tests: a miniature repository to run codegen and xtask on.

Fixture requirement IDs live in fixtures/*.yaml and fixtures/spec.md (the trace scans .py
files only); Python code here builds them with `req_id(n)` and test function names with
`proof_name(n)` so that this repository's own traceability report never counts these files
as naming or proving a real requirement.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from codegen import naming, tasks
from codegen.contracts import Contract
from codegen.validate import Example

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def req_id(number: int) -> str:
    """A requirement ID such as the fixtures use, e.g. `req_id(101)`."""
    return f"ORCH-{number:04d}"


def proof_name(*numbers: int, what: str = "holds") -> str:
    """A test function name that proves fixture IDs: `proof_name(102)` is `test_orch_0102_holds`."""
    return "_".join(["test", *(f"orch_{number:04d}" for number in numbers), what])


FIXTURE_CONFIG = '''"""A fixture daemon configuration."""

from pydantic import BaseModel, ConfigDict, Field


class Server(BaseModel):
    """Where to listen."""

    model_config = ConfigDict(extra="forbid")

    port: int = Field(default=8080, ge=1, le=65535)


class Config(BaseModel):
    """The whole configuration."""

    model_config = ConfigDict(extra="forbid")

    name: str
    server: Server = Field(default_factory=Server)
'''


def build_repo(root: Path) -> Path:
    """Lay out a miniature repository at `root` and return it.

    It holds the inputs (contracts, spec, a Config model, a little code and a test) and
    xtask.py; `codegen` itself is imported from this repository (see `run_python`).
    """
    (root / "contracts/openapi").mkdir(parents=True)
    shutil.copy(FIXTURES / "data.yaml", root / "contracts/openapi/data.yaml")
    shutil.copy(FIXTURES / "control.yaml", root / "contracts/openapi/control.yaml")
    shutil.copy(FIXTURES / "metrics.yaml", root / "contracts/metrics.yaml")
    (root / ".specs").mkdir()
    shutil.copy(FIXTURES / "spec.md", root / ".specs/orchestrator-spec.md")
    shutil.copy(REPO / "xtask.py", root / "xtask.py")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    server = root / "orchestratord_server"
    server.mkdir()
    (server / "__init__.py").write_text('"""Fixture server package."""\n')
    (server / "config.py").write_text(FIXTURE_CONFIG)
    core = root / "orchestrator_core"
    core.mkdir()
    (core / "__init__.py").write_text('"""Fixture core package."""\n')
    (core / "things.py").write_text(f'"""Creates things ({req_id(101)}, {req_id(102)})."""\n')
    tests = root / "tests"
    tests.mkdir()
    (tests / "test_things.py").write_text(
        f'"""Things ({req_id(102)})."""\n\n\ndef {proof_name(102)}() -> None:\n    """Bounded."""\n'
    )
    return root


def run_python(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run python in `root`; `codegen` comes from this repository, everything else from root."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args], cwd=root, capture_output=True, text=True, env=env, check=False
    )


def run_xtask(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python xtask.py <args>` in `root`."""
    return run_python(root, "xtask.py", *args)


def model_class_for(contract: Contract, example: Example, models: ModuleType) -> type | None:
    """The generated class that an example's schema maps to (None: not a whole-body schema).

    Component schemas and $refs map to their class; an inline body schema maps to the class
    codegen names after its operation (`<OperationId>Request` / `Response<status>`).
    Examples of properties, parameters, headers and non-JSON bodies have no class.
    """
    pointer = example.schema_pointer
    node = contract.pointer(pointer)
    parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer[2:].split("/")]
    if "content" in parts and not parts[parts.index("content") + 1].endswith("json"):
        return None
    if "$ref" in node:
        return getattr(models, node["$ref"].rsplit("/", 1)[1])  # type: ignore[no-any-return]
    if parts[:2] == ["components", "schemas"] and len(parts) == 3:
        return getattr(models, parts[2])  # type: ignore[no-any-return]
    if parts[0] != "paths" or len(parts) < 4:
        return None
    stem = naming.pascal(contract.doc["paths"][parts[1]][parts[2]]["operationId"])
    if parts[3] == "requestBody":
        return getattr(models, f"{stem}Request")  # type: ignore[no-any-return]
    if parts[3] == "responses":
        return getattr(models, f"{stem}Response{parts[4]}")  # type: ignore[no-any-return]
    return None


def generated_sources(root: Path) -> dict[str, str]:
    """Every file regen-openapi would write for the repository at `root`, by path."""
    return {o.path: o.text for o in tasks.openapi_outputs(root)}
