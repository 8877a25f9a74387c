"""The light client distribution (client/pyproject.toml) stays in step with the full one."""

from __future__ import annotations

import tomllib
from typing import Any

from packaging.requirements import Requirement

from tests.tooling.support import REPO


def _project(path: str) -> dict[str, Any]:
    with (REPO / path).open("rb") as file:
        project: dict[str, Any] = tomllib.load(file)["project"]
    return project


def test_the_client_has_the_version_and_the_requirements_of_the_full_distribution() -> None:
    full, light = _project("pyproject.toml"), _project("client/pyproject.toml")
    assert light["version"] == full["version"]
    assert light["scripts"] == {"orchestratord": "orchestratord_client.cli:main"}
    full_requirements = {Requirement(r).name: r for r in full["dependencies"]}
    for requirement in light["dependencies"]:
        assert full_requirements[Requirement(requirement).name] == requirement
