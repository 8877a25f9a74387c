"""Schemathesis against the live daemon, from both served contracts (ORCH-2006, ORCH-3044).

The contracts are the ones the daemon serves at ``/openapi/data.json`` and
``/openapi/control.json`` (loaded from the same generated copies at import, since
schemathesis' fixture-based loader does not run on this pytest; a test checks that the
daemon serves the same operations and responses); every operation of each gets valid and invalid
requests generated from its schema, with a fixed seed and a bounded number of examples, sent with
a valid key. Each response must pass four checks: no 5xx (``not_a_server_error``), a
status the operation declares, the declared content type, and a body valid against the
declared schema. A crash of the daemon shows as connection errors and fails the run.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orchestratord_server.app import contract
from tests.fuzz.conftest import FUZZ_CTX
from tests.integration.support import (
    DATA_KEY,
    ENGINE,
    MODEL_REF,
    Daemon,
    check_transcript,
    parse_frames,
)

pytestmark = pytest.mark.integration

SEED = 20_260_707
MAX_EXAMPLES = 30
#: The operations that answer 501 NOT_IMPLEMENTED: a submission of a workload no engine of
#: this deployment serves (anything but a completion).
NOT_IMPLEMENTED = {"createTask"}


def only_declared_not_implemented(
    _ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """A 501 is an envelope NOT_IMPLEMENTED, only where this deployment lacks a feature."""
    if response.status_code != 501:
        return None
    operation = case.operation.definition.raw.get("operationId")
    assert operation in NOT_IMPLEMENTED, f"{operation} answered 501"
    assert response.json()["code"] == "NOT_IMPLEMENTED", response.text
    if operation == "createTask":
        assert case.body["workload"] != "completion", "a completion answered 501"
    return True


def response_conformance(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """``response_schema_conformance``, and for a stream the transcript event by event.

    The contract describes an event stream's body as a string and the events in
    ``x-sse-events``; schemathesis validates each parsed event against the string schema,
    so a stream is checked here instead: every frame parsed and its data validated
    against its event's schema, and the ORCH-2002 order of the whole transcript.
    """
    content_type = response.headers.get("content-type", [""])[0]
    if content_type.startswith("text/event-stream"):
        frames = parse_frames(response.content)
        last = {k.lower(): v for k, v in (case.headers or {}).items()}.get("last-event-id")
        if last is None:
            check_transcript(frames, task_id=case.path_parameters["id"])
        else:  # a resumed stream: the frames after that id, consecutive
            first = int(last) + 1
            assert [f.id for f in frames] == list(range(first, first + len(frames))), frames
        return True
    return response_schema_conformance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    only_declared_not_implemented,
    status_code_conformance,
    content_type_conformance,
    response_conformance,
]
AUTH = {"Authorization": f"Bearer {DATA_KEY}"}


def _config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            # 501 is a declared answer; `only_declared_not_implemented` says where.
            "checks": {"not_a_server_error": {"expected-statuses": ["2XX", "4XX", "501"]}},
        }
    )


DATA = schemathesis.openapi.from_dict(contract("data"), config=_config())
#: The control-plane event stream never ends by itself, so a fuzzer waiting for its body
#: waits forever; tests/server/test_control_events.py checks its frames against the
#: contract instead (and tests/security/test_route_auth.py its refusals).
ENDLESS = "streamControlEvents"
CONTROL = schemathesis.openapi.from_dict(contract("control"), config=_config()).exclude(
    operation_id=ENDLESS
)


def _aimed_at_the_pool(aimed: tuple[schemathesis.Case, bool]) -> schemathesis.Case:
    """Half the generated completions are bent to fit the fuzz pool (its model, engine and
    context, a short generation, a prompt), so that admission, queueing and dispatch are
    fuzzed too, not only validation; the other half stay as generated."""
    case, aim = aimed
    body = case.body
    if aim and isinstance(body, dict) and body.get("workload") == "completion":
        body.update(model_ref=MODEL_REF, engine=ENGINE, ctx=FUZZ_CTX)
        if isinstance(body.get("max_tokens"), int):
            body["max_tokens"] = 1 + body["max_tokens"] % 32
        for field in ("inputs", "sampler_profile_version"):
            body.pop(field, None)
        body.setdefault("prompt", "Hello")
    return case


@DATA.hook("before_generate_case")
def aim_submissions(
    context: schemathesis.HookContext, strategy: st.SearchStrategy[schemathesis.Case]
) -> st.SearchStrategy[schemathesis.Case]:
    if context.operation is None or context.operation.definition.raw["operationId"] != (
        "createTask"
    ):
        return strategy
    return st.tuples(strategy, st.booleans()).map(_aimed_at_the_pool)


@DATA.parametrize()
def test_data_plane_answers_fuzzed_requests_within_the_contract(
    case: schemathesis.Case, fuzz_daemon: Daemon
) -> None:
    """ORCH-2006, ORCH-3044: no 5xx and nothing outside data.yaml, whatever is sent."""
    case.call_and_validate(base_url=fuzz_daemon.base_url, headers=AUTH, checks=CHECKS)


@CONTROL.parametrize()
def test_control_plane_answers_fuzzed_requests_within_the_contract(
    case: schemathesis.Case, fuzz_daemon: Daemon
) -> None:
    """ORCH-2006, ORCH-3044: no 5xx and nothing outside control.yaml, whatever is sent."""
    case.call_and_validate(base_url=fuzz_daemon.base_url, headers=AUTH, checks=CHECKS)


@pytest.mark.parametrize("plane", ["data", "control"])
def test_the_fuzzed_contracts_are_the_served_ones(fuzz_daemon: Daemon, plane: str) -> None:
    """ORCH-3044: the daemon serves the operations and responses the fuzzer works from
    (connexion serves the data contract with its references resolved, so the comparison
    is by operation: path, method, operationId and declared statuses)."""
    served = httpx.get(f"{fuzz_daemon.base_url}/openapi/{plane}.json", timeout=10)
    assert served.status_code == 200, served.text
    assert _operations(served.json()) == _operations(contract(plane))


def _operations(spec: dict[str, Any]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {
        (path, method, operation["operationId"], tuple(sorted(operation["responses"])))
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "operationId" in operation
    }
