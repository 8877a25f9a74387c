"""Why a replica failed, read from what its engine left behind (ORCH-3053).

Driver resets and ECC errors must be told apart from an ordinary crash: a device with a
hardware fault fails again on every restart, and operators act differently on it. The
last lines the engine wrote (nothing else) are matched against the messages CUDA, the
NVIDIA driver, ROCm, llama.cpp, PyTorch and the C++ runtime print for each class. An
engine killed by a signal with nothing recognisable in its output is a plain crash: the
host's OOM killer and an operator's `kill -9` look the same from here.
"""

from __future__ import annotations

import re

from orchestrator_core import FailureClass

#: Checked in order: a hardware fault explains an out-of-memory message that follows it.
_SIGNATURES: tuple[tuple[FailureClass, re.Pattern[str]], ...] = (
    (
        FailureClass.ECC_ERROR,
        re.compile(r"\bECC\b.*\berror|uncorrectable ECC|double[- ]bit ECC", re.IGNORECASE),
    ),
    (
        FailureClass.DRIVER_RESET,
        re.compile(
            r"\bXid\b|fallen off the bus|driver (?:has been )?reset|device (?:was )?lost|"
            r"CUDA_ERROR_(?:LAUNCH_FAILED|ILLEGAL_ADDRESS|DEVICE_UNAVAILABLE)|"
            r"hipErrorLaunchFailure|NVRM:",
            re.IGNORECASE,
        ),
    ),
    (
        FailureClass.DEVICE_OOM,
        re.compile(
            r"CUDA out of memory|cudaMalloc failed|CUDA_ERROR_OUT_OF_MEMORY|"
            r"hipErrorOutOfMemory|out of memory on device|"
            r"failed to allocate (?:CUDA|ROCm|Vulkan|Metal)\w* buffer",
            re.IGNORECASE,
        ),
    ),
    (
        FailureClass.HOST_OOM,
        re.compile(r"std::bad_alloc|\bMemoryError\b|Cannot allocate memory", re.IGNORECASE),
    ),
)


def classify(output: str) -> FailureClass:
    """The class of a failure whose engine wrote ``output`` last."""
    for failure, signature in _SIGNATURES:
        if signature.search(output):
            return failure
    return FailureClass.CRASH
