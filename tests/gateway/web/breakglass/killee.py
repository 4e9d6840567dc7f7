"""The process the kill -9 test kills: the break-glass routes over the SQLite audit log, on 127.0.0.1.

Run as ``python -m tests.gateway.web.breakglass.killee DB_PATH``; prints ``listening PORT`` once
it accepts requests, then serves until killed. Identity comes from the test headers (see support).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from aiohttp import web

from breakglass import BreakglassService
from gateway.store.sqlite_audit import SqliteAuditSink
from tests.gateway.web.breakglass.support import FakeClock, build_app, make_settings


async def main(path: str) -> None:
    settings = make_settings(self_grant_limit=1000)
    sink = await SqliteAuditSink.open(path)
    service = await BreakglassService.open(sink, config=settings.to_config())  # verifies the log first
    harness = build_app(sink=sink, service=service, settings=settings, clock=FakeClock(datetime.now(UTC)))
    runner = web.AppRunner(harness.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"listening {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
