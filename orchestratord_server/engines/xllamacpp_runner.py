"""Run llama.cpp's own HTTP server (through xllamacpp) as a standalone engine process.

Executed as ``python -m orchestratord_server.engines.xllamacpp_runner --model M ...`` by
:class:`~orchestratord_server.engines.llamacpp_process.LlamaCppProcess`. xllamacpp runs the
upstream ``llama-server`` routes inside this Python process; giving it a process of its own
lets the daemon supervise it, restart it and kill it like any other engine (ORCH-3054).

Protocol with the parent: once the model is loaded and the server listens, exactly one JSON
line is written to stdout: ``{"event": "ready", "url": ..., "engine_version": ...}``. Logs
go to stderr. SIGTERM or SIGINT ends the process with exit code 0; so does the death of the
parent process (Linux), so an engine never outlives the daemon that started it.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import signal
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xllamacpp_runner", description=__doc__)
    parser.add_argument("--model", required=True, help="path of the GGUF model file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--ctx", type=int, default=4096, help="total context, split evenly across the slots"
    )
    parser.add_argument("--parallel", type=int, default=1, help="number of slots")
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument(
        "--cache-ram-mib", type=int, default=0, help="host RAM for the prompt cache, 0 = off"
    )
    parser.add_argument(
        "--embedding",
        action="store_true",
        help="serve embeddings (mean pooling over the prompt) instead of completions",
    )
    parser.add_argument(
        "--tensor-split",
        type=_ratios,
        default=None,
        help="each visible device's share of the model, comma-separated (e.g. 0.6,0.4)",
    )
    return parser.parse_args(argv)


def _ratios(text: str) -> list[float]:
    """``0.6,0.4`` as ``[0.6, 0.4]``."""
    return [float(part) for part in text.split(",")]


def padded_split(ratios: Sequence[float], length: int) -> list[float]:
    """``ratios`` followed by zeros up to ``length``, the size of llama.cpp's
    per-device split array (its maximum number of devices)."""
    if len(ratios) > length:
        raise ValueError(
            f"--tensor-split: llama.cpp splits a model across at most {length} devices"
        )
    return [*ratios, *[0.0] * (length - len(ratios))]


def engine_version(xllamacpp_version: str, system_info: str) -> str:
    """Name the engine build: the wheel's version plus a fingerprint of the CPU kernels.

    The llama.cpp in the xllamacpp wheel reports ``b0-unknown`` as its build, and output
    differs between CPU instruction sets, so both parts are needed to pin a replica set.
    """
    cpu = hashlib.sha256(system_info.encode()).hexdigest()[:12]
    return f"xllamacpp-{xllamacpp_version}+cpu.{cpu}"


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    parent = os.getppid()
    _die_with_parent()
    # Blocked before the server threads start, so they inherit the mask and only
    # sigwait below ever sees these signals.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    if os.getppid() != parent:
        return 0

    # Imported only now: the library may start threads, which must inherit the mask.
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.cache_ram_mib = args.cache_ram_mib
    if args.tensor_split is not None:
        params.tensor_split = padded_split(args.tensor_split, len(params.tensor_split))
    if args.embedding:
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
    params.endpoint_metrics = True
    params.endpoint_props = True
    params.endpoint_slots = True
    params.ui = False
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        print(f"xllamacpp_runner: cannot start llama.cpp server: {exc}", file=sys.stderr)
        return 2

    ready = {
        "event": "ready",
        "url": server.listening_address,
        "engine_version": engine_version(xllamacpp.__version__, xllamacpp.get_system_info()),
    }
    print(json.dumps(ready), flush=True)
    signal.sigwait(_STOP_SIGNALS)
    sys.stdout.flush()
    sys.stderr.flush()
    # The server's threads hold no state worth saving; skip interpreter teardown, which
    # would wait on them.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
