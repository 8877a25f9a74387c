"""Render a contract as canonical JSON (sorted keys, 2-space indent) for the server to serve.

JSON holds no comments, so provenance goes in a top-level `x-generated` extension, which
OpenAPI allows and connexion ignores.
"""

from __future__ import annotations

import json

from codegen.contracts import Contract
from codegen.errors import CodegenError

PROVENANCE_KEY = "x-generated"


def render(contract: Contract) -> str:
    """The contract as canonical JSON text with its provenance, ending in a newline."""
    if PROVENANCE_KEY in contract.doc:
        raise CodegenError(f"{contract.path}: top-level key {PROVENANCE_KEY} is reserved")
    doc = {
        **contract.doc,
        PROVENANCE_KEY: {
            "by": "codegen; do not edit: run `python xtask.py regen-openapi`",
            "source": contract.path,
            "sha256": contract.sha256,
        },
    }
    try:
        text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise CodegenError(f"{contract.path}: not representable as JSON: {exc}") from exc
    return text + "\n"
