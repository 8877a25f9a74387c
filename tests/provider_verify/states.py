"""Provider states: what the daemon must look like before a pact's request is replayed.

Each state named in ``contracts/pacts/pact.schema.json`` has a set-up here. A set-up
gets a client of the daemon that can stand in the state, the bindings of the replay
(``task_id``, ``session_id``, ``api_key``) and the state's params; it brings the daemon
into the state and adds what it set up to the bindings (``pool_id``, ``model_ref``,
``engine``). :func:`provider_state` runs one and, afterwards, cancels whatever the state
or the interaction left running and waits until the pool is idle again, so interactions
never see each other's tasks.

Drain and reload (ORCH-2101, ORCH-2102) change the pool for longer than one interaction:
a drained pool stays out of service until a reload, and a reload answers before the swap
is done. So ``a pool is ready`` (which every state but ``no pool is ready`` starts from)
first brings a drained pool back with a reload to its configured model, then waits until
health says the pool is ready, not draining, on the model it should serve, and idle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from tests.integration.support import (
    DATA_KEY,
    ENGINE,
    MODEL_REF,
    POOL_ID,
    Client,
    Daemon,
    long_task_body,
    task_body,
    wait_until,
)

#: The ready daemon's pool: one slot and a queue of one (policy reject).
SLOTS = 1
QUEUE_CAPACITY = 1
STATE_TIMEOUT_S = 30.0

Bindings = dict[str, Any]
SetUp = Callable[[Client, Bindings, dict[str, Any]], None]


def _pool_counts(client: Client) -> tuple[int, int]:
    metrics = client.health()["metrics"]
    return int(metrics["running"]), int(metrics["queue_depth"])


def _wait_counts(client: Client, running: int, queued: int) -> None:
    wait_until(
        lambda: _pool_counts(client) == (running, queued),
        timeout=STATE_TIMEOUT_S,
        interval=0.05,
        what=f"{running} running and {queued} queued tasks",
    )


def _ids(bindings: Bindings) -> dict[str, Any]:
    return {"task_id": bindings["task_id"], "session_id": bindings["session_id"]}


def _in_service(client: Client) -> bool:
    """Ready and not draining, no reload under way, nothing running, queued or held."""
    health = client.health()
    metrics = health["metrics"]
    return bool(
        health["ready"]
        and not health["draining"]
        and health["desired_model_ref"] == health["applied_model_ref"]
        and metrics["running"] == 0
        and metrics["queue_depth"] == 0
        and metrics["slots_free"] == metrics["slots_total"]
    )


def _reload(client: Client, model_ref: str) -> None:
    response = client.post(f"/v1/pools/{POOL_ID}/reload", json={"new_model_ref": model_ref})
    assert response.status_code == 202, response.text


def pool_is_ready(client: Client, bindings: Bindings, _params: dict[str, Any]) -> None:
    if client.health()["draining"]:
        # Drained, or a reload is under way (then this one converges on the same model).
        _reload(client, MODEL_REF)
    wait_until(
        lambda: _in_service(client),
        timeout=STATE_TIMEOUT_S,
        interval=0.05,
        what="the pool to be ready, on its model, not draining and idle",
    )
    bindings.update(pool_id=POOL_ID, model_ref=MODEL_REF, engine=ENGINE)


def task_was_submitted(client: Client, bindings: Bindings, params: dict[str, Any]) -> None:
    pool_is_ready(client, bindings, params)
    client.admit(task_body(**_ids(bindings), max_tokens=params.get("max_tokens", 8)))


def task_is_running(client: Client, bindings: Bindings, params: dict[str, Any]) -> None:
    pool_is_ready(client, bindings, params)
    client.admit(long_task_body(**_ids(bindings)))
    _wait_counts(client, running=1, queued=0)


def task_was_canceled(client: Client, bindings: Bindings, params: dict[str, Any]) -> None:
    task_is_running(client, bindings, params)
    response = client.cancel(bindings["task_id"])
    assert response.status_code == 204, response.text


def session_has_taken_a_turn(client: Client, bindings: Bindings, params: dict[str, Any]) -> None:
    pool_is_ready(client, bindings, params)
    transcript = client.run(task_body(**_ids(bindings), max_tokens=params.get("max_tokens", 4)))
    assert transcript.terminal.event == "end", transcript.events


def queue_is_full(client: Client, bindings: Bindings, params: dict[str, Any]) -> None:
    pool_is_ready(client, bindings, params)
    for _ in range(SLOTS + QUEUE_CAPACITY):
        client.admit(long_task_body())
    _wait_counts(client, running=SLOTS, queued=QUEUE_CAPACITY)


def pool_is_drained(client: Client, bindings: Bindings, params: dict[str, Any]) -> None:
    pool_is_ready(client, bindings, params)
    response = client.post(f"/v1/pools/{POOL_ID}/drain", json={"deadline_ms": 0})
    assert response.status_code == 202, response.text
    wait_until(
        lambda: client.health()["draining"] and client.idle(),
        timeout=STATE_TIMEOUT_S,
        interval=0.05,
        what="the pool to be drained",
    )


def no_pool_is_ready(client: Client, bindings: Bindings, _params: dict[str, Any]) -> None:
    health = client.health()
    assert (health["live"], health["ready"]) == (False, False), health
    bindings.update(pool_id=POOL_ID, model_ref=MODEL_REF, engine=ENGINE)


#: Each state's set-up, and whether it needs the unready daemon instead of the ready one.
STATES: dict[str, tuple[SetUp, bool]] = {
    "a pool is ready": (pool_is_ready, False),
    "a task was submitted": (task_was_submitted, False),
    "a task is running": (task_is_running, False),
    "a task was canceled": (task_was_canceled, False),
    "a session has taken a turn": (session_has_taken_a_turn, False),
    "the pool's queue is full": (queue_is_full, False),
    "the pool is drained": (pool_is_drained, False),
    "no pool is ready": (no_pool_is_ready, True),
}


def new_bindings(task_id: str, session_id: str) -> Bindings:
    return {"task_id": task_id, "session_id": session_id, "api_key": DATA_KEY}


@contextlib.contextmanager
def provider_state(
    name: str,
    params: dict[str, Any],
    daemon: Callable[[bool], Daemon],
    bindings: Bindings,
) -> Iterator[Client]:
    """Set up state ``name`` on the daemon ``daemon(unready)`` gives; clean up after."""
    set_up, unready = STATES[name]
    client = daemon(unready).client()
    set_up(client, bindings, params)
    try:
        yield client
    finally:
        if not unready:
            client.submitted.append(bindings["task_id"])
            client.cancel_all()
            client.wait_idle()
