"""What one connection may cost the daemon: deadlines, head limits, the connection cap, and
streams an HTTP/1.0 client can read (issue 14; `orchestratord_server/http_protocol.py`).

Two real daemons, driven over raw sockets as an attacker would. One launches llama.cpp on
the tiny GGUF and holds connections to half-second header and body deadlines; it takes
the default head limits. The other has no engine and accepts at most `CAP` connections.
Every refusal must be the JSON ErrorEnvelope followed by the server closing the
connection, and a retriable one carries the retry hints (ORCH-2006, ORCH-2007, ORCH-3025).
The last tests check the configuration: keep-alive within the header deadline, and the cap
fitted to the open-file limit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestratord_server.config import ConfigError, ServerConfig, parse_config
from tests.integration.conftest import tiny_model
from tests.integration.support import (
    DATA_KEY,
    MODEL_REF,
    Daemon,
    check_transcript,
    daemon_config,
    parse_frames,
    running_daemon,
    task_body,
    tiny_pool_config,
    wait_until,
)

__all__ = ["tiny_model"]

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 0.5
BODY_TIMEOUT_S = 0.5
#: A cut must come at its deadline: not before, and not much after (a loaded 2-core box).
LATE_S = 1.0
IDLE_CONNECTIONS = 200
CAP = 8
MAX_HEADER_BYTES = ServerConfig().max_header_bytes
MAX_HEADERS = ServerConfig().max_headers


@pytest.fixture(scope="module")
def hygienic(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Daemon]:
    """Tiny llama.cpp, half-second deadlines, room for the idle connections."""
    config = daemon_config(tiny_pool_config(tiny_model, pool_ctx=2048, ctx_per_slot=2048))
    config["server"].update(
        header_timeout_ms=int(HEADER_TIMEOUT_S * 1000),
        body_timeout_ms=int(BODY_TIMEOUT_S * 1000),
        keepalive_timeout_ms=300,
        max_connections=IDLE_CONNECTIONS + 50,
    )
    with running_daemon(tmp_path_factory.mktemp("hygienic-daemon"), config) as daemon:
        yield daemon


def engineless_pool() -> dict[str, Any]:
    """A pool whose one replica's engine is nowhere."""
    pool = tiny_pool_config(Path("/nonexistent"))
    pool["replicas"] = [{"id": "r0", "url": "http://127.0.0.1:9"}]
    return pool


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """At most `CAP` connections, and no engine (only /livez is used)."""
    config = daemon_config(engineless_pool())
    config["server"]["max_connections"] = CAP
    workdir = tmp_path_factory.mktemp("capped-daemon")
    with running_daemon(workdir, config, wait_ready=False) as daemon:
        yield daemon


# -- raw HTTP ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def envelope(self) -> dict[str, Any]:
        assert self.headers["content-type"] == "application/json", self.headers
        envelope: dict[str, Any] = json.loads(self.body)
        return envelope


