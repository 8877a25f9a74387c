"""Code generated from the OpenAPI contracts by codegen; never edited by hand.

`models` holds a pydantic model per contract schema, `operations` the operation table
(`OPERATIONS`), `openapi_data.json` / `openapi_control.json` the contracts as canonical
JSON for connexion, and `metrics_contract.json` the metrics contract the server registers.
Regenerate with `python xtask.py regen-openapi`.
"""
