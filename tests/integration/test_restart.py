"""Determinism across a daemon restart (ORCH-3045).

A task without a seed gets the stable hash of its task_id as seed, so the same request
sent to a restarted daemon (to which the id is new) replays the same text.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.support import (
    daemon_config,
    derived_seed,
    running_daemon,
    task_body,
    tiny_pool_config,
)

pytestmark = pytest.mark.integration


def test_derived_seed_replays_the_same_text_after_a_restart(
    tmp_path: Path, long_model: Path
) -> None:
    """ORCH-3045: same task_id, no seed, before and after a restart: identical text."""
    config = daemon_config(tiny_pool_config(long_model, slots=1, capacity=2))
    body = task_body(prompt="A replayable story", max_tokens=64)
    runs = []
    for attempt in ("before", "after"):
        with running_daemon(tmp_path / attempt, config) as daemon:
            runs.append(daemon.client().run(body))
    before, after = runs
    assert before.started is not None and after.started is not None
    assert before.started["seed"] == after.started["seed"] == derived_seed(body["task_id"])
    assert len(before.tokens) == 64
    assert before.text == after.text
