"""Fixtures for the ingest tests: a full Gatehouse with a SQLite store in tmp_path and a fake clock, on 127.0.0.1.

The app is served by ``aiohttp_client`` (tests/conftest.py), that is by Gatehouse's own listener
with the proxy and the handler settings of ``gatehouse serve``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.ingest.pipeline import ComplianceRecorder
from gateway.keys import SNAPSHOT_CACHE, STORE
from gateway.metrics import Metrics
from gateway.store.snapshots import SnapshotCache
from gateway.store.base import Store
from gateway.store.sqlite import SqliteStore
from tests.gateway.ingest.support import FakeClock, build_ingest_app, gatehouse_for_ingest


@pytest.fixture
def clock(now: datetime) -> FakeClock:
    return FakeClock(now)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A SQLite store of its own, for the tests of plain functions (the importer); apps open theirs."""
    opened = await SqliteStore.open(tmp_path / "plain" / "gatehouse.db")
    yield opened
    await opened.close()


@dataclass
class Ingest:
    """The running Gatehouse: its client, and the cache and store it opened, its clock and metrics."""

    client: TestClient
    cache: SnapshotCache
    store: Store
    clock: FakeClock
    metrics: Metrics

    @property
    def app(self) -> web.Application:
        return self.client.app  # type: ignore[return-value]


StartIngest = Callable[..., Awaitable[Ingest]]


@pytest.fixture
def start_ingest(
    aiohttp_client: Callable[..., Awaitable[TestClient]], tmp_path: Path, clock: FakeClock, metrics: Metrics
) -> StartIngest:
    """Start a Gatehouse whose ``ingest:`` section is the tests' with ``overrides``; optionally with a recorder."""
    started = 0

    async def start(recorder: ComplianceRecorder | None = None, **overrides: Any) -> Ingest:
        nonlocal started
        started += 1
        settings = gatehouse_for_ingest(tmp_path / f"gatehouse-{started}", **overrides)
        app = build_ingest_app(settings, clock, metrics=metrics, recorder=recorder)
        client = await aiohttp_client(app)
        return Ingest(client, app[SNAPSHOT_CACHE], app[STORE], clock, metrics)

    return start


@pytest.fixture
async def ingest(start_ingest: StartIngest) -> Ingest:
    return await start_ingest()
