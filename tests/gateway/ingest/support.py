"""The ingest tests' Gatehouse: a full app from ``create_app``, served as ``gatehouse serve`` serves it.

The ingest endpoints are tested only through the production listener (``tests/serving.py``): the
handler settings ``gatehouse serve`` uses (no automatic request-body decompression, its limits)
are the ones these tests run under. The kill -9 subprocess starts the same app with
``start_gateway``.
"""

from __future__ import annotations

import gzip
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gateway.app import create_app
from gateway.config.ingest import IngestSettings
from gateway.ingest.pipeline import ComplianceRecorder
from gateway.keys import COMPLIANCE_RECORDER
from gateway.metrics import Metrics
from gateway.config.secret import Secret
from gateway.config.settings import Settings
from tests.gateway.fullstack import Keys, gatehouse_settings

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "osquery"
ENROLL_SECRET = "zt-enroll-secret-7b1e"
API_TOKEN = "ingest-token-for-tests"
UNUSED_UPSTREAM = "http://127.0.0.1:9"
"""The routes' upstream; the ingest endpoints never reach it."""


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def ingest_section(**overrides: Any) -> dict[str, Any]:
    """The ``ingest:`` section of the tests' settings file: one API token, the fixtures' enroll secret, small bodies."""
    values: dict[str, Any] = {
        "api_tokens": [{"value": API_TOKEN}],
        "osquery_enroll_secrets": [{"value": "old-secret"}, {"value": ENROLL_SECRET}],
        "max_body_bytes": 256 * 1024,
    }
    values.update(overrides)
    return values


def ingest_settings(**overrides: Any) -> IngestSettings:
    """IngestSettings as ``ingest_section`` writes them, for the tests of plain functions."""
    values: dict[str, Any] = {
        "api_tokens": (Secret(API_TOKEN),),
        "osquery_enroll_secrets": (Secret("old-secret"), Secret(ENROLL_SECRET)),
        "max_body_bytes": 256 * 1024,
    }
    values.update(overrides)
    return IngestSettings(**values)


def store_path(root: Path) -> Path:
    """Where the test Gatehouse under ``root`` keeps its SQLite store."""
    return root / "var" / "gatehouse.db"


def gatehouse_for_ingest(root: Path, **ingest: Any) -> Settings:
    """Settings of a full Gatehouse under ``root`` (keys, SQLite store) with ``ingest_section(**ingest)``."""
    keys = Keys(root / "keys")
    return gatehouse_settings(keys, store=f"sqlite:///{store_path(root)}", upstream=UNUSED_UPSTREAM, ingest=ingest_section(**ingest))


def build_ingest_app(
    settings: Settings,
    clock: FakeClock | Any,
    *,
    metrics: Metrics | None = None,
    recorder: ComplianceRecorder | None = None,
) -> web.Application:
    """The full Gatehouse app (``create_app``), with the test's compliance recorder in place of the policy's when given."""
    app = create_app(settings, clock=clock, metrics=metrics)
    if recorder is not None:
        app[COMPLIANCE_RECORDER] = recorder
    return app


def fixture(name: str) -> Any:
    """A fixture payload, parsed."""
    return orjson.loads((FIXTURES / name).read_bytes())


def gzipped(payload: object) -> bytes:
    return gzip.compress(orjson.dumps(payload))
