"""Fixtures every test may use: a fixed clock, a fresh metrics registry, the log lines as served, a throwaway PostgreSQL.

Services the tests drive for real (PostgreSQL here, Chromium and the OpenID provider in their own
conftests) are started by the fixtures themselves. Outside CI a missing service skips its tests
with the command that installs it; in CI (``CI`` set) it fails them, so nothing is silently untested.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import uuid
from datetime import UTC, datetime
from typing import Any, AsyncIterator, Iterator

import orjson
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestClient
from prometheus_client import CollectorRegistry

from gateway.logging import configure_logging
from gateway.metrics import Metrics
from tests.pgcluster import Cluster, postgres_bindir, throwaway_cluster
from tests.serving import serve_for_tests

NOW = datetime(2026, 11, 22, 15, 0, 0, tzinfo=UTC)


def missing_service(what: str, fix: str) -> None:
    """Fail in CI, skip elsewhere, naming what is missing and how to install it."""
    message = f"{what} is not available; {fix}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def aiohttp_client() -> AsyncIterator[Any]:
    """pytest-aiohttp's ``aiohttp_client``, serving Gatehouse apps through Gatehouse's own listener.

    A Gatehouse app is served as ``gatehouse serve`` serves it (its proxy, aiohttp for Gatehouse's own endpoints),
    so every test that talks to one exercises the production request path; other apps (fake
    identity providers, upstreams) get aiohttp's TestServer.
    """
    clients: list[TestClient[Any, Any]] = []

    async def go(app_or_server: web.Application | BaseTestServer, *, server_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> TestClient[Any, Any]:
        server = serve_for_tests(app_or_server, **(server_kwargs or {})) if isinstance(app_or_server, web.Application) else app_or_server
        client: TestClient[Any, Any] = TestClient(server, **kwargs)
        await client.start_server()
        clients.append(client)
        return client

    yield go
    for client in clients:
        await client.close()


@pytest.fixture
def now() -> datetime:
    """The fixed instant tests run at."""
    return NOW


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh Prometheus registry per test."""
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    """Gateway metrics on the test's own registry."""
    return Metrics(registry)


class LogLines:
    """The JSON lines ``gatehouse serve`` would have written, through ``gateway.logging``'s own processors."""

    def __init__(self) -> None:
        self.stream = io.TextIOWrapper(io.BytesIO())

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every line written so far, parsed (only those whose ``event`` is ``name``, if given)."""
        raw = self.stream.buffer.getvalue()  # type: ignore[attr-defined]
        lines = [orjson.loads(line) for line in raw.splitlines() if line]
        return [line for line in lines if name is None or line.get("event") == name]


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Logging configured as ``gatehouse serve`` does (JSON, level info) into a buffer; the previous setup restored after.

    Unlike ``structlog.testing.capture_logs()``, the production processors run (context, level, exception
    rendering), so what a test reads is what an operator's log shows. Request it before starting a
    gateway: the proxy reads the log level once, when it starts.
    """
    saved = structlog.get_config()
    lines = LogLines()
    configure_logging("info", "json", stream=lines.stream)
    try:
        yield lines
    finally:
        structlog.configure(**saved)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the whole run; yields its base DSN."""
    external = os.environ.get("GATEHOUSE_TEST_POSTGRES_DSN")
    if external:
        yield external
        return
    bindir = postgres_bindir()
    if bindir is None:
        missing_service("PostgreSQL", "run `make system-deps` (installs Debian's postgresql)")
    with throwaway_cluster(bindir, options="-c max_connections=200") as cluster:  # type: ignore[arg-type]
        yield cluster.base_dsn


@pytest.fixture
def own_postgres() -> Iterator[Cluster]:
    """A PostgreSQL cluster of this test's own, which it may stop and start (the session one is shared)."""
    if os.environ.get("GATEHOUSE_TEST_POSTGRES_DSN"):
        missing_service("a local PostgreSQL this test can stop", "unset GATEHOUSE_TEST_POSTGRES_DSN to let the tests start their own")
    bindir = postgres_bindir()
    if bindir is None:
        missing_service("PostgreSQL", "run `make system-deps` (installs Debian's postgresql)")
    with throwaway_cluster(bindir) as cluster:  # type: ignore[arg-type]
        yield cluster


@pytest.fixture
def postgres_dsn(postgres_server: str) -> str:
    """A DSN to a new, empty database of its own for this test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    bindir = postgres_bindir()
    psql = f"{bindir}/psql" if bindir and os.path.exists(f"{bindir}/psql") else "psql"
    subprocess.run([psql, f"{postgres_server}/postgres", "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return f"{postgres_server}/{name}"
