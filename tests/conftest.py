"""Fixtures every test may use: a fixed clock, a fresh metrics registry, a throwaway PostgreSQL.

Services the tests drive for real (PostgreSQL here, Chromium and the OpenID provider in their own
conftests) are started by the fixtures themselves. Outside CI a missing service skips its tests
with the command that installs it; in CI (``CI`` set) it fails them, so nothing is silently untested.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from datetime import UTC, datetime
from typing import Iterator

import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import Metrics

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


def _postgres_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the whole run; yields its base DSN."""
    external = os.environ.get("GATEHOUSE_TEST_POSTGRES_DSN")
    if external:
        yield external
        return
    bindir = _postgres_bindir()
    if bindir is None:
        missing_service("PostgreSQL", "run `make system-deps` (installs Debian's postgresql)")
    datadir = tempfile.mkdtemp(prefix="gatehouse-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(datadir, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(
        [*as_user, f"{bindir}/initdb", "-D", datadir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )
    subprocess.run(
        [*as_user, f"{bindir}/pg_ctl", "-D", datadir, "-w", "-l", f"{datadir}/server.log", "-o",
         f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"],
        check=True, capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, f"{bindir}/pg_ctl", "-D", datadir, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: str) -> str:
    """A DSN to a new, empty database of its own for this test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    bindir = _postgres_bindir()
    psql = f"{bindir}/psql" if bindir and os.path.exists(f"{bindir}/psql") else "psql"
    subprocess.run([psql, f"{postgres_server}/postgres", "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return f"{postgres_server}/{name}"
