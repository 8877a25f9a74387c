"""orchestratord's HTTP shell: the contracts served over connexion, wired into orchestrator_core.

The shell is thin by design: generated models validate what comes in, handlers translate
requests into core events and render the core's decisions, adapters talk to engines.
"""

import warnings

# connexion imports Starlette's test client at import time, which warns about httpx on
# every start of the daemon; the daemon never uses the test client.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
