"""The embedded default store: one SQLite file in WAL mode, written by one dedicated thread.

Owns: SqliteStore, the SQLite schema and its migrations.
Must not import: aiohttp, gateway.ingest.

Every call runs on one worker thread that owns the connection, so the event loop never blocks on
disk and writes are serialised. ``synchronous=FULL``: a transaction is on disk when its COMMIT
returns, and every write method returns only after COMMIT. Several processes may open the same
file (WAL readers never block the writer); each sees the others' snapshots through
``changes_since``. Change notices (``subscribe``) reach only the writing process (``local=True``):
SQLite has no channel between processes, so the worker supervisor forwards them to its workers.
The audit sink (``audit_sink()``) is the break-glass log in the same file, on its own connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import orjson

from gateway.store.base import (
    CertificateChanges,
    CertificateRecord,
    Changes,
    ConnectorClaim,
    ConnectorState,
    Enrollment,
    EnrollmentRequest,
    EnrollSession,
    OsqueryConflict,
    AccessRollup,
    AccessVerdict,
    ChangeCallback,
    ChangeKind,
    ChangeNotice,
    HistoryEntry,
    HostDetails,
    OwnerChanges,
    RecordFeed,
    OwnerEdit,
    OwnerRecord,
    OwnerSource,
    PendingQuery,
    PutOutcome,
    QueryResult,
    StoreError,
    Subscribers,
    edited_owners,
)
from gateway.store.codec import SnapshotDecoder, encode_snapshot, from_micros, to_micros
from gateway.store.sqlite_audit import SqliteAuditSink
from gateway.store.enroll_codec import (
    decode_conflict, decode_request, decode_session, encode_conflict, encode_request, encode_session,
)
from policy_engine.model import DeviceSnapshot

T = TypeVar("T")

# Each migration is a list of statements; schema version N means MIGRATIONS[:N] were applied.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE latest_snapshots (
            serial TEXT PRIMARY KEY,
            collected_at INTEGER NOT NULL,
            seq INTEGER NOT NULL UNIQUE,
            body BLOB NOT NULL
        )""",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO counters (name, value) VALUES ('snapshot_seq', 0)",
        """CREATE TABLE enrollments (
            node_key_hash TEXT PRIMARY KEY,
            serial TEXT NOT NULL,
            host_identifier TEXT NOT NULL,
            details BLOB NOT NULL,
            enrolled_at INTEGER NOT NULL,
            revoked_at INTEGER
        )""",
        "CREATE INDEX enrollments_serial ON enrollments (serial)",
        """CREATE TABLE osquery_results (
            serial TEXT NOT NULL,
            query_name TEXT NOT NULL,
            rows BLOB NOT NULL,
            collected_at INTEGER NOT NULL,
            PRIMARY KEY (serial, query_name)
        )""",
        """CREATE TABLE compliance_history (
            id INTEGER PRIMARY KEY,
            serial TEXT NOT NULL,
            owners BLOB NOT NULL,
            recorded_at INTEGER NOT NULL,
            results BLOB NOT NULL
        )""",
        "CREATE INDEX compliance_history_time ON compliance_history (recorded_at)",
        """CREATE TABLE failing_since (
            serial TEXT NOT NULL,
            check_name TEXT NOT NULL,
            since INTEGER NOT NULL,
            PRIMARY KEY (serial, check_name)
        )""",
        """CREATE TABLE pending_queries (
            query_id TEXT PRIMARY KEY,
            serial TEXT NOT NULL,
            query_name TEXT NOT NULL,
            sql TEXT NOT NULL,
            created_at INTEGER NOT NULL
        )""",
        "CREATE INDEX pending_queries_serial ON pending_queries (serial)",
    ),
    (
        # The owner inventory: one row per serial ever assigned; `owners` `[]` is an unassignment
        # kept as a tombstone so caches following `seq` learn of it.
        """CREATE TABLE device_owners (
            serial TEXT PRIMARY KEY,
            owners BLOB NOT NULL,
            set_by TEXT NOT NULL,
            set_at INTEGER NOT NULL,
            source TEXT NOT NULL,
            seq INTEGER NOT NULL UNIQUE
        )""",
        "INSERT INTO counters (name, value) VALUES ('owner_seq', 0)",
    ),
    (
        # The access ledger: one row per hour, route, tier, user, device, verdict and reason; the
        # primary key (hour first) is also the index a period is read by.
        """CREATE TABLE access_ledger (
            hour INTEGER NOT NULL,
            route TEXT NOT NULL,
            tier TEXT NOT NULL,
            user_email TEXT NOT NULL,
            device TEXT NOT NULL,
            verdict TEXT NOT NULL,
            reason TEXT NOT NULL,
            count INTEGER NOT NULL,
            first_seen INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            PRIMARY KEY (hour, route, tier, user_email, device, verdict, reason)
        ) WITHOUT ROWID""",
        # Each ledger writer's last added batch, so a retried batch is added once (see LedgerStore).
        """CREATE TABLE access_writers (
            writer TEXT PRIMARY KEY,
            last_seq INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )""",
    ),
    (
        # Pull connectors: one row per connector, its lease and where its sync stands.
        """CREATE TABLE connector_state (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            lease_until INTEGER,
            cursor TEXT NOT NULL,
            last_success_at INTEGER
        )""",
    ),
    (
        # Device certificates issued by Gatehouse's CA: recording or revoking one takes a new `seq`
        # (from the `certificate_seq` counter) so caches following the feed learn of revocations.
        """CREATE TABLE device_certificates (
            fingerprint TEXT PRIMARY KEY,
            serial TEXT NOT NULL,
            owner TEXT NOT NULL,
            not_before INTEGER NOT NULL,
            not_after INTEGER NOT NULL,
            issued_at INTEGER NOT NULL,
            revoked_at INTEGER,
            revoked_by TEXT NOT NULL,
            seq INTEGER NOT NULL UNIQUE
        )""",
        "CREATE INDEX device_certificates_serial ON device_certificates (serial)",
        "INSERT INTO counters (name, value) VALUES ('certificate_seq', 0)",
    ),
    (
        # Laptop enrollment (gateway/enroll/): sign-in sessions by one-time code, enrollment requests and
        # osquery enroll conflicts. Bodies are gateway/store/enroll_codec.py's deterministic bytes, so
        # `swap_*` compares them to change a row only if nobody changed it since it was read.
        """CREATE TABLE enroll_sessions (
            session_hash TEXT PRIMARY KEY,
            user_code TEXT NOT NULL UNIQUE,
            expires_at INTEGER NOT NULL,
            body BLOB NOT NULL
        )""",
        """CREATE TABLE enrollment_requests (
            id TEXT PRIMARY KEY,
            serial TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            body BLOB NOT NULL
        )""",
        "CREATE INDEX enrollment_requests_time ON enrollment_requests (created_at)",
        """CREATE TABLE osquery_conflicts (
            id INTEGER PRIMARY KEY,
            serial TEXT NOT NULL,
            at INTEGER NOT NULL,
            body BLOB NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
_HISTORY_PAGE = 1000
_LOAD_PAGE = 2000
_ACCESS_PAGE = 2000
_ACCESS_COLUMNS = "hour, route, tier, user_email, device, verdict, reason, count, first_seen, last_seen"


def hash_node_key(node_key: str) -> str:
    """SHA-256 of a node key (node keys are 256-bit random, so a plain hash is enough)."""
    return hashlib.sha256(node_key.encode()).hexdigest()


class SqliteStore:
    """The Store on one SQLite file; open with ``await SqliteStore.open(path)``."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self.path = path
        self._executor = executor
        self._conn = conn
        self._closed = False
        self._decoder = SnapshotDecoder()  # INVARIANT: used only on the worker thread
        self._subscribers = Subscribers()
        self._audit: SqliteAuditSink | None = None
        self._audit_opening = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str) -> SqliteStore:
        """Open (creating parent directories and the file) and migrate the schema.

        Raises:
            StoreError: the file cannot be opened, or its schema is newer than this code.
        """
        path = Path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatehouse-sqlite")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, executor, conn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError(f"the store `{self.path}` is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, self._conn)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store `{self.path}`: {exc}") from exc

    async def close(self) -> None:
        """Close the connection (and the audit sink's); later calls raise StoreError."""
        if self._closed:
            return
        self._subscribers.clear()
        if self._audit is not None:
            await self._audit.close()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.close)
        self._closed = True
        self._executor.shutdown(wait=True)

    async def health(self, *, timeout_s: float = 1.0) -> bool:
        """True when the store's thread answers a trivial read within ``timeout_s`` (for readiness); never raises."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._run(lambda conn: conn.execute("SELECT 1").fetchone())
        except (StoreError, TimeoutError):
            return False
        return True

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback`` after each of this store's own committed writes that others cache, until the returned function is called.

        Notices are ``local``: writes by other processes on the same file are not announced here.

        Raises:
            StoreError: the store is closed.
        """
        if self._closed:
            raise StoreError(f"cannot subscribe: the store `{self.path}` is closed")
        return self._subscribers.add(callback)

    def _announce(self, kind: ChangeKind, seq: int) -> None:
        self._subscribers.dispatch(ChangeNotice(kind, seq, local=True))

    async def audit_sink(self) -> SqliteAuditSink:
        """The break-glass audit log in this store's file (its own connection, opened once, closed with the store).

        Raises:
            StoreError: the store is closed, or the audit tables cannot be opened.
        """
        async with self._audit_opening:
            if self._closed:
                raise StoreError(f"cannot open the audit log: the store `{self.path}` is closed")
            if self._audit is None:
                self._audit = await SqliteAuditSink.open(self.path, on_append=lambda seq: self._announce(ChangeKind.AUDIT, seq))
            return self._audit

    # -- snapshots ---------------------------------------------------------------------------

    async def put_snapshots(self, snapshots: Sequence[DeviceSnapshot]) -> tuple[PutOutcome, ...]:
        """Store a batch in one transaction, idempotent on (serial, collected_at); encoded on the store's thread, not the event loop."""

        def work(conn: sqlite3.Connection) -> tuple[PutOutcome, ...]:
            encoded = [(s.serial, to_micros(s.collected_at), encode_snapshot(s)) for s in snapshots]
            outcomes: list[PutOutcome] = []
            with _transaction(conn):
                (seq,) = conn.execute("SELECT value FROM counters WHERE name = 'snapshot_seq'").fetchone()
                start = seq
                for serial, collected_at, body in encoded:
                    row = conn.execute(
                        "SELECT collected_at FROM latest_snapshots WHERE serial = ?", (serial,)
                    ).fetchone()
                    if row is not None and row[0] == collected_at:
                        outcomes.append(PutOutcome.DUPLICATE)
                        continue
                    if row is not None and row[0] > collected_at:
                        outcomes.append(PutOutcome.OLDER)
                        continue
                    seq += 1
                    conn.execute(
                        "INSERT INTO latest_snapshots (serial, collected_at, seq, body) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (serial) DO UPDATE SET collected_at = excluded.collected_at,"
                        " seq = excluded.seq, body = excluded.body",
                        (serial, collected_at, seq, body),
                    )
                    outcomes.append(PutOutcome.STORED)
                if seq != start:
                    conn.execute("UPDATE counters SET value = ? WHERE name = 'snapshot_seq'", (seq,))
                    taken.append(seq)
            return tuple(outcomes)

        if not snapshots:
            return ()
        taken: list[int] = []
        outcomes = await self._run(work)
        if taken:
            self._announce(ChangeKind.SNAPSHOT, taken[-1])
        return outcomes

    async def latest(self, serial: str) -> DeviceSnapshot | None:
        """The device's newest stored snapshot."""

        def work(conn: sqlite3.Connection) -> DeviceSnapshot | None:
            row = conn.execute("SELECT body FROM latest_snapshots WHERE serial = ?", (serial,)).fetchone()
            if row is None:
                return None
            snapshot = self._decoder.decode(row[0])
            self._decoder.forget_devices()
            return snapshot

        return await self._run(work)

    async def load_latest(self) -> Changes:
        """Every device's latest snapshot, with the cursor to follow changes from."""

        def work(conn: sqlite3.Connection) -> Changes:
            decode = self._decoder.decode
            snapshots: list[DeviceSnapshot] = []
            with _transaction(conn, immediate=False):
                (cursor,) = conn.execute("SELECT value FROM counters WHERE name = 'snapshot_seq'").fetchone()
                rows = conn.execute("SELECT body FROM latest_snapshots")
                # In pages: the raw bodies of a whole fleet never sit in memory at once, so the
                # memory they took is reused for the snapshots instead of growing the heap.
                while page := rows.fetchmany(_LOAD_PAGE):
                    snapshots.extend(decode(body) for (body,) in page)
            self._decoder = SnapshotDecoder()  # the bulk load's memo would only pin one-off owner tuples
            return Changes(tuple(snapshots), cursor)

        return await self._run(work)

    async def changes_since(self, cursor: int, *, limit: int = 10_000) -> Changes:
        """Latest snapshots stored after ``cursor`` (at most ``limit``), oldest first."""

        def work(conn: sqlite3.Connection) -> Changes:
            rows = conn.execute(
                "SELECT seq, body FROM latest_snapshots WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, limit + 1)
            ).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            new_cursor = rows[-1][0] if rows else cursor
            snapshots = tuple(self._decoder.decode(body) for _, body in rows)
            self._decoder.forget_devices()  # the batch shares owner tuples and times; later ones need not
            return Changes(snapshots, new_cursor, more)

        return await self._run(work)

    # -- enrollments -------------------------------------------------------------------------

    async def create_enrollment(
        self, *, node_key: str, serial: str, host_identifier: str, details: HostDetails, now: datetime
    ) -> Enrollment:
        """Record a new node key for a device; earlier active keys of the same serial are revoked."""
        enrollment = Enrollment(hash_node_key(node_key), serial, host_identifier, now, details)
        body = orjson.dumps(_details_dict(details))

        def work(conn: sqlite3.Connection) -> Enrollment:
            with _transaction(conn):
                conn.execute(
                    "UPDATE enrollments SET revoked_at = ? WHERE serial = ? AND revoked_at IS NULL",
                    (to_micros(now), serial),
                )
                conn.execute(
                    "INSERT INTO enrollments (node_key_hash, serial, host_identifier, details, enrolled_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (enrollment.node_key_hash, serial, host_identifier, body, to_micros(now)),
                )
            return enrollment

        return await self._run(work)

    async def enrollment_by_node_key(self, node_key: str) -> Enrollment | None:
        """The enrollment a node key belongs to, revoked or not; None when unknown."""
        key_hash = hash_node_key(node_key)

        def work(conn: sqlite3.Connection) -> Enrollment | None:
            row = conn.execute(
                "SELECT serial, host_identifier, details, enrolled_at, revoked_at FROM enrollments"
                " WHERE node_key_hash = ?",
                (key_hash,),
            ).fetchone()
            if row is None:
                return None
            serial, host_identifier, details, enrolled_at, revoked_at = row
            return Enrollment(
                key_hash,
                serial,
                host_identifier,
                from_micros(enrolled_at),
                HostDetails(**{k: sys.intern(v) for k, v in orjson.loads(details).items()}),
                None if revoked_at is None else from_micros(revoked_at),
            )

        return await self._run(work)

    async def revoke_enrollments(self, serial: str, *, now: datetime) -> int:
        """Revoke every active node key of a device; returns how many were revoked."""

        def work(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                cur = conn.execute(
                    "UPDATE enrollments SET revoked_at = ? WHERE serial = ? AND revoked_at IS NULL",
                    (to_micros(now), serial),
                )
            return cur.rowcount

        return await self._run(work)

    async def active_enrollments(self, serial: str) -> tuple[Enrollment, ...]:
        """The device's enrollments whose node key is not revoked, oldest first."""

        def work(conn: sqlite3.Connection) -> tuple[Enrollment, ...]:
            rows = conn.execute(
                "SELECT node_key_hash, host_identifier, details, enrolled_at FROM enrollments"
                " WHERE serial = ? AND revoked_at IS NULL ORDER BY enrolled_at",
                (serial,),
            ).fetchall()
            return tuple(
                Enrollment(key_hash, serial, host, from_micros(at), HostDetails(**orjson.loads(details)))
                for key_hash, host, details, at in rows
            )

        return await self._run(work)

    # -- laptop enrollment -------------------------------------------------------------------

    async def create_enroll_session(self, session: EnrollSession) -> None:
        """Store a new session (its hash and user code are unique)."""
        params = (session.session_hash, session.user_code, to_micros(session.expires_at), encode_session(session))

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("INSERT INTO enroll_sessions (session_hash, user_code, expires_at, body) VALUES (?, ?, ?, ?)", params)

        await self._run(work)

    async def enroll_session(self, session_hash: str) -> EnrollSession | None:
        """The session with this hash; None when unknown."""
        return await self._one("SELECT body FROM enroll_sessions WHERE session_hash = ?", session_hash, decode_session)

    async def enroll_session_by_code(self, user_code: str) -> EnrollSession | None:
        """The session shown with this user code; None when unknown."""
        return await self._one("SELECT body FROM enroll_sessions WHERE user_code = ?", user_code, decode_session)

    async def swap_enroll_session(self, old: EnrollSession, new: EnrollSession) -> bool:
        """Replace ``old`` by ``new`` if ``old`` is still what is stored."""
        return await self._swap("enroll_sessions", "session_hash", old.session_hash, encode_session(old), encode_session(new))

    async def create_enrollment_request(self, request: EnrollmentRequest) -> None:
        """Store a new enrollment request."""
        params = (request.id, request.serial, to_micros(request.created_at), encode_request(request))

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("INSERT INTO enrollment_requests (id, serial, created_at, body) VALUES (?, ?, ?, ?)", params)

        await self._run(work)

    async def enrollment_request(self, request_id: str) -> EnrollmentRequest | None:
        """The request with this id; None when unknown."""
        return await self._one("SELECT body FROM enrollment_requests WHERE id = ?", request_id, decode_request)

    async def swap_enrollment_request(self, old: EnrollmentRequest, new: EnrollmentRequest) -> bool:
        """Replace ``old`` by ``new`` if ``old`` is still what is stored."""
        return await self._swap("enrollment_requests", "id", old.id, encode_request(old), encode_request(new))

    async def enrollment_requests(self, *, limit: int = 200) -> tuple[EnrollmentRequest, ...]:
        """The newest requests, newest first."""

        def work(conn: sqlite3.Connection) -> tuple[EnrollmentRequest, ...]:
            rows = conn.execute("SELECT body FROM enrollment_requests ORDER BY created_at DESC, id LIMIT ?", (limit,)).fetchall()
            return tuple(decode_request(body) for (body,) in rows)

        return await self._run(work)

    async def record_osquery_conflict(self, conflict: OsqueryConflict) -> None:
        """Keep a conflict for the fleet page."""
        params = (conflict.serial, to_micros(conflict.at), encode_conflict(conflict))

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("INSERT INTO osquery_conflicts (serial, at, body) VALUES (?, ?, ?)", params)

        await self._run(work)

    async def osquery_conflicts(self, *, limit: int = 200) -> tuple[OsqueryConflict, ...]:
        """The newest conflicts, newest first."""

        def work(conn: sqlite3.Connection) -> tuple[OsqueryConflict, ...]:
            rows = conn.execute("SELECT body FROM osquery_conflicts ORDER BY at DESC, id DESC LIMIT ?", (limit,)).fetchall()
            return tuple(decode_conflict(body) for (body,) in rows)

        return await self._run(work)

    async def _one(self, sql: str, key: str, decode: Callable[[bytes], T]) -> T | None:
        def work(conn: sqlite3.Connection) -> T | None:
            row = conn.execute(sql, (key,)).fetchone()
            return None if row is None else decode(row[0])

        return await self._run(work)

    async def _swap(self, table: str, key_column: str, key: str, old: bytes, new: bytes) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                cur = conn.execute(f"UPDATE {table} SET body = ? WHERE {key_column} = ? AND body = ?", (new, key, old))
            return cur.rowcount == 1

        return await self._run(work)

    # -- osquery query state -----------------------------------------------------------------

    async def query_results(self, serial: str) -> Mapping[str, QueryResult]:
        """Every posture query's current rows for a device, by query name."""

        def work(conn: sqlite3.Connection) -> Mapping[str, QueryResult]:
            rows = conn.execute(
                "SELECT query_name, rows, collected_at FROM osquery_results WHERE serial = ?", (serial,)
            ).fetchall()
            return {
                name: QueryResult(tuple(orjson.loads(body)), from_micros(collected_at))
                for name, body, collected_at in rows
            }

        return await self._run(work)

    async def save_query_results(self, serial: str, results: Mapping[str, QueryResult]) -> None:
        """Replace the rows of the named queries for a device (other queries are untouched)."""
        params = [
            (serial, name, orjson.dumps([dict(r) for r in result.rows]), to_micros(result.collected_at))
            for name, result in results.items()
        ]

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(
                    "INSERT INTO osquery_results (serial, query_name, rows, collected_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (serial, query_name) DO UPDATE SET rows = excluded.rows,"
                    " collected_at = excluded.collected_at",
                    params,
                )

        if params:
            await self._run(work)

    # -- compliance history ------------------------------------------------------------------

    async def record_compliance(self, entry: HistoryEntry) -> None:
        """Append an entry and update failing-since for its checks in the same transaction."""
        at = to_micros(entry.recorded_at)
        failing = [(entry.serial, check, at) for check, ok in entry.results.items() if not ok]
        passing = [(entry.serial, check) for check, ok in entry.results.items() if ok]

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO compliance_history (serial, owners, recorded_at, results) VALUES (?, ?, ?, ?)",
                    (entry.serial, orjson.dumps(list(entry.owners)), at, orjson.dumps(dict(entry.results))),
                )
                conn.executemany(
                    "INSERT INTO failing_since (serial, check_name, since) VALUES (?, ?, ?)"
                    " ON CONFLICT (serial, check_name) DO UPDATE SET since = MIN(since, excluded.since)",
                    failing,
                )
                conn.executemany("DELETE FROM failing_since WHERE serial = ? AND check_name = ?", passing)

        await self._run(work)

    async def iter_history(self, *, since: datetime, until: datetime | None = None) -> AsyncIterator[HistoryEntry]:
        """History entries recorded in [since, until), oldest first, fetched in pages."""
        low = to_micros(since)
        high = sys.maxsize if until is None else to_micros(until)
        last_id = 0
        while True:

            def work(conn: sqlite3.Connection, last_id: int = last_id) -> list[tuple[int, str, bytes, int, bytes]]:
                return conn.execute(
                    "SELECT id, serial, owners, recorded_at, results FROM compliance_history"
                    " WHERE recorded_at >= ? AND recorded_at < ? AND id > ? ORDER BY id LIMIT ?",
                    (low, high, last_id, _HISTORY_PAGE),
                ).fetchall()

            page = await self._run(work)
            # INVARIANT: ids grow with insertion; entries are appended roughly in time order, and the
            # export sorts nothing itself, so "oldest first" means in the order they were recorded.
            for row_id, serial, owners, recorded_at, results in page:
                last_id = row_id
                yield HistoryEntry(serial, tuple(orjson.loads(owners)), from_micros(recorded_at), orjson.loads(results))
            if len(page) < _HISTORY_PAGE:
                return

    async def prune_history(self, *, before: datetime) -> int:
        """Delete entries recorded before ``before``; returns how many were deleted."""

        def work(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                return conn.execute(
                    "DELETE FROM compliance_history WHERE recorded_at < ?", (to_micros(before),)
                ).rowcount

        return await self._run(work)

    async def failing_since(self, serial: str) -> Mapping[str, datetime]:
        """When each currently failing check of a device started failing, by check name."""

        def work(conn: sqlite3.Connection) -> Mapping[str, datetime]:
            rows = conn.execute("SELECT check_name, since FROM failing_since WHERE serial = ?", (serial,))
            return {check: from_micros(since) for check, since in rows}

        return await self._run(work)

    async def set_failing_since(self, serial: str, check: str, since: datetime | None) -> None:
        """Set (or clear, with None) when a device's check started failing."""

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                if since is None:
                    conn.execute("DELETE FROM failing_since WHERE serial = ? AND check_name = ?", (serial, check))
                else:
                    conn.execute(
                        "INSERT INTO failing_since (serial, check_name, since) VALUES (?, ?, ?)"
                        " ON CONFLICT (serial, check_name) DO UPDATE SET since = excluded.since",
                        (serial, check, to_micros(since)),
                    )

        await self._run(work)

    async def load_failing_since(self, serials: Sequence[str] | None = None) -> Mapping[str, Mapping[str, datetime]]:
        """Failing-since of many devices at once (all devices when ``serials`` is None), by serial then check."""
        wanted = None if serials is None else list(dict.fromkeys(serials))

        def work(conn: sqlite3.Connection) -> Mapping[str, Mapping[str, datetime]]:
            out: dict[str, dict[str, datetime]] = {}
            if wanted is None:
                rows: list[tuple[str, str, int]] = conn.execute("SELECT serial, check_name, since FROM failing_since").fetchall()
            else:
                rows = []
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    rows += conn.execute(
                        f"SELECT serial, check_name, since FROM failing_since WHERE serial IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
            for serial, check, since in rows:
                out.setdefault(serial, {})[sys.intern(check)] = from_micros(since)
            return out

        return await self._run(work)

    # -- access ledger -----------------------------------------------------------------------

    async def add_access_rollups(self, rollups: Sequence[AccessRollup], *, writer: str | None = None, seq: int = 0) -> bool:
        """Add each rollup's count to its row, widening first/last seen; False (nothing added) for a batch ``writer`` already added."""
        params = [
            (to_micros(r.hour), r.route, r.tier, r.user, r.device, r.verdict.value, r.reason, r.count, to_micros(r.first_seen), to_micros(r.last_seen))
            for r in rollups
        ]
        stamp = max((p[9] for p in params), default=0)

        def work(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):  # BEGIN IMMEDIATE: other processes' adds wait, none is lost
                if writer is not None:
                    row = conn.execute("SELECT last_seq FROM access_writers WHERE writer = ?", (writer,)).fetchone()
                    if row is not None and row[0] >= seq:
                        return False
                    conn.execute(
                        "INSERT INTO access_writers (writer, last_seq, updated_at) VALUES (?, ?, ?)"
                        " ON CONFLICT (writer) DO UPDATE SET last_seq = excluded.last_seq,"
                        " updated_at = MAX(updated_at, excluded.updated_at)",
                        (writer, seq, stamp),
                    )
                conn.executemany(
                    f"INSERT INTO access_ledger ({_ACCESS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (hour, route, tier, user_email, device, verdict, reason) DO UPDATE SET"
                    " count = count + excluded.count, first_seen = MIN(first_seen, excluded.first_seen),"
                    " last_seen = MAX(last_seen, excluded.last_seen)",
                    params,
                )
            return True

        return await self._run(work)

    async def iter_access(self, *, since: datetime, until: datetime | None = None) -> AsyncIterator[AccessRollup]:
        """Every rollup whose hour is in [since, until), oldest hour first, fetched in pages."""
        low = to_micros(since)
        high = sys.maxsize if until is None else to_micros(until)
        after: tuple[object, ...] | None = None
        while True:

            def work(conn: sqlite3.Connection, after: tuple[object, ...] | None = after) -> list[_AccessRow]:
                if after is None:
                    return conn.execute(
                        f"SELECT {_ACCESS_COLUMNS} FROM access_ledger WHERE hour >= ? AND hour < ?"
                        " ORDER BY hour, route, tier, user_email, device, verdict, reason LIMIT ?",
                        (low, high, _ACCESS_PAGE),
                    ).fetchall()
                return conn.execute(
                    f"SELECT {_ACCESS_COLUMNS} FROM access_ledger WHERE hour < ?"
                    " AND (hour, route, tier, user_email, device, verdict, reason) > (?, ?, ?, ?, ?, ?, ?)"
                    " ORDER BY hour, route, tier, user_email, device, verdict, reason LIMIT ?",
                    (high, *after, _ACCESS_PAGE),
                ).fetchall()

            page = await self._run(work)
            for row in page:
                yield _access_rollup(row)
            if len(page) < _ACCESS_PAGE:
                return
            after = page[-1][:7]

    async def prune_access(self, *, before: datetime) -> int:
        """Remove rollups whose hour is before ``before`` (and writers silent since then); returns how many rollups went."""
        cutoff = to_micros(before)

        def work(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                conn.execute("DELETE FROM access_writers WHERE updated_at < ?", (cutoff,))
                return conn.execute("DELETE FROM access_ledger WHERE hour < ?", (cutoff,)).rowcount

        return await self._run(work)

    # -- distributed queries -----------------------------------------------------------------

    async def add_pending_queries(self, queries: Sequence[PendingQuery]) -> None:
        """Queue queries for their devices; a query_id already queued is replaced."""
        params = [(q.query_id, q.serial, q.query_name, q.sql, to_micros(q.created_at)) for q in queries]

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO pending_queries (query_id, serial, query_name, sql, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    params,
                )

        if params:
            await self._run(work)

    async def pending_queries(self, serial: str) -> tuple[PendingQuery, ...]:
        """Queries queued for a device and not yet answered, oldest first."""

        def work(conn: sqlite3.Connection) -> tuple[PendingQuery, ...]:
            rows = conn.execute(
                "SELECT query_id, query_name, sql, created_at FROM pending_queries WHERE serial = ?"
                " ORDER BY created_at, query_id",
                (serial,),
            ).fetchall()
            return tuple(PendingQuery(qid, serial, name, sql, from_micros(at)) for qid, name, sql, at in rows)

        return await self._run(work)

    async def complete_pending_queries(self, serial: str, query_ids: Sequence[str]) -> None:
        """Forget queries the agent answered (unknown ids are ignored)."""
        params = [(serial, qid) for qid in query_ids]

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany("DELETE FROM pending_queries WHERE serial = ? AND query_id = ?", params)

        if params:
            await self._run(work)

    # -- owner inventory ---------------------------------------------------------------------

    async def edit_owners(self, edits: Sequence[OwnerEdit]) -> tuple[OwnerRecord, ...]:
        """Apply the edits in one transaction, in order; returns each edited serial's record after its edit."""

        def work(conn: sqlite3.Connection) -> tuple[OwnerRecord, ...]:
            out: list[OwnerRecord] = []
            with _transaction(conn):
                (seq,) = conn.execute("SELECT value FROM counters WHERE name = 'owner_seq'").fetchone()
                start = seq
                for edit in edits:
                    held = _owner_row(conn.execute(_OWNER_SELECT + " WHERE serial = ?", (edit.serial,)).fetchone())
                    current = held.owners if held is not None else ()
                    owners = edited_owners(current, edit)
                    if held is not None and owners == current:
                        out.append(held)
                        continue
                    if held is None and not owners:
                        out.append(OwnerRecord(edit.serial, (), edit.set_by, edit.set_at, edit.source))
                        continue
                    seq += 1
                    conn.execute(
                        "INSERT INTO device_owners (serial, owners, set_by, set_at, source, seq) VALUES (?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (serial) DO UPDATE SET owners = excluded.owners, set_by = excluded.set_by,"
                        " set_at = excluded.set_at, source = excluded.source, seq = excluded.seq",
                        (edit.serial, orjson.dumps(list(owners)), edit.set_by, to_micros(edit.set_at), edit.source.value, seq),
                    )
                    out.append(OwnerRecord(edit.serial, owners, edit.set_by, edit.set_at, edit.source))
                if seq != start:
                    conn.execute("UPDATE counters SET value = ? WHERE name = 'owner_seq'", (seq,))
                    taken.append(seq)
            return tuple(out)

        if not edits:
            return ()
        taken: list[int] = []
        records = await self._run(work)
        if taken:
            self._announce(ChangeKind.OWNERS, taken[-1])
        return records

    async def owners(self, serial: str) -> OwnerRecord | None:
        """The serial's inventory entry; None when it has none (never assigned, or unassigned)."""

        def work(conn: sqlite3.Connection) -> OwnerRecord | None:
            record = _owner_row(conn.execute(_OWNER_SELECT + " WHERE serial = ?", (serial,)).fetchone())
            return record if record is not None and record.owners else None

        return await self._run(work)

    async def load_owners(self) -> OwnerChanges:
        """Every serial with owners (no tombstones), with the cursor to follow changes from."""

        def work(conn: sqlite3.Connection) -> OwnerChanges:
            with _transaction(conn, immediate=False):
                (cursor,) = conn.execute("SELECT value FROM counters WHERE name = 'owner_seq'").fetchone()
                rows = conn.execute(_OWNER_SELECT + " ORDER BY seq").fetchall()
            return RecordFeed(tuple(r for r in map(_owner_row, rows) if r is not None and r.owners), cursor)

        return await self._run(work)

    async def owner_changes_since(self, cursor: int, *, limit: int = 10_000) -> OwnerChanges:
        """Owner records changed after ``cursor`` (at most ``limit``, tombstones included), oldest first."""

        def work(conn: sqlite3.Connection) -> OwnerChanges:
            rows = conn.execute(_OWNER_SELECT + " WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, limit + 1)).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            new_cursor = rows[-1][5] if rows else cursor
            return RecordFeed(tuple(r for r in map(_owner_row, rows) if r is not None), new_cursor, more)

        return await self._run(work)

    # -- pull connectors ---------------------------------------------------------------------

    async def claim_connector(self, name: str, holder: str, *, now: datetime, lease_s: float) -> ConnectorClaim:
        """Take (or renew) the connector's lease when it is free, lapsed or already ``holder``'s; always returns the state."""
        now_us = to_micros(now)
        until = to_micros(now) + int(lease_s * 1_000_000)

        def work(conn: sqlite3.Connection) -> ConnectorClaim:
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO connector_state (name, holder, lease_until, cursor, last_success_at)"
                    " VALUES (?, '', NULL, '', NULL) ON CONFLICT (name) DO NOTHING", (name,)
                )
                updated = conn.execute(
                    "UPDATE connector_state SET holder = ?, lease_until = ? WHERE name = ?"
                    " AND (holder = ? OR lease_until IS NULL OR lease_until <= ?)",
                    (holder, until, name, holder, now_us),
                ).rowcount
                row = conn.execute(_CONNECTOR_SELECT, (name,)).fetchone()
            return ConnectorClaim(_connector_row(row), held=updated == 1)

        return await self._run(work)

    async def save_connector_state(
        self, name: str, holder: str, *, cursor: str, last_success_at: datetime | None, now: datetime, lease_s: float
    ) -> bool:
        """Record the sync position and renew the lease; False (nothing written) when ``holder`` lost the lease."""
        until = to_micros(now) + int(lease_s * 1_000_000)
        success = None if last_success_at is None else to_micros(last_success_at)

        def work(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                return conn.execute(
                    "UPDATE connector_state SET cursor = ?, last_success_at = ?, lease_until = ? WHERE name = ? AND holder = ?",
                    (cursor, success, until, name, holder),
                ).rowcount == 1

        return await self._run(work)

    # -- device certificates -----------------------------------------------------------------

    async def record_certificate(self, cert: CertificateRecord) -> None:
        """Keep a newly issued certificate (a fingerprint already recorded is left as it is)."""

        def work(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                if conn.execute("SELECT 1 FROM device_certificates WHERE fingerprint = ?", (cert.fingerprint,)).fetchone():
                    return
                seq = _next_certificate_seq(conn)
                taken.append(seq)
                conn.execute(
                    "INSERT INTO device_certificates (fingerprint, serial, owner, not_before, not_after, issued_at, revoked_at,"
                    " revoked_by, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (cert.fingerprint, cert.serial, cert.owner, to_micros(cert.not_before), to_micros(cert.not_after),
                     to_micros(cert.issued_at), None if cert.revoked_at is None else to_micros(cert.revoked_at), cert.revoked_by, seq),
                )

        taken: list[int] = []
        await self._run(work)
        if taken:
            self._announce(ChangeKind.CERTIFICATES, taken[-1])

    async def revoke_certificate(self, fingerprint: str, *, at: datetime, by: str) -> CertificateRecord | None:
        """Revoke one certificate; returns its record (unchanged when it was revoked already), None when unknown."""

        def work(conn: sqlite3.Connection) -> CertificateRecord | None:
            with _transaction(conn):
                row = conn.execute(_CERT_SELECT + " WHERE fingerprint = ?", (fingerprint,)).fetchone()
                if row is None:
                    return None
                record = _certificate_row(row)
                if record.revoked_at is not None:
                    return record
                taken.append(_next_certificate_seq(conn))
                conn.execute(
                    "UPDATE device_certificates SET revoked_at = ?, revoked_by = ?, seq = ? WHERE fingerprint = ?",
                    (to_micros(at), by, taken[-1], fingerprint),
                )
                return _certificate_row(conn.execute(_CERT_SELECT + " WHERE fingerprint = ?", (fingerprint,)).fetchone())

        taken: list[int] = []
        revoked = await self._run(work)
        if taken:
            self._announce(ChangeKind.CERTIFICATES, taken[-1])
        return revoked

    async def revoke_certificates_of(self, serial: str, *, at: datetime, by: str) -> tuple[CertificateRecord, ...]:
        """Revoke every unrevoked certificate naming ``serial``; returns those it revoked."""

        def work(conn: sqlite3.Connection) -> tuple[CertificateRecord, ...]:
            with _transaction(conn):
                rows = conn.execute(_CERT_SELECT + " WHERE serial = ? AND revoked_at IS NULL ORDER BY issued_at, seq", (serial,)).fetchall()
                for row in rows:
                    taken.append(_next_certificate_seq(conn))
                    conn.execute(
                        "UPDATE device_certificates SET revoked_at = ?, revoked_by = ?, seq = ? WHERE fingerprint = ?",
                        (to_micros(at), by, taken[-1], row[0]),
                    )
                return tuple(
                    _certificate_row(conn.execute(_CERT_SELECT + " WHERE fingerprint = ?", (row[0],)).fetchone()) for row in rows
                )

        taken: list[int] = []
        revoked = await self._run(work)
        if taken:
            self._announce(ChangeKind.CERTIFICATES, taken[-1])
        return revoked

    async def certificates_of(self, serial: str) -> tuple[CertificateRecord, ...]:
        """Every certificate recorded for a serial, revoked and expired ones included, oldest issued first."""

        def work(conn: sqlite3.Connection) -> tuple[CertificateRecord, ...]:
            rows = conn.execute(_CERT_SELECT + " WHERE serial = ? ORDER BY issued_at, seq", (serial,)).fetchall()
            return tuple(map(_certificate_row, rows))

        return await self._run(work)

    async def load_certificates(self) -> CertificateChanges:
        """Every recorded certificate, with the cursor to follow changes from."""

        def work(conn: sqlite3.Connection) -> CertificateChanges:
            with _transaction(conn, immediate=False):
                (cursor,) = conn.execute("SELECT value FROM counters WHERE name = 'certificate_seq'").fetchone()
                rows = conn.execute(_CERT_SELECT + " ORDER BY seq").fetchall()
            return RecordFeed(tuple(map(_certificate_row, rows)), cursor)

        return await self._run(work)

    async def certificate_changes_since(self, cursor: int, *, limit: int = 10_000) -> CertificateChanges:
        """Certificates recorded or revoked after ``cursor`` (at most ``limit``), oldest change first."""

        def work(conn: sqlite3.Connection) -> CertificateChanges:
            rows = conn.execute(_CERT_SELECT + " WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, limit + 1)).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            return RecordFeed(tuple(map(_certificate_row, rows)), rows[-1][8] if rows else cursor, more)

        return await self._run(work)


_CONNECTOR_SELECT = "SELECT name, holder, lease_until, cursor, last_success_at FROM connector_state WHERE name = ?"


def _connector_row(row: tuple[str, str, int | None, str, int | None]) -> ConnectorState:
    name, holder, until, cursor, success = row
    return ConnectorState(name, holder, None if until is None else from_micros(until), cursor,
                          None if success is None else from_micros(success))


_CERT_SELECT = (
    "SELECT fingerprint, serial, owner, not_before, not_after, issued_at, revoked_at, revoked_by, seq FROM device_certificates"
)


def _next_certificate_seq(conn: sqlite3.Connection) -> int:
    """Take the next certificate seq (inside the caller's write transaction)."""
    (seq,) = conn.execute("UPDATE counters SET value = value + 1 WHERE name = 'certificate_seq' RETURNING value").fetchone()
    return int(seq)


def _certificate_row(row: tuple[str, str, str, int, int, int, int | None, str, int]) -> CertificateRecord:
    fingerprint, serial, owner, not_before, not_after, issued_at, revoked_at, revoked_by, _seq = row
    return CertificateRecord(
        fingerprint, serial, owner, from_micros(not_before), from_micros(not_after), from_micros(issued_at),
        None if revoked_at is None else from_micros(revoked_at), revoked_by,
    )


_OWNER_SELECT = "SELECT serial, owners, set_by, set_at, source, seq FROM device_owners"


def _owner_row(row: tuple[str, bytes, str, int, str, int] | None) -> OwnerRecord | None:
    if row is None:
        return None
    serial, owners, set_by, set_at, source, _seq = row
    return OwnerRecord(serial, tuple(orjson.loads(owners)), set_by, from_micros(set_at), OwnerSource(source))


_AccessRow = tuple[int, str, str, str, str, str, str, int, int, int]


def _access_rollup(row: _AccessRow) -> AccessRollup:
    hour, route, tier, user, device, verdict, reason, count, first_seen, last_seen = row
    return AccessRollup(
        from_micros(hour), route, tier, user, device, AccessVerdict(verdict), reason, count, from_micros(first_seen), from_micros(last_seen),
    )


def _details_dict(details: HostDetails) -> dict[str, str]:
    return {name: getattr(details, name) for name in HostDetails.__dataclass_fields__}


class _transaction:
    """BEGIN (IMMEDIATE for writers) ... COMMIT, ROLLBACK on error; the connection is in autocommit mode."""

    def __init__(self, conn: sqlite3.Connection, *, immediate: bool = True) -> None:
        self._conn = conn
        self._begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def __enter__(self) -> None:
        self._conn.execute(self._begin)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the store `{path}`: {exc}; check the directory exists and is writable") from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        _migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot open the store `{path}`: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    with _transaction(conn):
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store `{path}` has schema version {version}, newer than this Gatehouse knows"
                f" ({SCHEMA_VERSION}); upgrade Gatehouse or point `store` at another file"
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        if version != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
