"""The xtask targets: what each produces, and how each is written or checked.

A target renders its outputs from the repository at `root` and hands them to `writer`;
policy failures that do not stop generation (unknown IDs in code or tests, invalid
contracts) are returned as errors beside the file outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from codegen import (
    canonical_json,
    config_schema,
    contracts,
    layout,
    metrics_contract,
    operations,
    pydantic_models,
    pyformat,
    spec_extract,
    trace,
    validate,
    writer,
)
from codegen.errors import CodegenError

_GENERATED_INIT = '''"""Code generated from the OpenAPI contracts by codegen; never edited by hand.

`models` holds a pydantic model per contract schema, `operations` the operation table
(`OPERATIONS`), `openapi_data.json` / `openapi_control.json` the contracts as canonical
JSON for connexion, and `metrics_contract.json` the metrics contract the server registers.
Regenerate with `python xtask.py regen-openapi`.
"""
'''

_CLIENT_GENERATED_INIT = '''\
"""Code generated from the OpenAPI contracts by codegen; never edited by hand.

The client's own copy of what codegen renders for the server: `models` (a pydantic model
per contract schema), `vocabulary` (the contracts' string enums) and `operations` (the
operation table), so that the client imports neither the server nor the core.
Regenerate with `python xtask.py regen-openapi`.
"""
'''


@dataclass
class TargetResult:
    """Outcome of one target: per-file outcomes, errors, and a one-line note when fine."""

    name: str
    outcomes: list[writer.Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        """True when nothing is stale, missing, unexpected or wrong."""
        return not self.errors and not any(o.failed for o in self.outcomes)


def vocabulary_output(root: Path) -> writer.Output:
    """The core's vocabulary module: the contracts' string enums."""
    loaded = contracts.load(root)
    builder = pydantic_models.ModelBuilder(loaded.schemas)
    builder.add_components()
    header = contracts.python_header(loaded, "regen-openapi")
    text = builder.render_vocabulary(header)
    return writer.Output(layout.VOCABULARY, pyformat.ruff_format(text, root, layout.VOCABULARY))


def openapi_outputs(root: Path) -> list[writer.Output]:
    """models.py, operations.py, the canonical JSON contracts, the metrics contract and
    the package __init__ (the vocabulary module is written beside, in the core)."""
    loaded = contracts.load(root)
    builder = pydantic_models.ModelBuilder(loaded.schemas)
    builder.add_components()
    entries = operations.build(loaded, builder)
    header = contracts.python_header(loaded, "regen-openapi")
    outputs = [
        writer.Output(layout.GENERATED_INIT, _GENERATED_INIT),
        writer.Output(
            layout.MODELS, pyformat.ruff_format(builder.render(header), root, layout.MODELS)
        ),
        writer.Output(
            layout.OPERATIONS,
            pyformat.ruff_format(operations.render(entries, header), root, layout.OPERATIONS),
        ),
    ]
    outputs += [
        writer.Output(layout.canonical_json_path(c.name), canonical_json.render(c))
        for c in loaded.contracts
    ]
    outputs.append(writer.Output(layout.METRICS_JSON, metrics_contract.render(root)))
    return outputs


def client_outputs(root: Path) -> list[writer.Output]:
    """The light client's copy of the generated models, enums and operation table."""
    loaded = contracts.load(root)
    builder = pydantic_models.ModelBuilder(loaded.schemas)
    builder.add_components()
    entries = operations.build(loaded, builder)
    header = contracts.python_header(loaded, "regen-openapi")
    models = builder.render(header, vocabulary_module=".vocabulary")
    return [
        writer.Output(layout.CLIENT_GENERATED_INIT, _CLIENT_GENERATED_INIT),
        writer.Output(
            layout.CLIENT_MODELS, pyformat.ruff_format(models, root, layout.CLIENT_MODELS)
        ),
        writer.Output(
            layout.CLIENT_VOCABULARY,
            pyformat.ruff_format(builder.render_vocabulary(header), root, layout.CLIENT_VOCABULARY),
        ),
        writer.Output(
            layout.CLIENT_OPERATIONS,
            pyformat.ruff_format(
                operations.render(entries, header), root, layout.CLIENT_OPERATIONS
            ),
        ),
    ]


def regen_openapi(root: Path, check: bool) -> TargetResult:
    """Generated models, operation table and canonical JSON from the two contracts."""
    outputs = openapi_outputs(root)
    outcomes = writer.apply(root, outputs, check=check, owned_dir=layout.GENERATED_DIR)
    outcomes += writer.apply(
        root, client_outputs(root), check=check, owned_dir=layout.CLIENT_GENERATED_DIR
    )
    outcomes += writer.apply(root, [vocabulary_output(root)], check=check)
    return TargetResult("regen-openapi", outcomes)


def regen_schema(root: Path, check: bool, model_spec: str = layout.CONFIG_MODEL) -> TargetResult:
    """contracts/config.schema.json from the pydantic Config model."""
    text = config_schema.render(config_schema.load_model(model_spec))
    outcomes = writer.apply(root, [writer.Output(layout.CONFIG_SCHEMA, text)], check=check)
    return TargetResult("regen-schema", outcomes)


def spec_extract_target(root: Path, check: bool) -> TargetResult:
    """requirements/index.yaml from the spec."""
    spec = spec_extract.load(root)
    output = writer.Output(layout.REQUIREMENTS_INDEX, spec_extract.render_index(spec))
    outcomes = writer.apply(root, [output], check=check)
    return TargetResult("spec-extract", outcomes, note=f"{len(spec.requirements)} requirements")


def trace_target(root: Path, check: bool) -> TargetResult:
    """requirements/TRACEABILITY.md; IDs named in code or tests must exist in the spec."""
    spec = spec_extract.load(root)
    collected = trace.collect(root, contracts.load(root))
    output = writer.Output(layout.TRACEABILITY, trace.render(spec, collected))
    outcomes = writer.apply(root, [output], check=check)
    errors = [
        f"{req_id} is named in {', '.join(files)} but the spec lacks it"
        for req_id, files in trace.unknown_ids(spec, collected).items()
    ]
    untested = len(trace.untested(spec, collected))
    return TargetResult("trace", outcomes, errors, note=f"{untested} requirements without a test")


def contracts_target(root: Path, check: bool) -> TargetResult:
    """Validate the contracts (no output file); `check` is accepted for symmetry."""
    del check
    loaded = contracts.load(root)
    errors = validate.validate(loaded, spec_extract.load(root).ids)
    ops = sum(1 for c in loaded.contracts for _ in c.operations())
    return TargetResult("contracts", errors=errors, note=f"{ops} operations valid")


Target = Callable[[Path, bool], TargetResult]
GENERATORS: dict[str, Target] = {
    "regen-openapi": regen_openapi,
    "regen-schema": regen_schema,
    "spec-extract": spec_extract_target,
    "trace": trace_target,
}
CHECKS: dict[str, Target] = {"contracts": contracts_target, **GENERATORS}


def run(name: str, target: Target, root: Path, check: bool) -> TargetResult:
    """Run one target, turning a CodegenError into a failed result."""
    try:
        return target(root, check)
    except CodegenError as exc:
        return TargetResult(name, errors=[str(exc)])
