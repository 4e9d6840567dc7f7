"""The break-glass audit chain in the SQLite store's file: SqliteAuditSink.

Owns: SqliteAuditSink, its two tables (``audit_entries``, ``audit_head``, versioned in
``audit_schema``); the batch checks are breakglass.audit.check_batch, shared by every sink.
Must not import: aiohttp, gateway.ingest, gateway.app.

The sink has its own connection to the same file as ``SqliteStore`` (WAL, ``synchronous=FULL``)
on its own worker thread, so the event loop never waits on disk. ``append`` is one ``BEGIN
IMMEDIATE`` transaction: read the head row, compare, insert, move the head, COMMIT. SQLite admits
one writer at a time across every process that opens the file, so two replicas (or two sinks)
racing for the same seq cannot fork the chain: the second one sees the moved head and gets
``AuditConflict``. The sink leaves the store's ``PRAGMA user_version`` alone. ``SqliteStore.audit_sink()``
opens it with ``on_append``, so the store announces appends to its subscribers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from breakglass.audit import GENESIS_HEAD, AuditEntry, ChainHead, check_batch, decode_entry, encode_entry
from gateway.store.base import StoreError

T = TypeVar("T")

AUDIT_SCHEMA_VERSION = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS audit_schema (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS audit_entries (
        seq INTEGER PRIMARY KEY,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        body TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    )""",
)


class SqliteAuditSink:
    """The ``AuditSink`` in a SQLite file; open with ``await SqliteAuditSink.open(path)``."""

    def __init__(
        self, path: Path, executor: ThreadPoolExecutor, conn: sqlite3.Connection, *, on_append: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self._executor = executor
        self._conn = conn
        self._closed = False
        self._on_append = on_append

    @classmethod
    async def open(
        cls, path: Path | str, *, busy_timeout_s: float = 10.0, on_append: Callable[[int], None] | None = None,
    ) -> SqliteAuditSink:
        """Open (creating the file and the audit tables if needed) the audit log in ``path``.

        ``busy_timeout_s`` bounds how long an append waits for another process's write;
        ``on_append(seq)`` is called on the loop after each committed append with the new head's seq.

        Raises:
            StoreError: the file cannot be opened, or its audit schema is newer than this code.
        """
        path = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatehouse-sqlite-audit")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, path, busy_timeout_s)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, executor, conn, on_append=on_append)

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        if self._closed:
            raise StoreError(f"could not {what}: the audit log `{self.path}` is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, self._conn)
        except sqlite3.Error as exc:
            outcome = "; nothing was stored" if write else ""
            raise StoreError(f"could not {what} in `{self.path}`: {exc}{outcome}") from exc

    async def close(self) -> None:
        """Close the connection; later calls raise StoreError."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        """Durably store ``entries`` after the current head, all or nothing.

        Raises:
            AuditConflict: the head is not the one ``entries[0]`` follows; nothing was written.
            ValueError: the batch is empty or not a sealed chain.
            StoreError: the file could not be written.
        """
        if not entries:
            raise ValueError("an empty batch cannot be appended; pass at least one entry")
        rows = [(e.seq, e.prev_hash, e.hash, encode_entry(e).decode()) for e in entries]
        last = entries[-1]

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq, digest = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
                check_batch(entries, ChainHead(seq=seq, hash=digest))
                conn.executemany("INSERT INTO audit_entries (seq, prev_hash, hash, body) VALUES (?, ?, ?, ?)", rows)
                conn.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (last.seq, last.hash))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        await self._run(f"append audit entries from {entries[0].seq}", work, write=True)
        if self._on_append is not None:
            self._on_append(last.seq)

    async def entries(self, *, after_seq: int = 0) -> Sequence[AuditEntry]:
        """Every stored entry with ``seq > after_seq``, in ascending order, unmodified."""

        def work(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT body FROM audit_entries WHERE seq > ? ORDER BY seq", (after_seq,))
            return [body for (body,) in rows]

        bodies = await self._run("read the audit log", work)
        return tuple(decode_entry(body) for body in bodies)

    async def head(self) -> ChainHead:
        """The stored head; ``GENESIS_HEAD`` for an empty log."""

        def work(conn: sqlite3.Connection) -> ChainHead:
            seq, digest = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            return ChainHead(seq=seq, hash=digest)

        return await self._run("read the audit head", work)

    async def snapshot(self) -> tuple[ChainHead, tuple[AuditEntry, ...]]:
        """The head and every entry, read in one transaction (what ``verify`` needs)."""

        def work(conn: sqlite3.Connection) -> tuple[ChainHead, list[str]]:
            conn.execute("BEGIN")
            try:
                seq, digest = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
                bodies = [body for (body,) in conn.execute("SELECT body FROM audit_entries ORDER BY seq")]
            finally:
                conn.execute("COMMIT")
            return ChainHead(seq=seq, hash=digest), bodies

        head, bodies = await self._run("read the audit log", work)
        return head, tuple(decode_entry(body) for body in bodies)


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the audit log `{path}`: {exc}; check the directory exists and is writable") from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT version FROM audit_schema WHERE id = 1").fetchone()
            if row is None:
                conn.execute("INSERT INTO audit_schema (id, version) VALUES (1, ?)", (AUDIT_SCHEMA_VERSION,))
                conn.execute(
                    "INSERT OR IGNORE INTO audit_head (id, seq, hash) VALUES (1, ?, ?)",
                    (GENESIS_HEAD.seq, GENESIS_HEAD.hash),
                )
            elif row[0] > AUDIT_SCHEMA_VERSION:
                raise StoreError(
                    f"the audit log in `{path}` has schema version {row[0]}, newer than this Gatehouse knows"
                    f" ({AUDIT_SCHEMA_VERSION}); upgrade Gatehouse"
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot open the audit log `{path}`: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn
