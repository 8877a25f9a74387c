"""The daemon's own work per streamed token, in one process, without sockets.

A token crosses four steps between the engine's socket and the client's: the SSE decoder
splits the engine's bytes into events (`adapters/sse.py`), the adapter turns an event
into a chunk (`adapters/llamacpp.py`), the runtime encodes the SSE frame
(`transcripts.token_frame`) and appends it to the task's transcript, which hands the
frames of each loop turn to the stream parked on it (`Transcript.park`; the write is a
list append here, a socket write in the daemon; on asyncio's loop, as in the daemon). This bench
feeds real llama.cpp token frames (as the engine writes them, one frame per read)
through those steps, and once more as HTTP chunks through the protocol that reads
llama.cpp's stream in its data callback (`adapters/push.py`), and reports the cost of
each and of the whole, in microseconds per token: the part of the per-token cost that
code in this repository decides (the rest is the HTTP server, the HTTP client and the
kernel, see the profile section).

The commit of `--baseline-rev` runs its own token bench first (bench/baseline.py), so the
section holds the figures of both builds of one run.

Run: `python -m bench tokens [--tokens N] [--baseline-rev REV|none]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import Callable, Sequence

from bench.baseline import SPEED_BASELINE_REV, own_bench
from bench.results import conditions, write_section
from orchestratord_server.adapters.base import FinalChunk, StreamChunk
from orchestratord_server.adapters.llamacpp import chunks_from_event
from orchestratord_server.adapters.push import StreamProtocol
from orchestratord_server.adapters.sse import SseDecoder, SseEvent
from orchestratord_server.transcripts import Transcript, token_frame

SECTION = "## Per-token work in the daemon's own code"
REPEATS = 5


def engine_frames(count: int) -> list[bytes]:
    """`count` token frames shaped as llama.cpp's `/completion` stream writes them."""
    frames = []
    for index in range(count):
        frame = {
            "index": 0,
            "content": " word" if index % 3 else "é",
            "tokens": [1000 + index % 50],
            "stop": False,
            "id_slot": 3,
            "tokens_predicted": index + 1,
            "tokens_evaluated": 14,
        }
        frames.append(b"data: " + json.dumps(frame, separators=(",", ":")).encode() + b"\n\n")
    return frames


def _best(step: Callable[[], None], count: int) -> float:
    """Best of REPEATS runs of `step`, in microseconds per token."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def measure(count: int) -> dict[str, float]:
    """Microseconds per token of each step and of the whole path."""
    frames = engine_frames(count)
    events = [SseEvent("message", f[6:-2].decode()) for f in frames]
    texts = [f"tok{i % 50}" for i in range(count)]
    encoded = [token_frame(t, i) for i, t in enumerate(texts)]

    def decode() -> None:
        decoder = SseDecoder()
        for frame in frames:
            decoder.feed(frame)

    def parse() -> None:
        for event in events:
            chunks_from_event(event)

    def encode() -> None:
        for index, text in enumerate(texts):
            token_frame(text, index)

    def deliver() -> None:
        asyncio.run(_deliver(encoded))

    def whole() -> None:
        asyncio.run(_whole(frames))

    def pushed() -> None:
        asyncio.run(_pushed(frames))

    return {
        "SSE decode (SseDecoder.feed)": _best(decode, count),
        "event to chunk (chunks_from_event)": _best(parse, count),
        "frame encode (token_frame)": _best(encode, count),
        "transcript append, flush to a parked stream (one loop turn)": _best(deliver, count),
        "whole path": _best(whole, count),
        "whole path read by the push protocol (HTTP chunk parse, decode, parse, take)": _best(
            pushed, count
        ),
    }


async def _consume(transcript: Transcript) -> None:
    """A stream parked on `transcript` until its end, as the daemon's HTTP streams are."""
    written: list[bytes] = []

    def write(data: bytes) -> bool:
        written.append(data)
        return True

    await transcript.park(0, write).woken


async def _deliver(frames: list[bytes]) -> None:
    """Append each frame to a transcript a stream is parked on, and let the frame go out
    before the next (one token per engine read)."""
    transcript = Transcript()
    subscriber = asyncio.create_task(_consume(transcript))
    await asyncio.sleep(0)
    for frame in frames[:-1]:
        transcript.append(frame)
        await asyncio.sleep(0)
    transcript.close(frames[-1])
    await subscriber


