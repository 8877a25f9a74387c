"""Start a real llama.cpp server for a test module (ORCH-3054).

``llamacpp_server(model_path, slots=2)`` is a plain context manager, usable from a
module- or session-scoped pytest fixture: it starts a
:class:`~orchestratord_server.engines.llamacpp_process.LlamaCppProcess`, yields it, and
stops it. Tests talk to it under their own ``asyncio.run`` calls; the process object
holds no event-loop resources, so that is safe. ``adapter_for(process)`` gives such a
call an adapter (aiohttp sessions belong to one loop, so one adapter per ``asyncio.run``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from orchestratord_server.adapters.base import AdapterSettings
from orchestratord_server.adapters.http import HttpTimeouts
from orchestratord_server.adapters.llamacpp import LlamaCppAdapter
from orchestratord_server.engines.llamacpp_process import LlamaCppProcess, LlamaCppServerConfig

#: Threads for test engines: the machines running the suite have two cores.
TEST_THREADS = 2


@contextmanager
def llamacpp_server(
    model_path: Path,
    *,
    slots: int = 2,
    ctx_per_slot: int = 2048,
    threads: int = TEST_THREADS,
    start_timeout_s: float = 60.0,
) -> Iterator[LlamaCppProcess]:
    """A running llama.cpp server on ``model_path``, stopped on exit."""
    process = LlamaCppProcess(
        LlamaCppServerConfig(
            model_path=model_path,
            n_ctx=ctx_per_slot * slots,
            n_parallel=slots,
            threads=threads,
            start_timeout_s=start_timeout_s,
        )
    )
    asyncio.run(process.start())
    try:
        yield process
    finally:
        asyncio.run(process.stop())


@asynccontextmanager
async def adapter_for(
    process: LlamaCppProcess, *, timeouts: HttpTimeouts | None = None
) -> AsyncIterator[LlamaCppAdapter]:
    """An adapter wired to ``process`` the way the daemon wires one, closed on exit."""
    settings = AdapterSettings(
        process.base_url,
        model_path=process.config.model_path,
        engine_version=process.engine_version,
    )
    adapter = LlamaCppAdapter(settings, timeouts or HttpTimeouts())
    try:
        yield adapter
    finally:
        await adapter.close()
