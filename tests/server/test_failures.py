"""Replica failures told apart by what the engine wrote last (ORCH-3053)."""

from __future__ import annotations

import pytest

from orchestrator_core import FailureClass
from orchestratord_server.runtime.failures import classify


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.", "driver_reset"),
        ("CUDA error: CUDA_ERROR_ILLEGAL_ADDRESS at ggml-cuda.cu:1", "driver_reset"),
        ("RuntimeError: uncorrectable ECC error encountered", "ecc_error"),
        ("Xid 48: double-bit ECC error; CUDA out of memory", "ecc_error"),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "device_oom"),
        ("ggml_backend_cuda_buffer_type_alloc_buffer: cudaMalloc failed", "device_oom"),
        ("llama_model_load: failed to allocate CUDA0 buffer of size 8GiB", "device_oom"),
        ("terminate called after throwing an instance of 'std::bad_alloc'", "host_oom"),
        ("MemoryError", "host_oom"),
        ("Segmentation fault (core dumped)", "crash"),
        ("", "crash"),
    ],
)
def test_orch_3053_failures_are_classified_from_the_engine_output(
    output: str, expected: str
) -> None:
    """ORCH-3053: driver resets and ECC errors are reported as such, not as crashes."""
    assert classify(output) == FailureClass(expected)


def test_orch_3053_only_device_faults_are_driver_resets() -> None:
    assert {f for f in FailureClass if f.device_fault} == {
        FailureClass.DRIVER_RESET,
        FailureClass.ECC_ERROR,
    }
