"""No key, prompt or generated text in the logs or in a metric label (ORCH-3027, ORCH-3028).

A run with recognisable strings: tasks with a marked prompt complete (their generated
text is the fake engine's marked token), one is canceled mid-stream, one is refused by
validation and one for its size (both with the marked prompt), and requests come with
the data key, the control key and a marked wrong key. Afterwards none of those strings,
nor a task or session id, appears in anything the daemon wrote (stdout, stderr) or in any
label value of `/metrics`.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass

import pytest

from tests.integration.support import Client, Metrics, long_task_body, task_body
from tests.security.conftest import MAX_BODY_BYTES, Secured

pytestmark = pytest.mark.integration

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


@dataclass(frozen=True)
class Run:
    """The secrets of the run, the ids it used, what the daemon wrote and served."""

    secrets: dict[str, str]
    ids: set[str]
    output: str
    metrics: Metrics


@pytest.fixture(scope="module")
def run(secured: Secured) -> Run:
    client: Client = secured.daemon.client()
    prompt = f"confidential-prompt-{uuid.uuid4().hex}"
    wrong_key = f"leaked-wrong-key-{uuid.uuid4().hex}"
    ids: set[str] = set()
    generated = ""
    for _ in range(3):
        body = task_body(prompt=prompt, max_tokens=6)
        ids |= {body["task_id"], body["session_id"]}
        transcript = client.run(body)
        assert transcript.terminal.data["finish_reason"] == "length"
        generated = transcript.text
    assert secured.engine.token_text in generated

    canceled = long_task_body(prompt=prompt)
    ids |= {canceled["task_id"], canceled["session_id"]}
    client.admit(canceled)
    with client.open_stream(canceled["task_id"]) as stream:
        stream.read_until(lambda f: f.event == "token")
        assert client.cancel(canceled["task_id"]).status_code == 204
        stream.read_all()

    invalid = task_body(prompt=prompt, colour="blue")
    assert client.submit(invalid).status_code == 400
    oversized = task_body(prompt=prompt + "x" * MAX_BODY_BYTES)
    assert client.submit(oversized).status_code == 413
    for headers in ({"Authorization": f"Bearer {wrong_key}"}, {"X-API-Key": wrong_key}):
        assert client.get("/v1/replicasets", key=None, headers=headers).status_code == 401
    assert client.get("/v1/replicasets", key=secured.control_key).status_code == 200
    secured.daemon.client(secured.control_key).wait_idle()
    return Run(
        secrets={
            "data key": secured.data_key,
            "control key": secured.control_key,
            "wrong key": wrong_key,
            "prompt": prompt,
            "generated text": secured.engine.token_text,
        },
        ids=ids,
        output=secured.daemon.stdout_text() + secured.daemon.stderr_text(),
        metrics=client.metrics(),
    )


def test_the_daemon_writes_no_secret(run: Run) -> None:
    """ORCH-3027: neither key, the wrong key presented, the prompt nor the generated
    text is written anywhere, as is or JSON-escaped."""
    assert run.output, "the daemon wrote nothing to check"
    for what, secret in run.secrets.items():
        assert secret not in run.output, f"the {what} is in the daemon's output"
        assert json.dumps(secret)[1:-1] not in run.output, what


def test_no_metric_label_holds_a_secret_or_an_id(run: Run) -> None:
    """ORCH-3028: label values are bounded: no key, prompt, generated text, task or
    session id, nor anything shaped like a UUID."""
    assert run.metrics.total("tasks_enqueued_total") >= 4
    for sample in run.metrics.samples:
        for label, value in sample.labels.items():
            where = (sample.name, label, value)
            assert value not in run.ids, where
            assert not UUID_RE.search(value), where
            for secret in run.secrets.values():
                assert secret not in value, where


def test_orch_3027_client_ids_are_keyed_hashes_not_plain_hashes_of_the_key(run: Run) -> None:
    """A logged `client_id` once was a plain SHA-256 prefix of the key, which lets a weak
    key be guessed offline; it is an HMAC under the deployment's secret, so neither the
    plain hash nor any prefix of it appears."""
    logged = set(re.findall(r'"client_id":\s*"([^"]+)"', run.output))
    assert logged - {"anonymous"}, "no client_id was logged"
    for key in (run.secrets["data key"], run.secrets["control key"]):
        plain = hashlib.sha256(key.encode()).hexdigest()
        assert plain[:12] not in run.output
        for client_id in logged:
            assert client_id.removeprefix("key-") not in plain
