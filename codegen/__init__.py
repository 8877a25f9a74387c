"""Contract-first code generation for orchestratord, driven by `python xtask.py`.

Each module has one job: load the contracts (`contracts`), render pydantic models
(`pydantic_models`), the operation table (`operations`) and canonical JSON
(`canonical_json`), extract the spec (`spec_extract`), report traceability (`trace`),
dump the config JSON Schema (`config_schema`), validate the contracts (`validate`), and
write or check every output the same way (`writer`). `tasks` ties them to xtask targets.
"""
