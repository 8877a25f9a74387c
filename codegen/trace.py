"""The traceability report (`requirements/TRACEABILITY.md`): spec ID -> contract, code, tests.

For every requirement of the spec: the contract operations (and schemas) whose `x-req-id`
names it, the code files whose text names it (`ORCH-NNNN`), and the test functions that
prove it. A requirement counts as tested only when a test function names it: a function
pytest collects (`test*` at module level or in a `Test*` class without `__init__`, in a
`test_*.py` or `*_test.py` module under tests/) whose *name* holds the ID as `orch_NNNN`,
e.g. `test_orch_2102_after_a_reload_every_surface_serves_the_new_model_only` (a name may hold
several, `test_orch_2001_orch_2002_...`). Test modules are parsed
with `ast`, so docstrings, comments and support modules prove nothing. Requirements
without such a test are listed, seed ones first. IDs that the spec lacks make the trace
target fail, whether named in code or test text (`ORCH-NNNN`) or in a test function's name.
Links are relative to requirements/.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from codegen import layout
from codegen.contracts import ContractSet
from codegen.errors import CodegenError
from codegen.operations import req_ids
from codegen.spec_extract import Requirement, Spec

ID_PATTERN = re.compile(r"\bORCH-\d{4}\b")
# An ID in a test function's name: `orch_NNNN` between underscores (or the name's ends).
TEST_NAME_ID = re.compile(r"(?<![a-z0-9])orch_(\d{4})(?![0-9a-z])")
# pytest's defaults for what it collects (pyproject.toml does not change them).
TEST_MODULES = ("test_*.py", "*_test.py")
TEST_FUNCTION_PREFIX = "test"
TEST_CLASS_PREFIX = "Test"
_LINK_BASE = "../"


@dataclass(frozen=True)
class ContractRef:
    """A contract element naming an ID: an operation or a schema, and its contract file."""

    label: str
    path: str


@dataclass(frozen=True)
class Proof:
    """A test function proving an ID: its pytest node ID (`file::Class::function`) and file."""

    node: str
    path: str


@dataclass(frozen=True)
class Trace:
    """ID -> what names it: contracts, code text, proving test functions, test text."""

    contracts: Mapping[str, tuple[ContractRef, ...]]
    code: Mapping[str, tuple[str, ...]]
    tests: Mapping[str, tuple[Proof, ...]]
    test_text: Mapping[str, tuple[str, ...]]


def _files(root: Path, paths: Iterable[str], excludes: Iterable[str]) -> list[Path]:
    excluded = [root / e for e in excludes]
    out: list[Path] = []
    for rel in paths:
        base = root / rel
        candidates = [base] if base.is_file() else sorted(base.rglob("*.py"))
        for path in candidates:
            if "__pycache__" in path.parts or any(path.is_relative_to(e) for e in excluded):
                continue
            out.append(path)
    return out


def scan(
    root: Path, paths: Iterable[str], excludes: Iterable[str] = ()
) -> dict[str, tuple[str, ...]]:
    """ID -> sorted repo-relative .py files under `paths` whose text names it."""
    found: dict[str, set[str]] = {}
    for path in _files(root, paths, excludes):
        text = path.read_text(encoding="utf-8", errors="replace")
        for req_id in set(ID_PATTERN.findall(text)):
            found.setdefault(req_id, set()).add(path.relative_to(root).as_posix())
    return {k: tuple(sorted(v)) for k, v in sorted(found.items())}


def _is_test_class(node: ast.ClassDef) -> bool:
    """A `Test*` class pytest collects: one without an `__init__`."""
    return node.name.startswith(TEST_CLASS_PREFIX) and not any(
        isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "__init__"
        for n in node.body
    )


def collected_tests(body: Iterable[ast.stmt], prefix: str) -> Iterator[str]:
    """The pytest node IDs (`prefix::Class::function`) of the test functions in `body`."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name.startswith(TEST_FUNCTION_PREFIX):
                yield f"{prefix}::{node.name}"
        elif isinstance(node, ast.ClassDef) and _is_test_class(node):
            yield from collected_tests(node.body, f"{prefix}::{node.name}")


def _parse(path: Path, rel: str) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8", errors="replace"), filename=rel)
    except SyntaxError as exc:
        raise CodegenError(
            f"{rel}: cannot parse test module: {exc.msg} (line {exc.lineno})"
        ) from exc


def scan_test_functions(root: Path, paths: Iterable[str]) -> dict[str, tuple[Proof, ...]]:
    """ID -> the test functions under `paths` whose name holds it as `orch_NNNN`."""
    found: dict[str, set[Proof]] = {}
    for path in _files(root, paths, ()):
        if not any(fnmatch(path.name, pattern) for pattern in TEST_MODULES):
            continue
        rel = path.relative_to(root).as_posix()
        for node in collected_tests(_parse(path, rel).body, rel):
            for number in TEST_NAME_ID.findall(node.rsplit("::", 1)[1]):
                found.setdefault(f"ORCH-{number}", set()).add(Proof(node, rel))
    return {k: tuple(sorted(v, key=lambda p: p.node)) for k, v in sorted(found.items())}


