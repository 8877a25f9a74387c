"""A misbehaving llama.cpp stand-in: each route answers whatever it is told.

:class:`ScriptedEngine` runs a small aiohttp server on 127.0.0.1 in a thread of its own.
A test sets ``scripts`` (route → :class:`Script`: status, body pieces written one by one,
and whether to cut the connection instead of ending the response; ``"*"`` for any other
route) and then drives the real adapter, or a whole app, against it. :func:`healthy`
gives the scripts of a well-behaved llama.cpp server with one slot, whose preload decode
(the daemon's fixed preload prompt) always succeeds, so only the tasks' completions
misbehave.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from orchestratord_server.runtime.replicas import PRELOAD_PROMPT

START_TIMEOUT_S = 10.0
#: The key of the script that answers the daemon's preload decode.
PRELOAD = "preload"


@dataclass(frozen=True)
class Script:
    status: int = 200
    parts: list[bytes] = field(default_factory=list)
    abort: bool = False


def sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


TOKEN = sse({"content": "a", "stop": False})
FINAL = sse(
    {
        "content": "",
        "stop": True,
        "stop_type": "limit",
        "tokens_predicted": 1,
        "tokens_evaluated": 2,
        "generation_settings": {"seed": 3},
    }
)
PROPS = {
    "total_slots": 1,
    "default_generation_settings": {"n_ctx": 2048},
    "model_path": "/nowhere/scripted.gguf",
    "build_info": "b0-scripted",
}


def healthy() -> dict[str, Script]:
    """The scripts of a llama.cpp server that answers every control call correctly."""

    def ok(body: Any) -> Script:
        return Script(parts=[json.dumps(body).encode()])

    return {
        "/health": ok({"status": "ok"}),
        "/props": ok(PROPS),
        "/slots": ok([{"id": 0, "is_processing": False}]),
        "/tokenize": ok({"tokens": [1, 2, 3]}),
        "/metrics": Script(parts=[b"# no metrics\n"]),
        PRELOAD: Script(parts=[TOKEN, FINAL]),
        "/completion": Script(parts=[TOKEN, FINAL]),
    }


class ScriptedEngine:
    """Start with :meth:`start`, stop with :meth:`stop`; ``base_url`` once started."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def _script_for(self, path: str, body: bytes) -> Script:
        if path == "/completion" and PRELOAD in self.scripts:
            try:
                prompt = json.loads(body).get("prompt")
            except (ValueError, AttributeError):
                prompt = None
            if prompt == PRELOAD_PROMPT:
                return self.scripts[PRELOAD]
        return self.scripts.get(path) or self.scripts["*"]

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        script = self._script_for(request.path, await request.read())
        content_type = "text/event-stream" if request.path == "/completion" else "application/json"
        response = web.StreamResponse(status=script.status, headers={"Content-Type": content_type})
        await response.prepare(request)
        for part in script.parts:
            await response.write(part)
        if script.abort and request.transport is not None:
            request.transport.abort()
            return response
        await response.write_eof()
        return response

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{route:.*}", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def start(self) -> ScriptedEngine:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(START_TIMEOUT_S)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            cleanup.result(START_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)
        self._loop.close()