def connect(daemon: Daemon, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", daemon.port), timeout=timeout)


def request_head(path: str, *fields: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1", *fields, "", ""]
    return "\r\n".join(lines).encode()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """(status, headers by lower-case name) of a response head."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def read_answer(sock: socket.socket) -> Answer:
    """One response with a Content-Length, read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response head: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status, headers = parse_head(head)
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside the body"
        body += chunk
    return Answer(status, headers, body)


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def assert_closed_by_server(sock: socket.socket) -> None:
    """The server ends the connection after its answer: nothing more comes, then EOF."""
    assert read_to_close(sock) == b""


def assert_refused(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers["connection"] == "close"
    envelope = answer.envelope()
    assert envelope["code"] == code
    retriable = code != "HEADERS_TOO_LARGE"
    assert envelope["retriable"] is retriable
    if retriable:  # ORCH-2007: the same backoff in the body and both headers
        assert int(answer.headers["x-backoff-ms"]) == envelope["retry_after_ms"] >= 1
        assert int(answer.headers["retry-after"]) == -(-envelope["retry_after_ms"] // 1000)
    return envelope


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def headed(fields: list[str]) -> bytes:
    return request_head("/livez", *fields)


def padded_head(size: int, count: int) -> bytes:
    """A GET /livez head of exactly ``size`` bytes with exactly ``count`` fields."""
    fields = [f"X-Pad-{i:03d}: " for i in range(count - 1)]
    short = size - len(headed(fields))
    assert short >= 0, "the head cannot be that small"
    fields[-1] += "a" * short
    head = headed(fields)
    assert len(head) == size and head.count(b"\r\n") == count + 2
    return head


# -- deadlines --------------------------------------------------------------------------


def test_orch_2006_idle_connections_get_408_at_the_header_timeout_and_free_their_fds(
    hygienic: Daemon,
) -> None:
    """200 connections that send nothing are each answered 408 REQUEST_TIMEOUT at the
    header deadline and closed; the daemon's descriptors return to their baseline."""
    baseline = open_fds(hygienic.pid)
    began = time.monotonic()
    sockets = [connect(hygienic) for _ in range(IDLE_CONNECTIONS)]
    try:
        wait_until(
            lambda: open_fds(hygienic.pid) >= baseline + IDLE_CONNECTIONS,
            timeout=5,
            what="the daemon to hold every connection",
        )
        for sock in sockets:
            assert_refused(read_answer(sock), 408, "REQUEST_TIMEOUT")
            assert_closed_by_server(sock)
        elapsed = time.monotonic() - began
        assert HEADER_TIMEOUT_S <= elapsed <= HEADER_TIMEOUT_S + LATE_S
    finally:
        for sock in sockets:
            sock.close()
    wait_until(
        lambda: open_fds(hygienic.pid) <= baseline + 8,
        timeout=5,
        what=f"the daemon's descriptors back near {baseline}",
    )


def test_orch_2006_slowloris_headers_are_cut_with_408_at_the_header_timeout(
    hygienic: Daemon,
) -> None:
    """A head trickled one byte every 50 ms is cut at the header deadline, however steadily
    it trickles."""
    with connect(hygienic) as sock:
        began = time.monotonic()
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sock.settimeout(0.05)
        while True:
            assert time.monotonic() - began < HEADER_TIMEOUT_S + 2 * LATE_S, "never cut"
            try:
                answered = sock.recv(1, socket.MSG_PEEK)
            except TimeoutError:
                sock.sendall(b"a")
                continue
            assert answered, "closed without an answer"
            break
        elapsed = time.monotonic() - began
        sock.settimeout(5)
        assert_refused(read_answer(sock), 408, "REQUEST_TIMEOUT")
        assert_closed_by_server(sock)
    assert HEADER_TIMEOUT_S <= elapsed <= HEADER_TIMEOUT_S + LATE_S


def test_orch_2006_a_body_that_stops_coming_gets_408_at_the_body_timeout(
    hygienic: Daemon,
) -> None:
    """A body that arrives in pieces 200 ms apart is waited for past the body deadline;
    once the pieces stop, the request is answered 408 one deadline after the last."""
    head = request_head(
        "/v1/tasks",
        f"Authorization: Bearer {DATA_KEY}",
        "Content-Type: application/json",
        "Content-Length: 1000",
        method="POST",
    )
    with connect(hygienic) as sock:
        sock.sendall(head)
        began = last_sent = time.monotonic()
        while last_sent - began < 3 * BODY_TIMEOUT_S:
            time.sleep(0.2)
            sock.sendall(b"          ")
            last_sent = time.monotonic()
        assert_refused(read_answer(sock), 408, "REQUEST_TIMEOUT")
        assert_closed_by_server(sock)
    assert BODY_TIMEOUT_S <= time.monotonic() - last_sent <= BODY_TIMEOUT_S + LATE_S


# -- head limits ------------------------------------------------------------------------


def test_orch_2006_a_head_at_the_limits_is_served_and_one_byte_or_field_more_is_431(
    hygienic: Daemon,
) -> None:
    """A head of exactly `max_header_bytes` with exactly `max_headers` fields is served;
    one byte more, or one field more, is 431 HEADERS_TOO_LARGE."""
    at_limits = padded_head(MAX_HEADER_BYTES, MAX_HEADERS)
    with connect(hygienic) as sock:
        sock.sendall(at_limits)
        assert read_answer(sock).status == 200
    for over in (
        padded_head(MAX_HEADER_BYTES + 1, MAX_HEADERS),
        padded_head(MAX_HEADER_BYTES, MAX_HEADERS + 1),
    ):
        with connect(hygienic) as sock:
            sock.sendall(over)
            assert_refused(read_answer(sock), 431, "HEADERS_TOO_LARGE")
            assert_closed_by_server(sock)


@pytest.mark.parametrize(
    "fields",
    [["X-Big: " + "a" * (1 << 20)], [f"X-N{i}: 1" for i in range(10_000)]],
    ids=["one-1MiB-header", "10000-headers"],
)
def test_orch_2006_huge_heads_are_431_before_they_end(hygienic: Daemon, fields: list[str]) -> None:
    """A 1 MiB header or 10,000 headers are refused with 431, whether the head ends or
    the client keeps it open; the client can send it all and still read the answer."""
    head = headed(fields)
    for unfinished in (False, True):
        with connect(hygienic) as sock:
            sock.sendall(head[:-4] + b"\r\n" if unfinished else head)
            assert_refused(read_answer(sock), 431, "HEADERS_TOO_LARGE")
            assert_closed_by_server(sock)


# -- the connection cap -----------------------------------------------------------------


def test_orch_2007_a_connection_beyond_max_connections_gets_503_server_busy(
    capped: Daemon,
) -> None:
    """With `CAP` connections held, one more is answered 503 SERVER_BUSY with the retry
    hints as it opens, before it sends anything, and closed; the held ones keep being
    served, and once one of them closes a new connection is served again."""
    livez = request_head("/livez")
    held = [connect(capped) for _ in range(CAP)]
    try:
        for sock in held:
            sock.sendall(livez)
            assert read_answer(sock).status == 200
        for sends_first in (False, True):
            with connect(capped) as extra:
                if sends_first:
                    extra.sendall(livez)
                envelope = assert_refused(read_answer(extra), 503, "SERVER_BUSY")
                assert str(CAP) in envelope["message"]
                assert_closed_by_server(extra)
        for sock in held:
            sock.sendall(livez)
            assert read_answer(sock).status == 200
        held.pop().close()

        def served() -> bool:
            with connect(capped) as sock:
                sock.sendall(livez)
                return read_answer(sock).status == 200

        wait_until(served, timeout=5, what="a freed place to be served")
    finally:
        for sock in held:
            sock.close()


# -- HTTP/1.0 streams -------------------------------------------------------------------


def http10_stream(daemon: Daemon, head: bytes, body: bytes = b"") -> bytes:
    """The body of an HTTP/1.0 event stream, read as a 1.0 client does: to the close."""
    with connect(daemon, timeout=30) as sock:
        sock.sendall(head + body)
        data = read_to_close(sock)
    raw_head, payload = data.split(b"\r\n\r\n", 1)
    status, headers = parse_head(raw_head)
    assert status == 200, data[:500]
    assert "transfer-encoding" not in headers, headers
    assert "content-length" not in headers, headers
    assert headers["connection"] == "close"
    assert headers["content-type"].startswith("text/event-stream")
    return payload


def test_orch_2002_a_task_stream_asked_over_http10_is_close_delimited(
    hygienic: Daemon,
) -> None:
    """`GET /v1/tasks/{id}/stream` over HTTP/1.0 comes back unchunked and ends with the
    connection: the bytes up to the close are the SSE frames, in ORCH-2002 order."""
    body = task_body(max_tokens=8)
    hygienic.client().admit(body)
    task_id = str(body["task_id"])
    head = request_head(
        f"/v1/tasks/{task_id}/stream", f"Authorization: Bearer {DATA_KEY}", version="1.0"
    )
    payload = http10_stream(hygienic, head)
    transcript = check_transcript(parse_frames(payload), task_id=task_id)
    assert transcript.terminal.event == "end"
    assert len(transcript.tokens) == 8


def test_orch_2002_an_openai_stream_asked_over_http10_is_close_delimited(
    hygienic: Daemon,
) -> None:
    """A `stream: true` completion over HTTP/1.0 is close-delimited too: `data:` lines
    up to `[DONE]`, then the close."""
    request = {"model": MODEL_REF, "prompt": "Once upon a time", "max_tokens": 8, "stream": True}
    body = json.dumps(request).encode()
    head = request_head(
        "/v1/completions",
        f"Authorization: Bearer {DATA_KEY}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        method="POST",
        version="1.0",
    )
    payload = http10_stream(hygienic, head, body)
    events = [block for block in payload.split(b"\n\n") if block]
    assert events[-1] == b"data: [DONE]"
    chunks = [json.loads(event.removeprefix(b"data: ")) for event in events[:-1]]
    assert chunks and all(chunk["object"] == "text_completion" for chunk in chunks)


# -- configuration ----------------------------------------------------------------------


def test_keepalive_may_not_outlast_the_header_timeout() -> None:
    """An idle kept-alive connection is closed silently before its next head is due, so
    `keepalive_timeout_ms` may equal `header_timeout_ms` but not exceed it."""
    config = daemon_config(engineless_pool(), port=8080)
    config["server"].update(header_timeout_ms=2000, keepalive_timeout_ms=2000)
    assert parse_config(config)[0].server.keepalive_timeout_ms == 2000
    config["server"]["keepalive_timeout_ms"] = 2001
    with pytest.raises(ConfigError, match="keepalive_timeout_ms must not exceed"):
        parse_config(config)


FIT_SCRIPT = """
import resource, sys
from orchestratord_server.http_protocol import fit_connection_cap
for line in sys.stdin:
    wanted, soft, hard = map(int, line.split())
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    cap = fit_connection_cap(wanted)
    print(cap, resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True)
"""


def test_the_open_file_limit_is_raised_for_the_cap_or_the_cap_lowered_to_fit() -> None:
    """The soft limit is raised toward the hard one to hold the cap plus 256 reserved
    descriptors; when the hard limit cannot, the cap is lowered to what fits. (One child
    process; its hard limit only ever goes down.)"""
    cases = {  # (wanted, soft, hard): (cap, soft after)
        (100, 400, 4096): (100, 400),
        (1000, 400, 4096): (1000, 1256),
        (1000, 400, 1024): (768, 1024),
    }
    done = subprocess.run(
        [sys.executable, "-c", FIT_SCRIPT],
        input="".join(f"{w} {s} {h}\n" for w, s, h in cases),
        capture_output=True,
        text=True,
        check=True,
    )
    got = [tuple(map(int, line.split())) for line in done.stdout.splitlines()]
    assert got == list(cases.values())
    assert "lowered to fit the open-file limit" in done.stderr
