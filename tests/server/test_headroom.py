"""The memory headroom estimate made before an engine starts (ORCH-3003)."""

from __future__ import annotations

from pathlib import Path

from orchestratord_server.runtime.headroom import (
    HOST,
    Shortfall,
    artifact_bytes,
    needed_per_device,
    parse_meminfo,
    parse_nvidia_smi,
    shortfalls,
)

GIB = 1 << 30


def test_orch_3003_one_device_needs_weights_kv_and_the_margin() -> None:
    assert needed_per_device(4 * GIB, 2 * GIB, GIB // 2, [HOST], None) == {HOST: 6 * GIB + GIB // 2}


def test_orch_3003_a_split_gives_each_device_its_share_and_the_whole_margin() -> None:
    needed = needed_per_device(6 * GIB, 3 * GIB, GIB, [0, 1], [2 / 3, 1 / 3])
    assert needed == {0: 7 * GIB, 1: 4 * GIB}
    assert needed_per_device(6 * GIB, 0, 0, [0, 1], None) == {0: 3 * GIB, 1: 3 * GIB}


def test_orch_3003_a_device_short_of_memory_is_named_with_both_figures() -> None:
    short = shortfalls({0: 10 * GIB, 1: 2 * GIB}, {0: 8 * GIB, 1: 4 * GIB})
    assert short == [Shortfall(0, 10 * GIB, 8 * GIB)]
    assert short[0].describe() == (
        f"device 0: needs {10 * GIB} bytes, {8 * GIB} free (short by {2 * GIB})"
    )
    assert "host memory" in Shortfall(HOST, 2, 1).describe()


def test_orch_3003_devices_without_a_reading_are_not_judged() -> None:
    assert shortfalls({0: GIB, 3: GIB}, {0: 2 * GIB}) == []


def test_free_memory_readings_are_parsed() -> None:
    meminfo = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n"
    assert parse_meminfo(meminfo) == 20_000_000 * 1024
    assert parse_meminfo("MemTotal: 1 kB\n") is None
    assert parse_nvidia_smi("0, 80000\n1, 512\n") == {0: 80000 << 20, 1: 512 << 20}


def test_artifact_size_of_a_file_and_of_a_model_directory(tmp_path: Path) -> None:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"x" * 1000)
    assert artifact_bytes(weights) == 1000
    directory = tmp_path / "hf"
    (directory / "sub").mkdir(parents=True)
    (directory / "config.json").write_bytes(b"{}")
    (directory / "sub" / "model.safetensors").write_bytes(b"y" * 500)
    assert artifact_bytes(directory) == 502
