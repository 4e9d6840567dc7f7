"""Fixtures of the connector tests: contract servers on 127.0.0.1, a SQLite store, a fake clock and sleep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config.ingest import FleetConnectorSettings, JamfConnectorSettings
from gateway.ingest.connectors import ConnectorRunner, FleetConnector, JamfConnector
from gateway.ingest.pipeline import Ingestor
from gateway.metrics import Metrics
from gateway.store.snapshots import SnapshotCache
from gateway.store.sqlite import SqliteStore
from tests.gateway.ingest.connectors.contract import FLEET_TOKEN, JAMF_CLIENT, VendorState, fleet_app, jamf_app
from tests.gateway.ingest.support import FakeClock


class FakeSleep:
    """Records each wait and moves the fake clock by it instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds=seconds)


@pytest.fixture
def clock(now: datetime) -> FakeClock:
    return FakeClock(now)


@pytest.fixture
def sleep(clock: FakeClock) -> FakeSleep:
    return FakeSleep(clock)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "gatehouse.db")
    yield opened
    await opened.close()


@pytest.fixture
def vendor() -> VendorState:
    return VendorState()


Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a contract server on 127.0.0.1; returns its base URL."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


def fleet_settings(url: str, **overrides: Any) -> FleetConnectorSettings:
    values: dict[str, Any] = {
        "kind": "fleet", "name": "corp", "url": url, "api_token": {"value": FLEET_TOKEN}, "page_size": 2, "timeout_s": 0.5,
        "policy_map": {"Firewall enabled (macOS)": "firewall_enabled", "Screen lock within 5 minutes": "custom.screen_lock_5min"},
    }
    values.update(overrides)
    return FleetConnectorSettings.model_validate(values)


def jamf_settings(url: str, **overrides: Any) -> JamfConnectorSettings:
    values: dict[str, Any] = {
        "kind": "jamf", "name": "macs", "url": url, "client_id": {"value": JAMF_CLIENT[0]},
        "client_secret": {"value": JAMF_CLIENT[1]}, "page_size": 2, "timeout_s": 0.5,
    }
    values.update(overrides)
    return JamfConnectorSettings.model_validate(values)


MakeRunner = Callable[..., Awaitable[ConnectorRunner]]


@pytest.fixture
async def make_runner(
    serve: Serve, vendor: VendorState, store: SqliteStore, clock: FakeClock, sleep: FakeSleep, metrics: Metrics
) -> AsyncIterator[MakeRunner]:
    """A runner of a Fleet or Jamf connector against its contract server, storing into the test's store."""

    async def make(kind: str, *, holder: str = "replica-a", url: str | None = None, app: web.Application | None = None,
                   **overrides: Any) -> ConnectorRunner:
        skew = timedelta(minutes=5)
        if kind == "fleet":
            base = url or await serve(app or fleet_app(vendor))
            connector: Any = FleetConnector(fleet_settings(base, **overrides), sleep=sleep, max_future_skew=skew)
        else:
            base = url or await serve(app or jamf_app(vendor))
            connector = JamfConnector(jamf_settings(base, **overrides), sleep=sleep, clock=clock, max_future_skew=skew)
        cache = SnapshotCache(store, metrics=metrics)
        runner = ConnectorRunner(connector, store=store, owners=store, ingestor=Ingestor(store, cache, metrics=metrics), clock=clock,
                                 sleep=sleep, holder=holder, every_s=300, stale_after_s=3600, metrics=metrics)
        made.append(runner)
        return runner

    made: list[ConnectorRunner] = []
    yield make
    for runner in made:
        await runner.connector.close()