def contract_refs(contracts: ContractSet) -> dict[str, tuple[ContractRef, ...]]:
    """ID -> operations (by operationId) and schemas whose `x-req-id` names it."""
    found: dict[str, set[ContractRef]] = {}
    for contract in contracts.contracts:
        for op in contract.operations():
            for req_id in req_ids(op.node, f"{contract.path} {op.operation_id}"):
                found.setdefault(req_id, set()).add(ContractRef(op.operation_id, contract.path))
        for name, schema in contract.schemas.items():
            for req_id in req_ids(schema, f"{contract.path} schema {name}"):
                found.setdefault(req_id, set()).add(ContractRef(f"schema {name}", contract.path))
    return {k: tuple(sorted(v, key=lambda r: (r.label, r.path))) for k, v in sorted(found.items())}


def collect(root: Path, contracts: ContractSet) -> Trace:
    """Scan the repository at `root`."""
    return Trace(
        contracts=contract_refs(contracts),
        code=scan(root, layout.CODE_PATHS, layout.CODE_EXCLUDES),
        tests=scan_test_functions(root, layout.TEST_PATHS),
        test_text=scan(root, layout.TEST_PATHS),
    )


def untested(spec: Spec, trace: Trace) -> list[Requirement]:
    """Requirements no test function proves, seed ones first, then by ID."""
    return sorted(
        (r for r in spec.requirements if r.id not in trace.tests), key=lambda r: (not r.seed, r.id)
    )


def unknown_ids(spec: Spec, trace: Trace) -> dict[str, tuple[str, ...]]:
    """IDs named by code, test text or test names (not contracts) that the spec lacks -> where."""
    named: dict[str, set[str]] = {}
    for mapping in (trace.code, trace.test_text):
        for req_id, files in mapping.items():
            named.setdefault(req_id, set()).update(files)
    for req_id, proofs in trace.tests.items():
        named.setdefault(req_id, set()).update(p.node for p in proofs)
    return {k: tuple(sorted(v)) for k, v in sorted(named.items()) if k not in spec.ids}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _links(items: Iterable[tuple[str, str]]) -> str:
    return "<br>".join(f"[{_cell(label)}]({_LINK_BASE}{path})" for label, path in items) or "—"


def _spec_link(req: Requirement) -> str:
    return f"[{req.id}]({_LINK_BASE}{layout.SPEC}#{req.anchor})"


def _row(req: Requirement, trace: Trace) -> str:
    contract = _links((ref.label, ref.path) for ref in trace.contracts.get(req.id, ()))
    code = _links((p, p) for p in trace.code.get(req.id, ()))
    tests = _links((p.node, p.path) for p in trace.tests.get(req.id, ()))
    seed = "★" if req.seed else ""
    return (
        f"| {_spec_link(req)} | {req.level} | {seed} | {_cell(req.title)} |"
        f" {contract} | {code} | {tests} |"
    )


def render(spec: Spec, trace: Trace) -> str:
    """The whole report as Markdown."""
    reqs = sorted(spec.requirements, key=lambda r: r.id)
    gaps = untested(spec, trace)
    seeds = sum(1 for r in reqs if r.seed)

    def count(mapping: Mapping[str, object]) -> int:
        return sum(1 for r in reqs if r.id in mapping)

    out = [
        "<!-- Generated by codegen. Do not edit: run `python xtask.py trace`. -->",
        "",
        "# Requirement traceability",
        "",
        f"Each requirement of [the spec]({_LINK_BASE}{layout.SPEC}) with the contract"
        " operations whose `x-req-id` names it, the code files whose text names it and the"
        " test functions that prove it: those whose name holds the ID as `orch_NNNN`"
        " (e.g. `test_orch_2102_...`). A mention in a docstring, a comment or a support"
        " module proves nothing. ★ marks the seed set.",
        "",
        f"**Summary:** {len(reqs)} requirements ({seeds} seed); {count(trace.contracts)} in"
        f" contracts, {count(trace.code)} named in code, {count(trace.tests)} proven by a test"
        f" function; {len(gaps)} without a test ({sum(1 for r in gaps if r.seed)} of them seed).",
        "",
        "| ID | Level | Seed | Title | Contract | Code | Tests |",
        "|---|---|---|---|---|---|---|",
    ]
    out += [_row(req, trace) for req in reqs]
    out += ["", "## Without a test", ""]
    if gaps:
        out += [f"- {'★ ' if r.seed else ''}{_spec_link(r)} — {r.title}" for r in gaps]
    else:
        out.append("Every requirement is proven by at least one test function.")
    unknown = unknown_ids(spec, trace)
    if unknown:
        out += ["", "## Named in code or tests but absent from the spec", ""]
        out += [f"- {req_id}: {', '.join(where)}" for req_id, where in unknown.items()]
    return "\n".join(out) + "\n"
