"""The runtime: carries out orchestrator_core's decisions with real engines and streams.

`Runtime` drives the core (which decides everything about tasks, pools and replicas), the
pool manager (the engines, by URL or run here) and the per-task transcripts. Handlers call
its intent-level methods and get plain views back (`PoolStatus`, `ReplicaSetStatus`, the
core's `Route` and `Readiness`); its parts are its own.
"""

from orchestratord_server.runtime.pool_manager import NotReloadable
from orchestratord_server.runtime.runtime import Runtime
from orchestratord_server.runtime.tasks import EngineOptions
from orchestratord_server.runtime.views import PoolStatus, ReplicaSetStatus

__all__ = ["EngineOptions", "NotReloadable", "PoolStatus", "ReplicaSetStatus", "Runtime"]
