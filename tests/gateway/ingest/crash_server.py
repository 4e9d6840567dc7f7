"""A Gatehouse for the kill -9 test: ``python -m tests.gateway.ingest.crash_server ROOT``.

Starts the full Gatehouse of the ingest tests with ``start_gateway`` (its SQLite store and keys
under ROOT) on 127.0.0.1 (a free port), prints ``ready <port>`` and serves until killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import structlog

from gateway.serve.server import start_gateway
from tests.gateway.ingest.support import gatehouse_for_ingest


def utc_now() -> datetime:
    return datetime.now(UTC)


async def main(root: Path) -> None:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=open(os.devnull, "w")))  # noqa: SIM115
    gateway = await start_gateway(gatehouse_for_ingest(root, max_body_bytes=4 * 1024 * 1024), clock=utc_now)
    (_, port), = gateway.addresses
    print(f"ready {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
