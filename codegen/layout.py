"""Where codegen reads its inputs and writes its outputs, relative to the repository root."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

CONTRACTS: Final = MappingProxyType(
    {
        "data": "contracts/openapi/data.yaml",
        "control": "contracts/openapi/control.yaml",
    }
)
SPEC: Final = ".specs/orchestrator-spec.md"
GENERATED_DIR: Final = "orchestratord_server/generated"
MODELS: Final = f"{GENERATED_DIR}/models.py"
OPERATIONS: Final = f"{GENERATED_DIR}/operations.py"
GENERATED_INIT: Final = f"{GENERATED_DIR}/__init__.py"
# The light client's own copy of the models, the enums and the operation table, so that
# `orchestratord_client` (its own distribution, client/pyproject.toml) never imports the
# server package.
CLIENT_GENERATED_DIR: Final = "orchestratord_client/generated"
CLIENT_MODELS: Final = f"{CLIENT_GENERATED_DIR}/models.py"
CLIENT_OPERATIONS: Final = f"{CLIENT_GENERATED_DIR}/operations.py"
CLIENT_VOCABULARY: Final = f"{CLIENT_GENERATED_DIR}/vocabulary.py"
CLIENT_GENERATED_INIT: Final = f"{CLIENT_GENERATED_DIR}/__init__.py"
VOCABULARY: Final = "orchestrator_core/vocabulary.py"
REQUIREMENTS_INDEX: Final = "requirements/index.yaml"
TRACEABILITY: Final = "requirements/TRACEABILITY.md"
CONFIG_SCHEMA: Final = "contracts/config.schema.json"
METRICS_CONTRACT: Final = "contracts/metrics.yaml"
METRICS_JSON: Final = f"{GENERATED_DIR}/metrics_contract.json"
CONFIG_MODEL: Final = "orchestratord_server.config:Config"
CONFIG_SOURCE: Final = "orchestratord_server/config.py"

# Trace scanning: where requirement IDs named by code and by tests are looked for.
CODE_PATHS: Final = (
    "orchestrator_core",
    "orchestratord_server",
    "codegen",
    "bench",
    "xtask.py",
)
CODE_EXCLUDES: Final = (GENERATED_DIR, CLIENT_GENERATED_DIR)
TEST_PATHS: Final = ("tests",)


def canonical_json_path(contract: str) -> str:
    """The generated canonical JSON of one contract, e.g. `.../openapi_data.json`."""
    return f"{GENERATED_DIR}/openapi_{contract}.json"
