"""Code generated from the OpenAPI contracts by codegen; never edited by hand.

The client's own copy of what codegen renders for the server: `models` (a pydantic model
per contract schema), `vocabulary` (the contracts' string enums) and `operations` (the
operation table), so that the client imports neither the server nor the core.
Regenerate with `python xtask.py regen-openapi`.
"""
