"""The core cannot import the server (it is below it), so its enums are its own; these
tests hold them equal to the contract's and the config's (ORCH-2006, ORCH-2008)."""

from __future__ import annotations

from enum import Enum

import pytest

import orchestrator_core as core
from orchestratord_server import config
from orchestratord_server.errors import RETRIABLE
from orchestratord_server.generated import models


def _values(enum: type[Enum]) -> set[str]:
    return {str(member.value) for member in enum}


@pytest.mark.parametrize(
    ("ours", "contract"),
    [
        (core.ErrorKind, models.ErrorKind),
        (core.Priority, models.Priority),
        (core.FinishReason, models.FinishReason),
        (core.QueuePolicy, models.QueuePolicy),
        (core.KvHint, models.KvHint),
        (config.EngineName, models.Engine),
        (config.FullPolicy, models.QueuePolicy),
        (config.PriorityName, models.Priority),
    ],
    ids=lambda enum: f"{enum.__module__.split('.')[0]}.{enum.__name__}",
)
def test_enum_values_match_the_contract(ours: type[Enum], contract: type[Enum]) -> None:
    assert _values(ours) == _values(contract)


def test_retriable_codes_are_the_cores() -> None:
    """ORCH-3025: one notion of which errors invite a retry."""
    assert {kind.value for kind in RETRIABLE} == {kind.value for kind in core.RETRIABLE}
    assert models.ErrorKind.DECODE_TIMEOUT not in RETRIABLE
