"""API keys are compared in constant time (ORCH-3035).

Not a timing measurement: ``hmac.compare_digest`` is the constant-time primitive, and
:class:`orchestratord_server.auth.KeyRing` must hand every presented key to it against
every configured key, whatever it presents, so the work done says nothing about how
close a guess came or which key it nearly matched. The test counts those comparisons.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import pytest

from orchestratord_server import auth
from orchestratord_server.config import AuthConfig

KEYS = tuple(f"key-{n}-5d41402abc4b2a76b9719d911017c592" for n in range(5))


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Every (presented, configured) pair handed to hmac.compare_digest."""
    calls: list[tuple[bytes, bytes]] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    return calls


CANDIDATES = {
    "first-key": (KEYS[0], True),
    "last-key": (KEYS[-1], True),
    "near-miss": (KEYS[2][:-1] + "3", False),
    "prefix": (KEYS[1][:10], False),
    "far-miss": ("x" * 300, False),
    "empty": ("", False),
    "non-ascii": ("schlüssel-ключ", False),
}


@pytest.mark.parametrize("candidate, accepted", CANDIDATES.values(), ids=CANDIDATES)
def test_orch_3035_every_configured_key_is_compared_whatever_is_presented(
    compared: list[tuple[bytes, bytes]], candidate: str, accepted: bool
) -> None:
    """ORCH-3035: a match, a near miss and a far miss cost the same comparisons: one
    constant-time comparison with each configured key, no early exit on a match."""
    ring = auth.key_rings(AuthConfig(api_keys=KEYS), environ={})["data"]
    assert ring.accepts(candidate) is accepted
    assert len(compared) == len(KEYS)
    assert sorted(key for _, key in compared) == sorted(k.encode() for k in KEYS)
    assert {presented for presented, _ in compared} == {candidate.encode()}


def test_the_control_ring_is_compared_the_same_way(compared: list[tuple[bytes, bytes]]) -> None:
    """ORCH-3035: the control plane's ring holds only its own keys and compares with all."""
    rings = auth.key_rings(
        AuthConfig(api_keys=KEYS, control_api_keys=("control-a", "control-b")), environ={}
    )
    assert rings["control"].accepts(KEYS[0]) is False
    assert len(compared) == 2
    compared.clear()
    assert rings["control"].accepts("control-b") is True
    assert len(compared) == 2
