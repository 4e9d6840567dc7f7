"""Durable state behind the gateway: device snapshots, osquery enrollments, compliance history.

Owns: the Store Protocols (base.py), the SQLite backend (sqlite.py), open_store.
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
    "open_store",
]


async def open_store(dsn: str) -> Store:
    """Open the store a DSN names: ``sqlite:///abs/path.db`` (the default) or ``postgresql://...``.

    Raises:
        ValueError: the DSN's scheme is not supported.
        StoreError: the store cannot be opened.
    """
    if dsn.startswith("sqlite:///"):
        from gateway.store.sqlite import SqliteStore, sqlite_path

        return await SqliteStore.open(sqlite_path(dsn))
    if dsn.startswith(("postgresql://", "postgres://")):
        try:
            from gateway.store.postgres import open_postgres_store  # type: ignore[import-not-found]
        except ImportError:
            raise ValueError(
                "store `postgresql://...` needs the PostgreSQL backend, which is not installed in this"
                " Gatehouse; install it with `pip install gatehouse[postgres]` or use `sqlite:///...`"
            ) from None
        return await open_postgres_store(dsn)  # type: ignore[no-any-return]
    scheme = dsn.partition(":")[0]
    raise ValueError(f"store scheme `{scheme}` is not supported; write `sqlite:///abs/path.db` or `postgresql://...`")
