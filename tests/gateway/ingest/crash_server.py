"""A tiny Gatehouse ingest server for the kill -9 test: ``python -m tests.gateway.ingest.crash_server DB``.

Opens the SQLite store, serves the ingest routes on 127.0.0.1 (a free port), prints
``ready <port>`` and serves until killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import structlog
from aiohttp import web

from gateway.store.sqlite import SqliteStore
from tests.gateway.ingest.support import build_ingest_app, ingest_settings


def utc_now() -> datetime:
    return datetime.now(UTC)


async def main(db: Path) -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=open(os.devnull, "w")))  # noqa: SIM115
    store = await SqliteStore.open(db)
    app, cache = build_ingest_app(store, ingest_settings(max_body_bytes=4 * 1024 * 1024), utc_now)
    await cache.load()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"ready {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
