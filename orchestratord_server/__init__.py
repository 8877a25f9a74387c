"""orchestratord's HTTP shell: the contracts served over connexion, wired into orchestrator_core.

The shell is thin by design: generated models validate what comes in, handlers translate
requests into core events and render the core's decisions, adapters talk to engines.
"""
