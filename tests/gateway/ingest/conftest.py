"""Fixtures for the ingest tests: a real SQLite store in tmp_path, a fake clock, the ingest app on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from gateway.ingest.config import IngestSettings
from gateway.metrics import Metrics
from gateway.snapshots import SnapshotCache
from gateway.store.sqlite import SqliteStore
from tests.gateway.ingest.support import FakeClock, build_ingest_app, ingest_settings


@pytest.fixture
def clock(now: datetime) -> FakeClock:
    return FakeClock(now)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "var" / "gatehouse.db")
    yield opened
    await opened.close()


@pytest.fixture
def settings() -> IngestSettings:
    return ingest_settings()


@dataclass
class Ingest:
    """The running ingest app: its client, cache, store and clock."""

    client: TestClient
    cache: SnapshotCache
    store: SqliteStore
    clock: FakeClock
    metrics: Metrics


@pytest.fixture
async def ingest(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    store: SqliteStore,
    settings: IngestSettings,
    clock: FakeClock,
    metrics: Metrics,
) -> Ingest:
    app, cache = build_ingest_app(store, settings, clock, metrics=metrics)
    await cache.load()
    client = await aiohttp_client(app)
    return Ingest(client, cache, store, clock, metrics)
