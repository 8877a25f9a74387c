"""Fixtures for the tooling tests (helpers live in `support`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.tooling.support import build_repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh miniature repository (fixture contracts and spec, codegen, xtask, Config)."""
    return build_repo(tmp_path / "repo")


@pytest.fixture
def load_module() -> Iterator[Callable[[str, str], ModuleType]]:
    """Execute generated source as a throwaway module (registered while the test runs)."""
    names: list[str] = []

    def load(source: str, name: str) -> ModuleType:
        module = ModuleType(name)
        sys.modules[name] = module
        names.append(name)
        exec(compile(source, f"<{name}>", "exec"), module.__dict__)
        return module

    yield load
    for name in names:
        sys.modules.pop(name, None)
