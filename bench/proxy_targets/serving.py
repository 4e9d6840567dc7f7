"""Run an aiohttp application or low-level handler on one address until SIGTERM or SIGINT.

Owns: serve (used by every Python target's ``main``).
Must not import: gateway.

Access logs are off: every target is measured without per-request logging (nginx too).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Awaitable, Callable

from aiohttp import web

LowLevelHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


async def _serve(target: web.Application | LowLevelHandler, host: str, port: int) -> None:
    runner: web.BaseRunner
    if isinstance(target, web.Application):
        runner = web.AppRunner(target, access_log=None, handle_signals=False)
    else:
        runner = web.ServerRunner(web.Server(target, access_log=None), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(target: web.Application | LowLevelHandler, host: str, port: int) -> None:
    """Serve ``target`` on host:port until SIGTERM or SIGINT, then close it cleanly."""
    asyncio.run(_serve(target, host, port))
