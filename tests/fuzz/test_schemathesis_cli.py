"""`schemathesis run --checks all` against the live daemon, both contracts (ORCH-2006, ORCH-3044).

Where `test_schemathesis` drives schemathesis from pytest with this project's own checks,
this runs the schemathesis command line with every check it has (server errors, status
codes, content types, response schemas and headers, SSE event schemas, positive and
negative data, the `Allow` of a 405, authentication, use after delete, ...) and all its
phases (examples, coverage, fuzzing, stateful), against a daemon on a real llama.cpp
engine serving the model the contracts' examples name (SmolLM2), so that schema-valid
requests built from the examples really run (this found a 500 that a daemon refusing every
model hid). `schemathesis.toml` beside this file widens expected statuses only where the
contract documents the answer, each with its reason. One operation is left out: the
control-plane event stream (`streamControlEvents`) never ends by itself, so a run waiting
for its body would wait forever; tests/server/test_control_events.py checks its frames
against the contract. The data plane runs first: the control plane's stateful phase
drains the pool.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestratord_server.config import EMBEDDED_MODEL_REF
from tests.fuzz.test_schemathesis import ENDLESS
from tests.integration.support import (
    DATA_KEY,
    Daemon,
    daemon_config,
    running_daemon,
    tiny_pool_config,
)

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).with_name("schemathesis.toml")
#: Upper bound of one contract's run; the data plane's takes about two minutes here.
RUN_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def example_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon whose pool serves the contracts' example model on llama.cpp."""
    pool = tiny_pool_config(
        tmp_path_factory.getbasetemp(),
        model=EMBEDDED_MODEL_REF,
        pool_ctx=2048,
        slots=2,
        ctx_per_slot=2048,
        launch_model=False,
    )
    config = daemon_config(pool)
    config["pools"].append(embedding_pool())
    with running_daemon(tmp_path_factory.mktemp("schemathesis-cli"), config) as daemon:
        yield daemon


def embedding_pool() -> dict[str, Any]:
    """SmolLM2 in embedding mode under the name the contract's embeddings example uses."""
    return {
        "id": "vectors",
        "engine": "llamacpp",
        "model": EMBEDDED_MODEL_REF,
        "workload": "embedding",
        "served_name": EMBEDDED_MODEL_REF + "-embed",
        "ctx": 512,
        "device_kind": "cpu",
        "devices": [0],
        "replicas": [{"id": "r0", "launch": {"slots": 1, "ctx_per_slot": 512, "threads": 1}}],
    }


def schemathesis_run(daemon: Daemon, plane: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{daemon.base_url}/openapi/{plane}.json",
        "--url",
        daemon.base_url,
        "--checks",
        "all",
        *(["--exclude-operation-id", ENDLESS] if plane == "control" else []),
        # The key in both schemes the contracts declare: credentials that differ are
        # refused (ORCH-3035), and schemathesis fills in every scheme.
        "-H",
        f"Authorization: Bearer {DATA_KEY}",
        "-H",
        f"X-API-Key: {DATA_KEY}",
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )


@pytest.mark.parametrize("plane", ["data", "control"])
def test_orch_2006_orch_3044_schemathesis_all_checks_pass_on_the_live_daemon(
    example_daemon: Daemon, plane: str
) -> None:
    """Zero failures from every schemathesis check, on each contract in turn."""
    run = schemathesis_run(example_daemon, plane)
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    assert " passed" in run.stdout and "failed" not in run.stdout.split("SUMMARY")[-1]
