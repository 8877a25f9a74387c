"""The core stays pure: no I/O, clock, randomness, logging or asyncio (issue 4)."""

from __future__ import annotations

import ast
from pathlib import Path

import orchestrator_core

FORBIDDEN = {
    "time",
    "random",
    "asyncio",
    "logging",
    "socket",
    "threading",
    "datetime",
    "os",
    "subprocess",
    "io",
    "secrets",
    "uuid",
    "signal",
    "select",
    "selectors",
}
PACKAGE = Path(orchestrator_core.__file__).parent


def _imported_roots(source: str) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_module_of_the_core_imports_io_clock_randomness_or_logging() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) > 10
    for module in modules:
        bad = _imported_roots(module.read_text(encoding="utf-8")) & FORBIDDEN
        assert not bad, f"{module.name} imports {sorted(bad)}"


def test_the_scanner_sees_both_import_forms() -> None:
    assert _imported_roots("import time\nfrom logging import getLogger\n") == {"time", "logging"}


def test_the_package_is_typed_and_exports_what_it_lists() -> None:
    assert (PACKAGE / "py.typed").is_file()
    for name in orchestrator_core.__all__:
        assert hasattr(orchestrator_core, name), name
