"""How the daemon logs (ORCH-3027): the format for the terminal or not, timestamps, the
flag > environment > config precedence, the opt-in access log and engine output lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import re
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import pytest
import yaml

from orchestratord_server import cli
from orchestratord_server.config import Config, LogFormat, ServerConfig, parse_config
from orchestratord_server.engines.command_process import CommandProcess
from orchestratord_server.engines.output import (
    CUT_MARK,
    MAX_LINE_BYTES,
    EngineOutput,
    read_lines,
)
from orchestratord_server.logs import (
    FORMAT_ENV,
    LEVEL_ENV,
    LOG_LEVELS,
    JsonLineFormatter,
    LogSettingError,
    TextFormatter,
    configure_logging,
    log_event,
    log_settings,
    resolve_format,
)
from tests.server.conftest import CONTROL_KEY, DATA_KEY, POOL_CONFIG, make_client

#: 2025-03-04T05:06:07.089Z as a record's creation time.
CREATED = datetime(2025, 3, 4, 5, 6, 7, 89_000, tzinfo=UTC)
TEXT_LINE = re.compile(r"^(\S+) (\w+) +(\S+): (.*)$")


def record(message: str = "pool p is Ready", **fields: Any) -> logging.LogRecord:
    made = logging.LogRecord("orchestratord.pool", logging.INFO, __file__, 1, message, (), None)
    made.created = CREATED.timestamp()
    made.msecs = 89.0
    made.event = "pool.ready"
    made.fields = fields
    return made


# -- formats and timestamps ------------------------------------------------------------


def test_json_lines_carry_an_rfc3339_utc_timestamp() -> None:
    line = json.loads(JsonLineFormatter().format(record(pool_id="p", slots=None)))
    assert line["ts"] == "2025-03-04T05:06:07.089Z"
    assert datetime.fromisoformat(line["ts"]) == CREATED
    assert (line["level"], line["event"], line["pool_id"]) == ("info", "pool.ready", "p")
    assert line["slots"] is None


def test_text_lines_start_with_the_utc_timestamp() -> None:
    match = TEXT_LINE.match(TextFormatter().format(record(pool_id="p", slots=None)))
    assert match is not None
    stamp, level, event, rest = match.groups()
    assert datetime.fromisoformat(stamp) == CREATED
    assert (level, event, rest) == ("info", "pool.ready", "pool p is Ready pool_id=p")


@pytest.fixture
def terminal() -> Iterator[TextIO]:
    """The writing end of a pseudo-terminal, as a text stream."""
    parent, child = pty.openpty()
    try:
        with open(child, "w", encoding="utf-8") as stream:
            yield stream
    finally:
        os.close(parent)


def test_auto_is_text_on_a_terminal_and_json_lines_otherwise(terminal: TextIO) -> None:
    assert resolve_format(LogFormat.auto, terminal) is LogFormat.text
    assert resolve_format(LogFormat.auto, io.StringIO()) is LogFormat.json
    assert resolve_format(LogFormat.json, terminal) is LogFormat.json
    assert resolve_format(LogFormat.text, io.StringIO()) is LogFormat.text


def test_the_flags_offer_the_config_models_values() -> None:
    assert tuple(LogFormat) == cli.LOG_FORMATS
    assert LOG_LEVELS == cli.LOG_LEVELS


# -- precedence: flag > environment > config > default -----------------------------------


TEXT_FILE = ServerConfig(log_format=LogFormat.text, log_level="error")


@pytest.mark.parametrize(
    ("environ", "flags", "chosen"),
    [
        ({}, {}, (LogFormat.text, "error")),
        ({FORMAT_ENV: "json", LEVEL_ENV: "WARNING"}, {}, (LogFormat.json, "warning")),
        (
            {FORMAT_ENV: "auto", LEVEL_ENV: "warning"},
            {"log_format": LogFormat.json, "log_level": "debug"},
            (LogFormat.json, "debug"),
        ),
        ({FORMAT_ENV: "", LEVEL_ENV: " "}, {}, (LogFormat.text, "error")),
    ],
)
def test_flags_beat_the_environment_which_beats_the_config(
    environ: dict[str, str], flags: dict[str, Any], chosen: tuple[LogFormat, str]
) -> None:
    assert log_settings(TEXT_FILE, environ, **flags) == chosen


def test_the_default_is_auto_at_info() -> None:
    assert log_settings(ServerConfig(), {}) == (LogFormat.auto, "info")


@pytest.mark.parametrize("variable", [FORMAT_ENV, LEVEL_ENV])
def test_an_unknown_value_in_the_environment_is_refused(variable: str) -> None:
    with pytest.raises(LogSettingError, match=f"^{variable}='loud' is not one of "):
        log_settings(ServerConfig(), {variable: "loud"}, LogFormat.json, "info")


def test_serve_exits_2_with_one_line_on_a_bad_environment_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"auth": {"api_keys": [DATA_KEY]}, "pools": [POOL_CONFIG]}))
    monkeypatch.setenv(FORMAT_ENV, "xml")
    assert cli.main(["serve", "--config", str(path)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err == f"error: {FORMAT_ENV}='xml' is not one of auto, json, text\n"


# -- the access log ----------------------------------------------------------------------


def access_config(**server: Any) -> Config:
    data = {
        "server": server,
        "auth": {"api_keys": [DATA_KEY], "control_api_keys": [CONTROL_KEY]},
        "pools": [POOL_CONFIG],
    }
    return parse_config(data)[0]


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {"message": r.getMessage(), **r.fields}  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "orchestratord.access" and getattr(r, "event", None) == "http.request"
    ]


def test_access_log_records_route_templates_statuses_and_callers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_client(access_config(access_log=True))
    task_id = str(uuid.uuid4())
    with caplog.at_level(logging.INFO, logger="orchestratord.access"):
        assert client.get(f"/v1/tasks/{task_id}/stream").status_code == 404
        assert client.get("/livez", key=None).status_code == 200
        assert client.get("/v1/replicasets", key=None).status_code == 401
        assert client.running().get("/no/such/route").status_code == 404
    stream, livez, refused, unknown = access_records(caplog)
    assert {k: stream[k] for k in ("method", "route", "status")} == {
        "method": "GET",
        "route": "/v1/tasks/{id}/stream",
        "status": 404,
    }
    assert stream["client_id"].startswith("key-") and DATA_KEY not in stream["client_id"]
    assert (livez["route"], livez["status"], livez["client_id"]) == ("/livez", 200, None)
    assert (refused["route"], refused["status"], refused["client_id"]) == (
        "/v1/replicasets",
        401,
        None,
    )
    assert (unknown["route"], unknown["status"]) == (None, 404)
    for entry in (stream, livez, refused, unknown):
        assert entry["duration_ms"] >= 0
        assert task_id not in json.dumps(entry)


def test_access_log_is_off_by_default(caplog: pytest.LogCaptureFixture) -> None:
    client = make_client(access_config())
    with caplog.at_level(logging.DEBUG):
        assert client.get("/livez", key=None).status_code == 200
    assert not access_records(caplog)


# -- engine output -----------------------------------------------------------------------


def read_all(data: bytes) -> list[str]:
    lines: list[str] = []
    read_lines(io.BytesIO(data), lines.append)
    return lines


def test_engine_lines_are_cut_at_4_kib_and_the_rest_of_the_line_dropped() -> None:
    long = b"x" * (3 * MAX_LINE_BYTES + 10)
    lines = read_all(b"first\r\n" + long + b"\nafter\nlast words without newline")
    assert lines[0] == "first"
    assert lines[1] == "x" * MAX_LINE_BYTES + CUT_MARK
    assert lines[2:] == ["after", "last words without newline"]
    assert read_all(b"y" * (MAX_LINE_BYTES - 1) + b"\n") == ["y" * (MAX_LINE_BYTES - 1)]


def test_a_progress_bar_is_logged_as_its_last_redraw() -> None:
    bar = b"Loading: 10%|#  |\rLoading: 60%|## |\rLoading: 100%|###|\n"
    assert read_all(bar + b"done\r\n") == ["Loading: 100%|###|", "done"]


def engine_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        {"message": r.getMessage(), **r.fields}  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "engine" and getattr(r, "event", None) == "engine.output"
    ]


def test_a_command_engines_output_is_logged_line_by_line_to_its_last_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = (
        "import sys\n"
        "for i in range(20): print('loading', i)\n"
        "print('fatal: out of memory', file=sys.stderr)\n"
        "print('last line', flush=True)\n"
        "sys.exit(3)\n"
    )
    process = CommandProcess(
        [sys.executable, "-c", script], {}, "pool-a/r1", output=EngineOutput("pool-a", "r1")
    )
    with caplog.at_level(logging.INFO, logger="engine"):
        process.start()
        deadline = time.monotonic() + 10
        while process.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert asyncio.run(process.stop()) == 3
    lines = engine_lines(caplog)
    stdout = [line["message"] for line in lines if line["stream"] == "stdout"]
    assert stdout == [f"loading {i}" for i in range(20)] + ["last line"]
    assert [line["message"] for line in lines if line["stream"] == "stderr"] == [
        "fatal: out of memory"
    ]
    assert {(line["pool_id"], line["replica_id"]) for line in lines} == {("pool-a", "r1")}
    assert {"fatal: out of memory", "last line"} <= set(process.output_tail().splitlines())


def test_engine_output_can_be_switched_off(capsys: pytest.CaptureFixture[str]) -> None:
    """`server.engine_output: false` drops the engine's lines and nothing else."""
    saved = logging.getLogger().handlers[:], logging.getLogger().level
    try:
        for engine_output, expected in ((True, True), (False, False)):
            configure_logging(LogFormat.json, "info", engine_output)
            EngineOutput("pool-a", "r1").log("stderr", "llama_model_load: loaded")
            log_event(logging.getLogger("orchestratord.pool"), logging.INFO, "pool.ready", "up")
            lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
            assert ("engine.output" in [line["event"] for line in lines]) is expected
            assert "pool.ready" in [line["event"] for line in lines]
    finally:
        logging.getLogger().handlers[:], level = saved
        logging.getLogger().setLevel(level)
        logging.getLogger("engine").setLevel(logging.NOTSET)
