"""Memory headroom before an engine starts (ORCH-3003).

Before the pool manager starts an engine it estimates what the replica needs on each
device of its mask and compares it with what is free there; a replica that would run out
of memory fails its preload at once (outcome `insufficient_headroom`) instead of after a
long load. Needed per device: that device's share of the model artifact's size and of the
KV cache for ``ctx * slots`` tokens, plus the pool's safety margin. Free memory comes from
``nvidia-smi`` for GPU pools and from the host's ``MemAvailable`` for CPU pools; when it
cannot be read the check cannot be made and says so (the caller logs one warning).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
SMI_TIMEOUT_S = 5.0
#: The device key a CPU pool's memory is reported under.
HOST = -1


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A device without enough free memory for the replica."""

    device: int
    needed: int
    free: int

    def describe(self) -> str:
        where = "host memory" if self.device == HOST else f"device {self.device}"
        return (
            f"{where}: needs {self.needed} bytes, {self.free} free "
            f"(short by {self.needed - self.free})"
        )


def artifact_bytes(path: Path) -> int:
    """The size of a model file, or of every file under a model directory."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def needed_per_device(
    artifact: int,
    kv_bytes: int,
    margin: int,
    devices: Sequence[int],
    split: Sequence[float] | None,
) -> dict[int, int]:
    """Bytes each device needs: its share of weights and KV, plus the whole margin."""
    shares = split or [1 / len(devices)] * len(devices)
    return {
        device: int((artifact + kv_bytes) * share) + margin
        for device, share in zip(devices, shares, strict=True)
    }


def shortfalls(needed: Mapping[int, int], free: Mapping[int, int]) -> list[Shortfall]:
    """Devices whose free memory is below what is needed (unknown devices are skipped)."""
    return [
        Shortfall(device, amount, free[device])
        for device, amount in needed.items()
        if device in free and free[device] < amount
    ]


def parse_meminfo(text: str) -> int | None:
    """``MemAvailable`` in bytes, from /proc/meminfo's text."""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def parse_nvidia_smi(text: str) -> dict[int, int]:
    """``index, memory.free`` rows (MiB, no units) as bytes per device index."""
    free = {}
    for row in text.strip().splitlines():
        index, mebibytes = (field.strip() for field in row.split(","))
        free[int(index)] = int(mebibytes) * 1024 * 1024
    return free


async def free_memory(device_kind: str) -> dict[int, int] | None:
    """Free bytes per device (``HOST`` for CPU pools); None when it cannot be read."""
    if device_kind == "cpu":
        try:
            available = parse_meminfo(MEMINFO.read_text())
        except OSError:
            return None
        return None if available is None else {HOST: available}
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    process = await asyncio.create_subprocess_exec(
        smi,
        "--query-gpu=index,memory.free",
        "--format=csv,noheader,nounits",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    output: bytes | None = None
    try:
        async with asyncio.timeout(SMI_TIMEOUT_S):  # a wedged driver hangs nvidia-smi
            output, _ = await process.communicate()
    except TimeoutError:
        pass
    finally:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if output is None:
        return None
    if process.returncode != 0:
        return None
    try:
        return parse_nvidia_smi(output.decode())
    except ValueError:
        return None
