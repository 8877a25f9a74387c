"""The operator console: static files the daemon serves at `/console`.

The page is plain HTML, CSS and JavaScript shipped in this package (no build step). It
holds no data of its own and no key: it asks for the control-plane key, keeps it for the
browser tab, and shows only what the public API answers with it (the control-plane event
stream, drain and reload; cancel and a task's stream on the data plane). So the files
are served without a key, with a content security policy that lets the page talk to
this daemon only.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

#: Where the console lives.
CONSOLE_PATH = "/console"
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
}

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _serve(body: bytes, media_type: str) -> Handler:
    async def serve(_request: Request) -> Response:
        return Response(body, media_type=media_type, headers=_HEADERS)

    return serve


def console_routes() -> list[tuple[str, Handler]]:
    """The console's routes: the page at `/console` (and `/console/`), and its files."""
    folder = resources.files(__name__)
    routes = []
    for name, media_type in _FILES.items():
        handler = _serve(folder.joinpath(name).read_bytes(), media_type)
        if name == "index.html":
            routes += [(CONSOLE_PATH, handler), (CONSOLE_PATH + "/", handler)]
        else:
            routes.append((f"{CONSOLE_PATH}/{name}", handler))
    return routes
