"""Durable state behind the gateway: device snapshots, osquery enrollments, compliance history.

Owns: the Store Protocols (base.py), the SQLite backend (sqlite.py), the reading of a store DSN
(dsn.py: ``sqlite_file``, which every caller uses), open_store.
Must not import: aiohttp, gateway.ingest, gateway.app.
"""

from __future__ import annotations

from gateway.store.base import (
    Changes,
    DistributedQueryStore,
    Enrollment,
    EnrollmentStore,
    HistoryEntry,
    HistoryStore,
    HostDetails,
    OsqueryStateStore,
    PendingQuery,
    PutOutcome,
    QueryResult,
    SnapshotStore,
    Store,
    StoreError,
)
from gateway.config.dsn import SQLITE_FORMS, sqlite_file

__all__ = [
    "Changes",
    "DistributedQueryStore",
    "Enrollment",
    "EnrollmentStore",
    "HistoryEntry",
    "HistoryStore",
    "HostDetails",
    "OsqueryStateStore",
    "PendingQuery",
    "PutOutcome",
    "QueryResult",
    "SnapshotStore",
    "Store",
    "StoreError",
    "SQLITE_FORMS",
    "open_store",
    "sqlite_file",
]


async def open_store(dsn: str) -> Store:
    """Open the store a DSN names: ``sqlite:///abs/path.db`` (the default) or ``postgresql://...``.

    Raises:
        ValueError: the DSN's scheme is not supported, or it is not an absolute SQLite file.
        StoreError: the store cannot be opened.
    """
    path = sqlite_file(dsn)
    if path is not None:
        from gateway.store.sqlite import SqliteStore

        return await SqliteStore.open(path)
    try:
        from gateway.store.postgres import open_postgres_store
    except ImportError:
        raise ValueError(
            "store `postgresql://...` needs the PostgreSQL backend, which is not installed in this"
            " Gatehouse; install it with `pip install gatehouse[postgres]` or use `sqlite:///...`"
        ) from None
    return await open_postgres_store(dsn)
