"""The task life cycle table (ORCH-3016, ORCH-3017, ORCH-3026): walked exhaustively."""

from __future__ import annotations

import itertools

import pytest

from orchestrator_core import (
    TERMINAL,
    TRANSITIONS,
    CoreError,
    Event,
    IllegalTransition,
    State,
    advance,
)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Event)))
def test_every_pair_follows_the_table(state: State, event: Event) -> None:
    if (state, event) in TRANSITIONS:
        assert advance(state, event) is TRANSITIONS[state, event]
    else:
        with pytest.raises(IllegalTransition) as err:
            advance(state, event)
        assert isinstance(err.value, CoreError)
        assert (err.value.state, err.value.event) == (state.value, event.value)


def test_terminal_states_have_no_way_out() -> None:
    """ORCH-3017: exactly one terminal state, never left."""
    assert {s for s, _ in TRANSITIONS} == {State.QUEUED, State.DISPATCHED, State.STREAMING}
    assert {State.ENDED, State.CANCELED, State.FAILED} == TERMINAL


def test_cancel_reaches_a_terminal_state_from_every_live_state() -> None:
    """ORCH-3017: queued or running alike."""
    for state in (State.QUEUED, State.DISPATCHED, State.STREAMING):
        assert advance(state, Event.CANCEL) is State.CANCELED
        assert advance(state, Event.DRAIN) is State.CANCELED


def test_every_state_is_reachable_from_queued() -> None:
    seen, frontier = {State.QUEUED}, [State.QUEUED]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is state and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(State)


def test_tokens_only_flow_while_running() -> None:
    """ORCH-3026: a token is legal only in DISPATCHED or STREAMING."""
    legal = {s for (s, e) in TRANSITIONS if e is Event.TOKEN}
    assert legal == {State.DISPATCHED, State.STREAMING}
