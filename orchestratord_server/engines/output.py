"""What a started engine writes, as log records (ORCH-3027): one `engine.output` per line.

Records go to the logger `engine` at info level with `pool_id`, `replica_id` and `stream`
(`stdout` or `stderr`); the message is the line. llama.cpp at its default verbosity writes
about fifteen lines while it loads and seven per request it serves (slot chosen, timings,
slot released) and nothing for health, slot or metrics polls, so info level costs about
what the daemon's own task records do. The engine's text is logged as it comes: an engine
started from a `command` must not be told to log prompts (vLLM does only with
`--enable-log-requests`).

`read_lines` runs on a reader thread per pipe, so the event loop never waits on an
engine; it reads to the end of the pipe, so the last lines of an engine that dies are
logged too. A line is cut at `MAX_LINE_BYTES` (what follows, up to its newline, is
dropped) so an engine cannot make the daemon hold or log unbounded text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Literal

from orchestratord_server.logs import ENGINE_LOGGER, log_event

MAX_LINE_BYTES = 4096
#: Appended to a line cut at MAX_LINE_BYTES.
CUT_MARK = "…"

Stream = Literal["stdout", "stderr"]

_log = logging.getLogger(ENGINE_LOGGER)


@dataclass(frozen=True, slots=True)
class EngineOutput:
    """Where an engine's lines are logged from: its pool and replica."""

    pool_id: str | None = None
    replica_id: str | None = None

    def log(self, stream: Stream, line: str) -> None:
        """Log one line the engine wrote on `stream`."""
        log_event(
            _log,
            logging.INFO,
            "engine.output",
            line,
            pool_id=self.pool_id,
            replica_id=self.replica_id,
            stream=stream,
        )


#: The output of an engine that is not a replica of a pool (benchmarks, tests).
NOT_A_REPLICA = EngineOutput()


def read_lines(stream: IO[bytes], handle: Callable[[str], None]) -> None:
    """Hand each line of `stream` to `handle` (decoded, without its line ending, only its
    last carriage-return redraw, cut at MAX_LINE_BYTES) until the end of the stream, then
    close it."""
    with stream:
        skipping = False
        while chunk := stream.readline(MAX_LINE_BYTES):
            whole = chunk.endswith(b"\n") or len(chunk) < MAX_LINE_BYTES
            if not skipping:
                text = chunk.decode("utf-8", "replace").rstrip("\r\n")
                # A progress bar redraws itself after carriage returns: keep what a
                # terminal would show, the last redraw.
                text = text.rsplit("\r", 1)[-1]
                handle(text if whole else text + CUT_MARK)
            skipping = not whole
