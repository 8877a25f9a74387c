"""Multi-GPU split only with explicit ratios (ORCH-3012).

Configuration refuses a split the spec refuses; the engines the daemon starts get the
ratios in the order they see their devices. There is no GPU here, so the launched side is
checked on the command lines the daemon builds, not on a running engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestratord_server.config import ConfigError, PoolConfig, parse_config
from orchestratord_server.engines import xllamacpp_runner
from orchestratord_server.engines.llamacpp_process import LlamaCppServerConfig
from orchestratord_server.model_catalog import ResolvedModel
from orchestratord_server.runtime.replicas import ReplicaHandle, device_shares

MODEL = ResolvedModel("m", Path("/models/m.gguf"), None, None)
LAUNCH = {"id": "r1", "launch": {"model_path": "/models/m.gguf", "slots": 1}}


def _pool(**fields: Any) -> dict[str, Any]:
    pool = {
        "id": "p1",
        "engine": "llamacpp",
        "model": "m",
        "ctx": 2048,
        "devices": [0, 1],
        "tensor_split": [0.5, 0.5],
        "replicas": [{"id": "r1", "url": "http://127.0.0.1:9000"}],
    }
    return pool | fields


def _config(**fields: Any) -> dict[str, Any]:
    models = [{"ref": "m", "path": str(MODEL.path)}]
    return {"allow_cpu_pools": True, "models": models, "pools": [_pool(**fields)]}


def _problems(**fields: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(**fields))
    return "\n".join(caught.value.problems)


def _loaded(**fields: Any) -> PoolConfig:
    return parse_config(_config(**fields))[0].pools[0]


def test_orch_3012_a_gpu_pool_on_several_devices_needs_explicit_ratios() -> None:
    problems = _problems(tensor_split=None)
    assert problems.startswith("pools[0]: tensor_split: the mask names 2 devices")
    assert "ORCH-3012" in problems
    assert _loaded(devices=[0], tensor_split=None).tensor_split is None


def test_orch_3012_vllm_and_tgi_take_equal_ratios_only() -> None:
    for engine in ("vllm", "tgi"):
        problems = _problems(engine=engine, tensor_split=[0.7, 0.3])
        assert problems.startswith(f"pools[0]: tensor_split: {engine} shards a model evenly")
        third = 1 / 3
        pool = _loaded(engine=engine, devices=[0, 1, 2], tensor_split=[third, third, third])
        assert pool.tensor_split == (third, third, third)
    for engine in ("llamacpp", "triton"):
        assert _loaded(engine=engine, tensor_split=[0.7, 0.3]).tensor_split == (0.7, 0.3)


def test_orch_3012_a_cpu_pool_runs_on_the_host_and_takes_no_split() -> None:
    problems = _problems(device_kind="cpu")
    assert problems.startswith("pools[0]: tensor_split: a CPU pool runs on the host")
    assert _loaded(device_kind="cpu", tensor_split=None).devices == (0, 1)


def test_orch_3012_a_llamacpp_command_must_pass_the_ratios_on() -> None:
    command = {"id": "r1", "url": "http://127.0.0.1:9000", "command": ["llama-server"]}
    problems = _problems(tensor_split=[0.6, 0.4], replicas=[command])
    assert problems.startswith("pools[0]: replicas: r1's command never names {tensor_split}")
    named = {**command, "command": ["llama-server", "--tensor-split", "{tensor_split}"]}
    assert _loaded(tensor_split=[0.6, 0.4], replicas=[named]).replicas[0].command
    in_env = {**command, "env": {"LLAMA_ARG_TENSOR_SPLIT": "{tensor_split}"}}
    assert _loaded(tensor_split=[0.6, 0.4], replicas=[in_env]).replicas[0].env
    assert _loaded(engine="vllm", replicas=[command]).replicas[0].command


def test_orch_3012_a_launched_llamacpp_gets_the_ratios_in_mask_order() -> None:
    pool = _loaded(devices=[3, 1], tensor_split=[0.6, 0.4], replicas=[LAUNCH])
    handle = ReplicaHandle(pool, pool.replicas[0], MODEL)
    assert pool.replicas[0].launch is not None
    argv = handle.launch_config(pool.replicas[0].launch, MODEL.path).command()
    assert argv[argv.index("--tensor-split") + 1] == "0.6,0.4"
    assert handle.device_env()["CUDA_VISIBLE_DEVICES"] == "3,1"
    # The mask names NVML's (nvidia-smi's) indices; CUDA must number devices alike.
    assert handle.device_env()["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_orch_3012_one_device_or_the_host_is_not_split() -> None:
    for fields in (
        {"devices": [0], "tensor_split": None},
        {"device_kind": "cpu", "tensor_split": None},
    ):
        pool = _loaded(replicas=[LAUNCH], **fields)
        assert pool.replicas[0].launch is not None
        argv = (
            ReplicaHandle(pool, pool.replicas[0], MODEL)
            .launch_config(pool.replicas[0].launch, MODEL.path)
            .command()
        )
        assert "--tensor-split" not in argv
    bare = LlamaCppServerConfig(model_path=MODEL.path, tensor_split=(0.25, 0.75)).command()
    assert bare[-2:] == ["--tensor-split", "0.25,0.75"]


def test_orch_3012_a_command_engine_gets_the_ratios_through_its_placeholder() -> None:
    command = {
        "id": "r1",
        "url": "http://127.0.0.1:9000",
        "command": ["engine", "--model", "{model_path}", "--tensor-split", "{tensor_split}"],
        "env": {"SPLIT": "[{tensor_split}]"},
    }
    pool = _loaded(devices=[2, 0], tensor_split=[0.75, 0.25], replicas=[command])
    argv, env = ReplicaHandle(pool, pool.replicas[0], MODEL).command_line(
        pool.replicas[0].command or ()
    )
    assert argv == ["engine", "--model", "/models/m.gguf", "--tensor-split", "0.75,0.25"]
    assert env["SPLIT"] == "[0.75,0.25]"
    assert env["CUDA_VISIBLE_DEVICES"] == "2,0"


def test_orch_3012_a_replica_on_part_of_the_mask_gets_its_devices_ratios() -> None:
    own = {"id": "r1", "url": "http://127.0.0.1:9000", "devices": [2, 1]}
    pool = _loaded(devices=[0, 1, 2], tensor_split=[0.5, 0.125, 0.375], replicas=[own])
    assert device_shares(pool, pool.replicas[0]) == (0.75, 0.25)
    whole = _loaded(devices=[0, 1, 2], tensor_split=[0.5, 0.125, 0.375])
    assert device_shares(whole, whole.replicas[0]) == (0.5, 0.125, 0.375)
    cpu = _loaded(device_kind="cpu", tensor_split=None)
    assert device_shares(cpu, cpu.replicas[0]) == (1.0,)


def test_orch_3012_the_runner_hands_the_ratios_to_llama_cpp() -> None:
    args = xllamacpp_runner._parse_args(["--model", "m.gguf", "--tensor-split", "0.6,0.4"])
    assert args.tensor_split == [0.6, 0.4]
    assert xllamacpp_runner._parse_args(["--model", "m.gguf"]).tensor_split is None
    assert xllamacpp_runner.padded_split([0.6, 0.4], 4) == [0.6, 0.4, 0.0, 0.0]
    with pytest.raises(ValueError, match="at most 1 devices"):
        xllamacpp_runner.padded_split([0.6, 0.4], 1)