async def _whole(frames: list[bytes]) -> None:
    transcript = Transcript()
    subscriber = asyncio.create_task(_consume(transcript))
    await asyncio.sleep(0)
    decoder = SseDecoder()
    index = 0
    for frame in frames:
        for event in decoder.feed(frame):
            for chunk in chunks_from_event(event):
                transcript.append(token_frame(chunk.text, index))  # type: ignore[union-attr]
                index += 1
        await asyncio.sleep(0)
    transcript.close(b"event: end\ndata: {}\n\n")
    await subscriber


class _Socket(asyncio.Transport):
    """The engine connection's transport, without a socket."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def close(self) -> None:
        pass


async def _pushed(frames: list[bytes]) -> None:
    """`_whole`, with the frames arriving as HTTP chunks at the llama.cpp relay's
    protocol (`adapters/push.py`), which runs the steps in its data callback."""
    transcript = Transcript()
    subscriber = asyncio.create_task(_consume(transcript))
    await asyncio.sleep(0)
    index = 0

    def take(chunk: StreamChunk) -> bool:
        nonlocal index
        if isinstance(chunk, FinalChunk):
            transcript.close(b"event: end\ndata: {}\n\n")
            return False
        transcript.append(token_frame(chunk.text, index))
        index += 1
        return True

    protocol = StreamProtocol(b"", chunks_from_event, take, "bench", 60.0)
    protocol.connection_made(_Socket())
    protocol.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    final = b'data: {"content":"","stop":true,"stop_type":"limit","tokens_predicted":1,'
    final += b'"tokens_evaluated":1}\n\n'
    for frame in [*frames, final]:
        protocol.data_received(b"%x\r\n%s\r\n" % (len(frame), frame))
        await asyncio.sleep(0)
    await subscriber
    await protocol.done


_ROW = re.compile(r"^\| (?P<step>[^|]+?) \| (?P<cost>[\d.]+) \|$")


def measure_baseline(rev: str, count: int) -> tuple[str, dict[str, float]]:
    """`rev`'s own token bench (its own steps, on its own code): short hash and rows."""
    short, out = own_bench(rev, ["tokens", "--no-write", "--tokens", str(count)])
    rows = {m["step"]: float(m["cost"]) for line in out.splitlines() if (m := _ROW.match(line))}
    if not rows:
        raise RuntimeError(f"the baseline's token bench printed no table:\n{out[-2000:]}")
    return short, rows


def _render(
    result: dict[str, float],
    count: int,
    machine: str,
    before: tuple[str, dict[str, float]] | None,
) -> str:
    lines = [
        SECTION,
        "",
        f"{machine} Command: `python -m bench tokens --tokens {count}`; best of "
        f"{REPEATS} runs of {count:,} llama.cpp token frames, one frame per read.",
        "",
        "| step | µs per token |",
        "|---|---:|",
    ]
    lines += [f"| {step} | {cost:.2f} |" for step, cost in result.items()]
    if before is not None:
        short, rows = before
        lines += [
            "",
            f"Same run, commit `{short}` (its own bench on its own code, in a git worktree, "
            "imports checked; its steps were the path of that commit):",
            "",
            "| step (before) | µs per token |",
            "|---|---:|",
            *(f"| {step} | {cost:.2f} |" for step, cost in rows.items()),
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """`python -m bench tokens`: measure, then update RESULTS.md."""
    parser = argparse.ArgumentParser(prog="python -m bench tokens", description=__doc__)
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument(
        "--baseline-rev",
        default=SPEED_BASELINE_REV,
        help="the commit whose own token bench runs first ('none': skip)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    ns = parser.parse_args(argv)
    machine = conditions()
    before = None if ns.baseline_rev == "none" else measure_baseline(ns.baseline_rev, ns.tokens)
    text = _render(measure(ns.tokens), ns.tokens, machine, before)
    print(text)
    if not ns.no_write:
        write_section(SECTION, text)
    return 0
