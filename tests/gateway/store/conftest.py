"""The store fixtures the backend contracts share: every backend, opened (and reopened) on the same data."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.store import Store
from gateway.store import postgres as postgres_backend
from gateway.store import sqlite as sqlite_backend
from gateway.store.postgres import open_postgres_store
from gateway.store.sqlite import SqliteStore


@dataclass(frozen=True)
class Backend:
    """How to open (and reopen) one backend's store on the same data."""

    name: str
    module: types.ModuleType
    open: Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """SQLite (the reference) and PostgreSQL (a throwaway cluster)."""
    if request.param == "sqlite":
        path = tmp_path / "var" / "gatehouse.db"
        return Backend("sqlite", sqlite_backend, lambda: SqliteStore.open(path))
    dsn: str = request.getfixturevalue("postgres_dsn")
    return Backend("postgresql", postgres_backend, lambda: open_postgres_store(dsn, max_connections=4))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    """The backend's store, closed after the test."""
    opened = await backend.open()
    yield opened
    await opened.close()
