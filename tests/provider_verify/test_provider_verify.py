"""Replay every interaction of every consumer pact against the live daemon (ORCH-3044).

Each interaction runs in its provider state on a real daemon with a real llama.cpp
engine; its response must satisfy the pact's matchers and the OpenAPI contracts, and a
stream must be a valid transcript event by event (ORCH-2002).
"""

from __future__ import annotations

import pytest

from tests.integration.support import Daemon, new_id
from tests.provider_verify.pacts import Interaction, interactions
from tests.provider_verify.states import new_bindings, provider_state
from tests.provider_verify.verifier import replay

pytestmark = pytest.mark.integration

INTERACTIONS = interactions()


@pytest.mark.parametrize(
    "interaction", INTERACTIONS, ids=[f"{i.consumer}:{i.id}" for i in INTERACTIONS]
)
def test_provider_honours_the_pact(
    interaction: Interaction, request: pytest.FixtureRequest
) -> None:
    """ORCH-2001..2008, ORCH-2101..2104, ORCH-3035: the daemon answers each consumer's
    interaction as its pact expects, within the contracts."""

    def daemon(unready: bool) -> Daemon:
        name = "unready_daemon" if unready else "ready_daemon"
        found: Daemon = request.getfixturevalue(name)
        return found

    bindings = new_bindings(new_id(), new_id())
    with provider_state(interaction.state, interaction.state_params, daemon, bindings) as client:
        problems = replay(client, interaction.data, bindings)
    assert not problems, f"{interaction.consumer} / {interaction.id}:\n" + "\n".join(problems)
