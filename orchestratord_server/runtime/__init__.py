"""The runtime: carries out orchestrator_core's decisions with real engines and streams.

`Runtime` owns the core, the replicas (engine adapters, and engine processes it launched)
and the per-task transcripts; handlers call it, and it feeds the core every event (task
submitted, token arrived, engine finished or failed, time passed) and performs the actions
the core returns.
"""

from orchestratord_server.runtime.runtime import Runtime

__all__ = ["Runtime"]
