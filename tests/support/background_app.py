"""Serve an aiohttp application from a background thread, for fake engines in tests.

The test's own code stays synchronous (it drives the daemon over HTTP) while the fake
answers on its own event loop; `serving` yields the loopback port once it listens and
shuts the application and its loop down on exit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from aiohttp import web


@contextmanager
def serving(app: web.Application, name: str) -> Iterator[int]:
    """Run ``app`` on 127.0.0.1 and a free port; yield the port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return int(runner.addresses[0][1])

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    finally:
        with suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
