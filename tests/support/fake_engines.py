"""Misbehaving llama.cpp stand-ins for fault-injection tests (ORCH-3016, ORCH-3038).

:class:`FakeLlamaCpp` is a small aiohttp server on 127.0.0.1, run on its own event loop
in a background thread, that speaks enough of llama.cpp's native API for the daemon to
preload it and stream from it: ``/health``, ``/props``, ``/slots``, ``/tokenize``,
``/metrics`` and streamed ``/completion`` (``data: {json}`` frames, one per token, then a
final frame with ``stop``, ``stop_type``, ``tokens_predicted`` and ``tokens_evaluated``).

What a completion does is its :class:`Behaviour`, read when the request arrives (a test
changes ``engine.behaviour`` between tasks): send every token and the final frame, or
after ``after`` tokens hang (send nothing more, keep the connection open), send one of the
:data:`GARBAGE` frames, or drop the connection without a final frame. ``token_delay_s``
paces the tokens. A preload asks for one token, so any ``after`` of 1 or more leaves
preload alone.

The generated text is ``token_text`` repeated, so a test knows exactly what was generated
(and can look for it in logs). :class:`EngineStats` counts what the engine saw, including
completions whose client went away, so a test can tell that the daemon really closed an
upstream request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from tests.support.background_app import serving

Mode = Literal["normal", "hang", "garbage", "close"]

#: Frames no llama.cpp server sends, each a different way for a stream to be unreadable.
#: The last two are well-formed final frames that lie about how the generation ended.
GARBAGE: dict[str, bytes] = {
    "unparseable-json": b'data: {"content": "tok", "stop\n\n',
    "json-array": b"data: [1, 2, 3]\n\n",
    "content-not-text": b'data: {"content": 42, "stop": false}\n\n',
    "stop-not-bool": b'data: {"content": "tok", "stop": "yes"}\n\n',
    "invalid-utf8": b"data: \xff\xfe\xfd\n\n",
    "oversized-line": b"data: " + b"x" * (5 * 1024 * 1024),
    "unknown-stop-type": (
        b'data: {"content": "", "stop": true, "stop_type": "banana", '
        b'"tokens_predicted": 1, "tokens_evaluated": 1}\n\n'
    ),
    "negative-token-count": (
        b'data: {"content": "", "stop": true, "stop_type": "limit", '
        b'"tokens_predicted": -3, "tokens_evaluated": 1}\n\n'
    ),
}


@dataclass(frozen=True)
class Behaviour:
    """What the next completions do: ``mode`` after ``after`` tokens, paced by a delay.

    ``coalesce`` holds the tokens back and sends them in one write with what follows
    them (the garbage frame), so the daemon reads both in one piece. ``then_refuse``
    makes the engine, once it has misbehaved, answer every completion with HTTP 503 (as
    an engine that is restarting would) until a test clears ``engine.refusing``.
    """

    mode: Mode = "normal"
    after: int = 0
    garbage: str = "unparseable-json"
    token_delay_s: float = 0.0
    coalesce: bool = False
    then_refuse: bool = False


@dataclass
class EngineStats:
    """What the engine saw: completions begun, ended with a final frame, ended without
    one (the engine cut them or the client went away), and those still being answered."""

    completions: int = 0
    finished: int = 0
    cut: int = 0
    active: int = 0


@dataclass
class FakeLlamaCpp:
    """A fake llama.cpp server; use :func:`fake_llamacpp` to run one."""

    slots: int = 2
    ctx_per_slot: int = 16_384
    token_text: str = "fake"
    behaviour: Behaviour = field(default_factory=Behaviour)
    stats: EngineStats = field(default_factory=EngineStats)
    refusing: bool = False
    #: False makes /health answer 503, as an overloaded or loading server does.
    healthy: bool = True
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/props", self._props)
        app.router.add_get("/slots", self._slots)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/completion", self._completion)
        return app

    async def _health(self, _request: web.Request) -> web.Response:
        if not self.healthy:
            error = {"code": 503, "message": "Loading model", "type": "unavailable_error"}
            return web.json_response({"error": error}, status=503)
        return web.json_response({"status": "ok"})

    async def _props(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "default_generation_settings": {"n_ctx": self.ctx_per_slot},
                "total_slots": self.slots,
                "model_path": "/nonexistent/fake-model.gguf",
                "build_info": "fake-llamacpp",
            }
        )

    async def _slots(self, _request: web.Request) -> web.Response:
        busy = self.stats.active
        return web.json_response([{"id": i, "is_processing": i < busy} for i in range(self.slots)])

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"tokens": list(range(len(str(body.get("content", ""))) + 1))})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=f"llamacpp:requests_processing {self.stats.active}\n")

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        if self.refusing:
            error = {"code": 503, "message": "the engine is restarting"}
            return web.json_response({"error": error}, status=503)
        body = await request.json()
        behaviour = self.behaviour
        wanted = int(body.get("n_predict", 16))
        prompt_tokens = len(str(body.get("prompt", ""))) + 1
        self.stats.completions += 1
        self.stats.active += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        held = b""
        try:
            await response.prepare(request)
            for index in range(wanted):
                if index == behaviour.after and behaviour.mode != "normal":
                    await self._misbehave(request, response, behaviour, held)
                    return response
                if behaviour.token_delay_s:
                    await asyncio.sleep(behaviour.token_delay_s)
                token = _frame({"content": self.token_text, "stop": False})
                if behaviour.coalesce:
                    held += token
                else:
                    await response.write(token)
            final = {
                "content": "",
                "stop": True,
                "stop_type": "limit",
                "tokens_predicted": wanted,
                "tokens_evaluated": prompt_tokens,
                "generation_settings": {"seed": body.get("seed", 0)},
            }
            await response.write(held + _frame(final))
            await response.write_eof()
            self.stats.finished += 1
        except ConnectionError:  # the client went away while tokens were written
            self.stats.cut += 1
        except asyncio.CancelledError:
            self.stats.cut += 1
            raise
        finally:
            self.stats.active -= 1
        return response

    async def _misbehave(
        self, request: web.Request, response: web.StreamResponse, behaviour: Behaviour, held: bytes
    ) -> None:
        transport = request.transport
        if behaviour.then_refuse:
            self.refusing = True
        if behaviour.mode == "garbage":
            await response.write(held + GARBAGE[behaviour.garbage])
        elif held:
            await response.write(held)
        if behaviour.mode == "close" and transport is not None:
            transport.abort()
        # Hang (and after garbage, stay silent) until the client goes away.
        while transport is not None and not transport.is_closing():
            await asyncio.sleep(0.02)
        self.stats.cut += 1


def _frame(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


@contextmanager
def fake_llamacpp(**settings: object) -> Iterator[FakeLlamaCpp]:
    """Run a :class:`FakeLlamaCpp` on a loopback port in a background thread."""
    engine = FakeLlamaCpp(**settings)  # type: ignore[arg-type]
    with serving(engine.app(), "fake-llamacpp") as port:
        engine.port = port
        yield engine
