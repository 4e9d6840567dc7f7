"""A small ingest app (routes + keys) for the tests and for the kill -9 subprocess."""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gateway.ingest.config import IngestSettings
from gateway.ingest.http import add_ingest_routes
from gateway.ingest.pipeline import ComplianceRecorder
from gateway.keys import CLOCK, COMPLIANCE_RECORDER, INGEST_SETTINGS, METRICS, SNAPSHOT_CACHE, STORE
from gateway.metrics import Metrics
from gateway.secret import Secret
from gateway.snapshots import SnapshotCache
from gateway.store.base import Store

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "osquery"
ENROLL_SECRET = "zt-enroll-secret-7b1e"
API_TOKEN = "ingest-token-for-tests"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def ingest_settings(**overrides: Any) -> IngestSettings:
    """Settings with one API token and the fixtures' enroll secret."""
    values: dict[str, Any] = {
        "api_tokens": (Secret(API_TOKEN),),
        "osquery_enroll_secrets": (Secret("old-secret"), Secret(ENROLL_SECRET)),
        "max_body_bytes": 256 * 1024,
    }
    values.update(overrides)
    return IngestSettings(**values)


def build_ingest_app(
    store: Store,
    settings: IngestSettings,
    clock: FakeClock | Any,
    *,
    metrics: Metrics | None = None,
    recorder: ComplianceRecorder | None = None,
) -> tuple[web.Application, SnapshotCache]:
    """The ingest routes and the keys they read, as the lead's create_app will wire them."""
    app = web.Application()
    cache = SnapshotCache(store, metrics=metrics, refresh_interval_s=settings.cache_refresh_s)
    app[STORE] = store
    app[SNAPSHOT_CACHE] = cache
    app[INGEST_SETTINGS] = settings
    app[CLOCK] = clock
    if metrics is not None:
        app[METRICS] = metrics
    if recorder is not None:
        app[COMPLIANCE_RECORDER] = recorder
    add_ingest_routes(app)
    return app, cache


def fixture(name: str) -> Any:
    """A fixture payload, parsed."""
    return orjson.loads((FIXTURES / name).read_bytes())


def gzipped(payload: object) -> bytes:
    return gzip.compress(orjson.dumps(payload))
