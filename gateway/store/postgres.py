"""The shared store for several replicas: PostgreSQL through an asyncpg connection pool.

Owns: PostgresStore, PostgresAuditSink, open_postgres_store, the
PostgreSQL schema (MIGRATIONS) and its migration.
Must not import: aiohttp, gateway.ingest, gateway.app.

Semantics are those of ``sqlite.py`` (the reference backend): the same outcomes, ordering,
idempotency on (serial, collected_at), UTC microsecond datetimes and snapshot bytes.

Replicas
--------
- Migrations run on open, inside one transaction holding ``pg_advisory_xact_lock``: replicas
  starting together apply each version once and the others wait, then find nothing to do.
- The snapshot seq comes from one counter row locked (``FOR UPDATE``) by every snapshot write,
  not from a SEQUENCE: a SEQUENCE hands out numbers in call order but transactions commit in any
  order, so a follower could move its cursor past a seq whose transaction had not committed yet
  and miss that snapshot for ever. With the row lock, seqs become visible in commit order.
- Every write that other replicas cache (snapshots, the owner inventory, device certificates, audit entries, and so grants) sends
  ``NOTIFY gatehouse_changes`` with ``{"kind": ..., "seq": ...}`` in its own transaction, so the
  notice is delivered only if the write committed. ``subscribe(callback)`` listens on a
  dedicated connection and reconnects by itself; after every (re)connect it calls back with
  ``ChangeKind.RESYNC``, and the caller then catches up with ``changes_since(cursor)`` (or the
  audit log's ``entries(after_seq=...)``): a lost notice costs latency, never data.

Outages
-------
Connects and commands have bounded timeouts. Any failure raises ``StoreError`` whose message says
what could not be done, whether anything was stored, and that it works again once the database is
back. The pool replaces broken connections by itself; a pooled connection found dead when its
transaction begins is replaced and the work retried once, as nothing had been sent yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TypeVar
from urllib.parse import urlsplit

import asyncpg
import orjson
import structlog

from breakglass.audit import GENESIS_HEAD, AuditEntry, ChainHead, check_batch, decode_entry, encode_entry
from gateway.store.base import (
    AccessRollup,
    CertificateChanges,
    CertificateRecord,
    AccessVerdict,
    ChangeCallback,
    ChangeKind,
    ChangeNotice,
    Changes,
    ConnectorClaim,
    ConnectorState,
    Enrollment,
    EnrollmentRequest,
    EnrollSession,
    HistoryEntry,
    HostDetails,
    OwnerChanges,
    RecordFeed,
    OwnerEdit,
    OwnerRecord,
    OwnerSource,
    OsqueryConflict,
    PendingQuery,
    PutOutcome,
    QueryResult,
    StoreError,
    Subscribers,
    edited_owners,
)
from gateway.store.codec import SnapshotDecoder, encode_snapshot
from gateway.store.enroll_codec import (
    decode_conflict, decode_request, decode_session, encode_conflict, encode_request, encode_session,
)
from gateway.store.sqlite import hash_node_key
from policy_engine.model import DeviceSnapshot

T = TypeVar("T")

_log = structlog.get_logger(__name__)

DEFAULT_CHANNEL = "gatehouse_changes"
_MIGRATION_LOCK = 0x67617465686F7573  # "gatehous" in ASCII: Gatehouse's key for pg_advisory_xact_lock
_ENROLL_LOCK_SPACE = 0x67_68_65  # first key of pg_advisory_xact_lock(int, int) for per-serial locks
_HISTORY_PAGE = 1000
_ACCESS_PAGE = 2000
_ACCESS_KEY = "hour, route, tier, user_email, device, verdict, reason"
_DECODE_INLINE = 16
"""Up to this many snapshots are decoded on the event loop; more go to the decoding thread."""

# Each migration is a list of statements; schema version N means MIGRATIONS[:N] were applied.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE latest_snapshots (
            serial text PRIMARY KEY,
            collected_at timestamptz NOT NULL,
            seq bigint NOT NULL UNIQUE,
            body bytea NOT NULL
        )""",
        "CREATE TABLE counters (name text PRIMARY KEY, value bigint NOT NULL)",
        "INSERT INTO counters (name, value) VALUES ('snapshot_seq', 0)",
        """CREATE TABLE enrollments (
            node_key_hash text PRIMARY KEY,
            serial text NOT NULL,
            host_identifier text NOT NULL,
            details json NOT NULL,
            enrolled_at timestamptz NOT NULL,
            revoked_at timestamptz
        )""",
        "CREATE INDEX enrollments_serial ON enrollments (serial)",
        """CREATE TABLE osquery_results (
            serial text NOT NULL,
            query_name text NOT NULL,
            rows json NOT NULL,
            collected_at timestamptz NOT NULL,
            PRIMARY KEY (serial, query_name)
        )""",
        """CREATE TABLE compliance_history (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            serial text NOT NULL,
            owners json NOT NULL,
            recorded_at timestamptz NOT NULL,
            results json NOT NULL
        )""",
        "CREATE INDEX compliance_history_time ON compliance_history (recorded_at)",
        """CREATE TABLE failing_since (
            serial text NOT NULL,
            check_name text NOT NULL,
            since timestamptz NOT NULL,
            PRIMARY KEY (serial, check_name)
        )""",
        """CREATE TABLE pending_queries (
            query_id text COLLATE "C" PRIMARY KEY,
            serial text NOT NULL,
            query_name text NOT NULL,
            sql text NOT NULL,
            created_at timestamptz NOT NULL
        )""",
        "CREATE INDEX pending_queries_serial ON pending_queries (serial)",
        # The break-glass audit chain: entries stored exactly as encode_entry wrote them, and the
        # head in its own row, updated in the same transaction as the entries it points at.
        """CREATE TABLE audit_entries (
            seq bigint PRIMARY KEY,
            prev_hash text NOT NULL,
            hash text NOT NULL,
            body text NOT NULL
        )""",
        """CREATE TABLE audit_head (
            id integer PRIMARY KEY CHECK (id = 1),
            seq bigint NOT NULL,
            hash text NOT NULL
        )""",
        f"INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HEAD.hash}')",
    ),
    (
        # The owner inventory (see sqlite.py): `owners` `[]` is an unassignment kept as a tombstone.
        """CREATE TABLE device_owners (
            serial text PRIMARY KEY,
            owners json NOT NULL,
            set_by text NOT NULL,
            set_at timestamptz NOT NULL,
            source text NOT NULL,
            seq bigint NOT NULL UNIQUE
        )""",
        "INSERT INTO counters (name, value) VALUES ('owner_seq', 0)",
    ),
    (
        # The access ledger (see sqlite.py): the primary key, hour first, is the index a period is read by.
        """CREATE TABLE access_ledger (
            hour timestamptz NOT NULL,
            route text COLLATE "C" NOT NULL,
            tier text COLLATE "C" NOT NULL,
            user_email text COLLATE "C" NOT NULL,
            device text COLLATE "C" NOT NULL,
            verdict text COLLATE "C" NOT NULL,
            reason text COLLATE "C" NOT NULL,
            count bigint NOT NULL,
            first_seen timestamptz NOT NULL,
            last_seen timestamptz NOT NULL,
            PRIMARY KEY (hour, route, tier, user_email, device, verdict, reason)
        )""",
        """CREATE TABLE access_writers (
            writer text PRIMARY KEY,
            last_seq bigint NOT NULL,
            updated_at timestamptz NOT NULL
        )""",
    ),
    (
        # Pull connectors (see sqlite.py): the lease row is what keeps N replicas from polling N times.
        """CREATE TABLE connector_state (
            name text PRIMARY KEY,
            holder text NOT NULL,
            lease_until timestamptz,
            cursor text NOT NULL,
            last_success_at timestamptz
        )""",
    ),
    (
        # Device certificates issued by Gatehouse's CA (see sqlite.py); `certificate_seq` orders records and revocations.
        """CREATE TABLE device_certificates (
            fingerprint text COLLATE "C" PRIMARY KEY,
            serial text NOT NULL,
            owner text NOT NULL,
            not_before timestamptz NOT NULL,
            not_after timestamptz NOT NULL,
            issued_at timestamptz NOT NULL,
            revoked_at timestamptz,
            revoked_by text NOT NULL,
            seq bigint NOT NULL UNIQUE
        )""",
        "CREATE INDEX device_certificates_serial ON device_certificates (serial)",
        "INSERT INTO counters (name, value) VALUES ('certificate_seq', 0)",
    ),
    (
        # Laptop enrollment (see sqlite.py): bodies are enroll_codec's deterministic bytes, compared by `swap_*`.
        """CREATE TABLE enroll_sessions (
            session_hash text PRIMARY KEY,
            user_code text NOT NULL UNIQUE,
            expires_at timestamptz NOT NULL,
            body bytea NOT NULL
        )""",
        """CREATE TABLE enrollment_requests (
            id text PRIMARY KEY,
            serial text NOT NULL,
            created_at timestamptz NOT NULL,
            body bytea NOT NULL
        )""",
        "CREATE INDEX enrollment_requests_time ON enrollment_requests (created_at)",
        """CREATE TABLE osquery_conflicts (
            id bigserial PRIMARY KEY,
            serial text NOT NULL,
            at timestamptz NOT NULL,
            body bytea NOT NULL
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# Failures meaning "the database cannot be reached or went away", as opposed to a refused statement.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,
)


async def open_postgres_store(
    dsn: str,
    *,
    min_connections: int = 1,
    max_connections: int = 10,
    connect_timeout_s: float = 5.0,
    command_timeout_s: float = 10.0,
    channel: str = DEFAULT_CHANNEL,
) -> PostgresStore:
    """Open a pool on ``postgresql://...`` and migrate the schema (see ``PostgresStore.open``).

    Raises:
        StoreError: the database cannot be reached, or its schema is newer than this code.
    """
    return await PostgresStore.open(
        dsn,
        min_connections=min_connections,
        max_connections=max_connections,
        connect_timeout_s=connect_timeout_s,
        command_timeout_s=command_timeout_s,
        channel=channel,
    )


def describe_dsn(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages (never the user or password)."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return "postgresql"
    database = parts.path.lstrip("/") or "postgres"
    return f"{host}:{port}/{database}"


class PostgresStore:
    """The Store on PostgreSQL; open with ``await PostgresStore.open(dsn)`` (or ``open_postgres_store``)."""

    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool,
        *,
        connect_timeout_s: float,
        command_timeout_s: float,
        channel: str,
    ) -> None:
        self._dsn = dsn
        self._pool = pool
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self.channel = channel
        self.where = describe_dsn(dsn)
        """``host:port/database``, safe to log."""
        self._closed = False
        self._subscribers = Subscribers()
        self._listener: asyncio.Task[None] | None = None
        self.listening = False
        """True while the change listener holds a live connection with LISTEN in place."""
        # Decoding 100,000 snapshots takes a while: do it off the event loop so requests keep flowing.
        self._decoding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatehouse-pg-decode")
        self._thread_decoder = SnapshotDecoder()  # INVARIANT: used only on the decoding thread
        self._loop_decoder = SnapshotDecoder()  # INVARIANT: used only on the event loop

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 10.0,
        channel: str = DEFAULT_CHANNEL,
    ) -> PostgresStore:
        """Create the connection pool and bring the schema to this code's version.

        ``connect_timeout_s`` bounds each connection attempt (and waiting for a free pooled
        connection), ``command_timeout_s`` each statement. The password may come from the DSN or
        the ``PGPASSWORD`` environment variable.

        Raises:
            StoreError: the database cannot be reached, or its schema is newer than this code.
        """
        if not 1 <= min_connections <= max_connections:
            raise ValueError(
                f"pool size `{min_connections}..{max_connections}` is impossible; "
                "write 1 <= min_connections <= max_connections"
            )
        if not channel.isidentifier():
            raise ValueError(f"notify channel `{channel}` is not a plain identifier; write letters, digits and `_`")
        where = describe_dsn(dsn)
        try:
            pool = await asyncio.wait_for(
                asyncpg.create_pool(
                    dsn,
                    min_size=min_connections,
                    max_size=max_connections,
                    timeout=connect_timeout_s,
                    command_timeout=command_timeout_s,
                    server_settings={"application_name": "gatehouse"},
                ),
                timeout=connect_timeout_s * 2,
            )
        except (*_UNREACHABLE, asyncpg.PostgresError) as exc:
            raise StoreError(
                f"cannot open the PostgreSQL store at `{where}`: {_reason(exc)}; check that the server"
                " is running and the DSN (user, database, password in `PGPASSWORD`) is right"
            ) from exc
        store = cls(
            dsn, pool, connect_timeout_s=connect_timeout_s, command_timeout_s=command_timeout_s, channel=channel
        )
        try:
            await store._transact("migrate the schema", _migrate, write=True)
        except BaseException:
            await store.close()
            raise
        return store

    # -- plumbing ----------------------------------------------------------------------------

    async def _transact(
        self,
        what: str,
        work: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        write: bool,
        snapshot: bool = False,
    ) -> T:
        """Run ``work`` on a pooled connection; every failure becomes StoreError.

        Writes and ``snapshot`` reads run in one transaction (REPEATABLE READ for ``snapshot``);
        other reads are single statements and run without one.
        """
        if self._closed:
            raise StoreError(f"could not {what}: the PostgreSQL store `{self.where}` is closed")
        isolation = "repeatable_read" if snapshot else "read_committed"
        for attempt in (1, 2):
            phase = "connect"
            try:
                async with self._pool.acquire(timeout=self._connect_timeout_s) as conn:
                    if not write and not snapshot:
                        phase = "read"
                        return await work(conn)
                    phase = "begin"
                    transaction = conn.transaction(isolation=isolation, readonly=not write)
                    await transaction.start()
                    phase = "work"
                    try:
                        result = await work(conn)
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await transaction.rollback()
                        raise
                    phase = "commit"
                    await transaction.commit()
                    return result
            except _UNREACHABLE as exc:
                if phase in ("begin", "read") and attempt == 1 and not isinstance(exc, TimeoutError):
                    # INVARIANT: a pooled connection that died since its last use failed at BEGIN
                    # (nothing sent yet) or on a plain read (harmless to repeat); the pool
                    # reconnects on the next acquire.
                    continue
                raise StoreError(self._unreachable_message(what, exc, phase=phase, write=write)) from exc
            except asyncpg.PostgresError as exc:
                outcome = "; nothing was stored" if write else ""
                raise StoreError(f"could not {what} in the PostgreSQL store `{self.where}`: {_reason(exc)}{outcome}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _unreachable_message(self, what: str, exc: BaseException, *, phase: str, write: bool) -> str:
        if write and phase == "commit":
            stored = "it may or may not have been stored (the commit was not confirmed)"
        elif write:
            stored = "nothing was stored"
        else:
            stored = "nothing was read"
        if isinstance(exc, TimeoutError):
            problem = "did not answer in time"
        else:
            problem = f"is unreachable ({_reason(exc)})"
        return (
            f"could not {what}: the PostgreSQL store `{self.where}` {problem}; "
            f"{stored}; this works again by itself once the database is back"
        )

    async def ping(self, *, timeout_s: float = 1.0) -> None:
        """Run ``SELECT 1`` on a pooled connection within ``timeout_s``.

        Raises:
            StoreError: the database did not answer in time.
        """
        if self._closed:
            raise StoreError(f"the PostgreSQL store `{self.where}` is closed")
        try:
            async with asyncio.timeout(timeout_s):
                async with self._pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except (*_UNREACHABLE, asyncpg.PostgresError) as exc:
            raise StoreError(
                f"the PostgreSQL store `{self.where}` does not answer ({_reason(exc)}); writes are refused"
                " until it is back"
            ) from exc

    async def health(self, *, timeout_s: float = 1.0) -> bool:
        """True when the database answers within ``timeout_s`` (for readiness); never raises."""
        try:
            await self.ping(timeout_s=timeout_s)
        except StoreError:
            return False
        return True

    async def close(self) -> None:
        """Stop the change listener and close the pool; later calls raise StoreError."""
        if self._closed:
            return
        self._closed = True
        self._subscribers.clear()
        await self._stop_listener()
        try:
            await asyncio.wait_for(self._pool.close(), timeout=self._connect_timeout_s)
        except _UNREACHABLE:  # TimeoutError is one of them
            self._pool.terminate()
        self._decoding.shutdown(wait=False)

    async def _decode(self, bodies: list[bytes]) -> tuple[DeviceSnapshot, ...]:
        if len(bodies) <= _DECODE_INLINE:
            snapshots = tuple(self._loop_decoder.decode(body) for body in bodies)
            self._loop_decoder.forget_devices()
            return snapshots
        return await asyncio.get_running_loop().run_in_executor(self._decoding, self._decode_all, bodies)

    def _decode_all(self, bodies: list[bytes]) -> tuple[DeviceSnapshot, ...]:
        decode = self._thread_decoder.decode
        snapshots = tuple(decode(body) for body in bodies)
        self._thread_decoder.forget_devices()  # the batch shares owner tuples and times; later ones need not
        return snapshots

    async def audit_sink(self) -> PostgresAuditSink:
        """The break-glass audit sink on this store's pool (nothing to open: it shares the pool).

        Raises:
            StoreError: the store is closed.
        """
        if self._closed:
            raise StoreError(f"cannot open the audit log: the PostgreSQL store `{self.where}` is closed")
        return PostgresAuditSink(self)

    # -- change notices ----------------------------------------------------------------------

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback`` for every change notice until the returned function is called.

        The first subscriber starts a listener on a dedicated connection (must be called on the
        running loop); it reconnects after any failure and calls back with ``ChangeKind.RESYNC``
        every time it (re)connects, including the first time.

        Raises:
            StoreError: the store is closed.
        """
        if self._closed:
            raise StoreError(f"cannot subscribe: the PostgreSQL store `{self.where}` is closed")
        remove = self._subscribers.add(callback)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen(), name="gatehouse-pg-listener")

        def unsubscribe() -> None:
            remove()
            if not self._subscribers and self._listener is not None:
                self._listener.cancel()
                self._listener = None

        return unsubscribe

    async def _stop_listener(self) -> None:
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            # INVARIANT: shutdown never waits on an unreachable server for longer than a connect timeout.
            done, _ = await asyncio.wait({task}, timeout=self._connect_timeout_s)
            if not done:
                _log.warning("store.listener_stop_timed_out", timeout_s=self._connect_timeout_s)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            data = orjson.loads(payload)
            notice = ChangeNotice(ChangeKind(data["kind"]), int(data["seq"]))
        except (ValueError, KeyError, TypeError):
            _log.warning("store.change_notice_unreadable", payload=payload[:80])
            notice = ChangeNotice(ChangeKind.RESYNC, 0)
        self._subscribers.dispatch(notice)

    async def _listen(self) -> None:
        delay = 0.05
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._connect_timeout_s,
                    command_timeout=self._command_timeout_s,
                    server_settings={"application_name": "gatehouse-listener"},
                )
                await conn.add_listener(self.channel, self._on_notify)
                self.listening = True
                delay = 0.05
                _log.info("store.listener_connected", store=self.where)
                self._subscribers.dispatch(ChangeNotice(ChangeKind.RESYNC, 0))
                idle = 0.0
                while not conn.is_closed():
                    await asyncio.sleep(0.25)
                    idle += 0.25
                    if idle >= 5.0:
                        # A half-open TCP connection is not noticed by itself: ask the server.
                        idle = 0.0
                        await conn.fetchval("SELECT 1", timeout=self._connect_timeout_s)
                _log.warning("store.listener_lost", store=self.where)
            except Exception as exc:  # the listener must outlive any failure; caches also poll
                _log.warning("store.listener_failed", store=self.where, error=_reason(exc), retry_in_s=delay)
            finally:
                self.listening = False
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    # -- snapshots ---------------------------------------------------------------------------

    async def put_snapshots(self, snapshots: Sequence[DeviceSnapshot]) -> tuple[PutOutcome, ...]:
        """Store a batch in one transaction, idempotent on (serial, collected_at); encoded off the event loop."""
        encoded = await asyncio.to_thread(lambda: [(s.serial, s.collected_at, encode_snapshot(s)) for s in snapshots])
        if not encoded:
            return ()

        async def work(conn: asyncpg.Connection) -> tuple[PutOutcome, ...]:
            # INVARIANT: the counter row lock serialises snapshot writers, so seqs commit in order.
            seq: int = await conn.fetchval("SELECT value FROM counters WHERE name = 'snapshot_seq' FOR UPDATE")
            rows = await conn.fetch(
                "SELECT serial, collected_at FROM latest_snapshots WHERE serial = ANY($1::text[])",
                list({serial for serial, _, _ in encoded}),
            )
            held: dict[str, datetime] = {row[0]: row[1] for row in rows}
            final: dict[str, tuple[datetime, int, bytes]] = {}
            outcomes: list[PutOutcome] = []
            for serial, collected_at, body in encoded:
                current = held.get(serial)
                if current is not None and current == collected_at:
                    outcomes.append(PutOutcome.DUPLICATE)
                    continue
                if current is not None and current > collected_at:
                    outcomes.append(PutOutcome.OLDER)
                    continue
                seq += 1
                held[serial] = collected_at
                final[serial] = (collected_at, seq, body)
                outcomes.append(PutOutcome.STORED)
            if final:
                await conn.execute(
                    "INSERT INTO latest_snapshots (serial, collected_at, seq, body)"
                    " SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bytea[])"
                    " ON CONFLICT (serial) DO UPDATE SET collected_at = excluded.collected_at,"
                    " seq = excluded.seq, body = excluded.body",
                    list(final),
                    [v[0] for v in final.values()],
                    [v[1] for v in final.values()],
                    [v[2] for v in final.values()],
                )
                await conn.execute("UPDATE counters SET value = $1 WHERE name = 'snapshot_seq'", seq)
                await _notify(conn, self.channel, ChangeKind.SNAPSHOT, seq)
            return tuple(outcomes)

        return await self._transact(f"store {_count(len(encoded), 'snapshot')}", work, write=True)

    async def latest(self, serial: str) -> DeviceSnapshot | None:
        """The device's newest stored snapshot."""

        async def work(conn: asyncpg.Connection) -> DeviceSnapshot | None:
            body = await conn.fetchval("SELECT body FROM latest_snapshots WHERE serial = $1", serial)
            return None if body is None else self._loop_decoder.decode(body)

        snapshot = await self._transact(f"read the latest snapshot of `{serial}`", work, write=False)
        self._loop_decoder.forget_devices()
        return snapshot

    async def load_latest(self) -> Changes:
        """Every device's latest snapshot, with the cursor to follow changes from."""

        async def work(conn: asyncpg.Connection) -> tuple[int, list[bytes]]:
            cursor = await conn.fetchval("SELECT value FROM counters WHERE name = 'snapshot_seq'")
            rows = await conn.fetch("SELECT body FROM latest_snapshots")
            return cursor, [row[0] for row in rows]

        cursor, bodies = await self._transact("load every latest snapshot", work, write=False, snapshot=True)
        return Changes(await self._decode(bodies), cursor)

    async def changes_since(self, cursor: int, *, limit: int = 10_000) -> Changes:
        """Latest snapshots stored after ``cursor`` (at most ``limit``), oldest first."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(  # type: ignore[no-any-return]
                "SELECT seq, body FROM latest_snapshots WHERE seq > $1 ORDER BY seq LIMIT $2", cursor, limit + 1
            )

        rows = await self._transact(f"read snapshot changes after {cursor}", work, write=False)
        more = len(rows) > limit
        rows = rows[:limit]
        new_cursor = rows[-1][0] if rows else cursor
        return Changes(await self._decode([row[1] for row in rows]), new_cursor, more)

    # -- enrollments -------------------------------------------------------------------------

    async def create_enrollment(
        self, *, node_key: str, serial: str, host_identifier: str, details: HostDetails, now: datetime
    ) -> Enrollment:
        """Record a new node key for a device; earlier active keys of the same serial are revoked."""
        enrollment = Enrollment(hash_node_key(node_key), serial, host_identifier, now, details)
        body = orjson.dumps(_details_dict(details)).decode()

        async def work(conn: asyncpg.Connection) -> Enrollment:
            # Two replicas enrolling one device at once must not both leave an active key.
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _ENROLL_LOCK_SPACE, _lock_key(serial))
            await conn.execute(
                "UPDATE enrollments SET revoked_at = $1 WHERE serial = $2 AND revoked_at IS NULL", now, serial
            )
            await conn.execute(
                "INSERT INTO enrollments (node_key_hash, serial, host_identifier, details, enrolled_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                enrollment.node_key_hash, serial, host_identifier, body, now,
            )
            return enrollment

        return await self._transact(f"enroll `{serial}`", work, write=True)

    async def enrollment_by_node_key(self, node_key: str) -> Enrollment | None:
        """The enrollment a node key belongs to, revoked or not; None when unknown."""
        key_hash = hash_node_key(node_key)

        async def work(conn: asyncpg.Connection) -> Enrollment | None:
            row = await conn.fetchrow(
                "SELECT serial, host_identifier, details, enrolled_at, revoked_at FROM enrollments"
                " WHERE node_key_hash = $1",
                key_hash,
            )
            if row is None:
                return None
            serial, host_identifier, details, enrolled_at, revoked_at = row
            return Enrollment(
                key_hash,
                serial,
                host_identifier,
                enrolled_at,
                HostDetails(**{k: sys.intern(v) for k, v in orjson.loads(details).items()}),
                revoked_at,
            )

        return await self._transact("look up a node key", work, write=False)

    async def revoke_enrollments(self, serial: str, *, now: datetime) -> int:
        """Revoke every active node key of a device; returns how many were revoked."""

        async def work(conn: asyncpg.Connection) -> int:
            status = await conn.execute(
                "UPDATE enrollments SET revoked_at = $1 WHERE serial = $2 AND revoked_at IS NULL", now, serial
            )
            return _rowcount(status)

        return await self._transact(f"revoke the enrollments of `{serial}`", work, write=True)

    async def active_enrollments(self, serial: str) -> tuple[Enrollment, ...]:
        """The device's enrollments whose node key is not revoked, oldest first."""

        async def work(conn: asyncpg.Connection) -> tuple[Enrollment, ...]:
            rows = await conn.fetch(
                "SELECT node_key_hash, host_identifier, details, enrolled_at FROM enrollments"
                " WHERE serial = $1 AND revoked_at IS NULL ORDER BY enrolled_at",
                serial,
            )
            return tuple(Enrollment(r[0], serial, r[1], r[3], HostDetails(**orjson.loads(r[2]))) for r in rows)

        return await self._transact(f"read the enrollments of `{serial}`", work, write=False)

    # -- laptop enrollment -------------------------------------------------------------------

    async def create_enroll_session(self, session: EnrollSession) -> None:
        """Store a new session (its hash and user code are unique)."""

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO enroll_sessions (session_hash, user_code, expires_at, body) VALUES ($1, $2, $3, $4)",
                session.session_hash, session.user_code, session.expires_at, encode_session(session),
            )

        await self._transact("store an enrollment sign-in", work, write=True)

    async def enroll_session(self, session_hash: str) -> EnrollSession | None:
        """The session with this hash; None when unknown."""
        return await self._one("SELECT body FROM enroll_sessions WHERE session_hash = $1", session_hash, decode_session)

    async def enroll_session_by_code(self, user_code: str) -> EnrollSession | None:
        """The session shown with this user code; None when unknown."""
        return await self._one("SELECT body FROM enroll_sessions WHERE user_code = $1", user_code, decode_session)

    async def swap_enroll_session(self, old: EnrollSession, new: EnrollSession) -> bool:
        """Replace ``old`` by ``new`` if ``old`` is still what is stored."""
        return await self._swap("enroll_sessions", "session_hash", old.session_hash, encode_session(old), encode_session(new))

    async def create_enrollment_request(self, request: EnrollmentRequest) -> None:
        """Store a new enrollment request."""

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO enrollment_requests (id, serial, created_at, body) VALUES ($1, $2, $3, $4)",
                request.id, request.serial, request.created_at, encode_request(request),
            )

        await self._transact(f"store the enrollment request of `{request.serial}`", work, write=True)

    async def enrollment_request(self, request_id: str) -> EnrollmentRequest | None:
        """The request with this id; None when unknown."""
        return await self._one("SELECT body FROM enrollment_requests WHERE id = $1", request_id, decode_request)

    async def swap_enrollment_request(self, old: EnrollmentRequest, new: EnrollmentRequest) -> bool:
        """Replace ``old`` by ``new`` if ``old`` is still what is stored."""
        return await self._swap("enrollment_requests", "id", old.id, encode_request(old), encode_request(new))

    async def enrollment_requests(self, *, limit: int = 200) -> tuple[EnrollmentRequest, ...]:
        """The newest requests, newest first."""

        async def work(conn: asyncpg.Connection) -> tuple[EnrollmentRequest, ...]:
            rows = await conn.fetch("SELECT body FROM enrollment_requests ORDER BY created_at DESC, id LIMIT $1", limit)
            return tuple(decode_request(r[0]) for r in rows)

        return await self._transact("read the enrollment requests", work, write=False)

    async def record_osquery_conflict(self, conflict: OsqueryConflict) -> None:
        """Keep a conflict for the fleet page."""

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute("INSERT INTO osquery_conflicts (serial, at, body) VALUES ($1, $2, $3)",
                               conflict.serial, conflict.at, encode_conflict(conflict))

        await self._transact(f"record an osquery conflict for `{conflict.serial}`", work, write=True)

    async def osquery_conflicts(self, *, limit: int = 200) -> tuple[OsqueryConflict, ...]:
        """The newest conflicts, newest first."""

        async def work(conn: asyncpg.Connection) -> tuple[OsqueryConflict, ...]:
            rows = await conn.fetch("SELECT body FROM osquery_conflicts ORDER BY at DESC, id DESC LIMIT $1", limit)
            return tuple(decode_conflict(r[0]) for r in rows)

        return await self._transact("read the osquery conflicts", work, write=False)

    async def _one(self, sql: str, key: str, decode: Callable[[bytes], T]) -> T | None:
        async def work(conn: asyncpg.Connection) -> T | None:
            body = await conn.fetchval(sql, key)
            return None if body is None else decode(body)

        return await self._transact("read an enrollment record", work, write=False)

    async def _swap(self, table: str, key_column: str, key: str, old: bytes, new: bytes) -> bool:
        async def work(conn: asyncpg.Connection) -> bool:
            status = await conn.execute(f"UPDATE {table} SET body = $1 WHERE {key_column} = $2 AND body = $3", new, key, old)
            return _rowcount(status) == 1

        return await self._transact(f"update the enrollment record `{key}`", work, write=True)

    # -- osquery query state -----------------------------------------------------------------

    async def query_results(self, serial: str) -> Mapping[str, QueryResult]:
        """Every posture query's current rows for a device, by query name."""

        async def work(conn: asyncpg.Connection) -> Mapping[str, QueryResult]:
            rows = await conn.fetch(
                "SELECT query_name, rows, collected_at FROM osquery_results WHERE serial = $1", serial
            )
            return {name: QueryResult(tuple(orjson.loads(body)), collected_at) for name, body, collected_at in rows}

        return await self._transact(f"read the query results of `{serial}`", work, write=False)

    async def save_query_results(self, serial: str, results: Mapping[str, QueryResult]) -> None:
        """Replace the rows of the named queries for a device (other queries are untouched)."""
        params = [
            (serial, name, orjson.dumps([dict(r) for r in result.rows]).decode(), result.collected_at)
            for name, result in results.items()
        ]
        if not params:
            return

        async def work(conn: asyncpg.Connection) -> None:
            await conn.executemany(
                "INSERT INTO osquery_results (serial, query_name, rows, collected_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (serial, query_name) DO UPDATE SET rows = excluded.rows,"
                " collected_at = excluded.collected_at",
                params,
            )

        await self._transact(f"save the query results of `{serial}`", work, write=True)

    # -- compliance history ------------------------------------------------------------------

    async def record_compliance(self, entry: HistoryEntry) -> None:
        """Append an entry and update failing-since for its checks in the same transaction."""
        at = entry.recorded_at
        failing = [(entry.serial, check, at) for check, ok in entry.results.items() if not ok]
        passing = [check for check, ok in entry.results.items() if ok]
        owners = orjson.dumps(list(entry.owners)).decode()
        results = orjson.dumps(dict(entry.results)).decode()

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO compliance_history (serial, owners, recorded_at, results) VALUES ($1, $2, $3, $4)",
                entry.serial, owners, at, results,
            )
            if failing:
                await conn.executemany(
                    "INSERT INTO failing_since (serial, check_name, since) VALUES ($1, $2, $3)"
                    " ON CONFLICT (serial, check_name) DO UPDATE SET since = LEAST(failing_since.since, excluded.since)",
                    failing,
                )
            if passing:
                await conn.execute(
                    "DELETE FROM failing_since WHERE serial = $1 AND check_name = ANY($2::text[])", entry.serial, passing
                )

        await self._transact(f"record the compliance of `{entry.serial}`", work, write=True)

    async def iter_history(self, *, since: datetime, until: datetime | None = None) -> AsyncIterator[HistoryEntry]:
        """History entries recorded in [since, until), oldest first, fetched in pages."""
        last_id = 0
        while True:

            async def work(conn: asyncpg.Connection, last_id: int = last_id) -> list[asyncpg.Record]:
                return await conn.fetch(  # type: ignore[no-any-return]
                    "SELECT id, serial, owners, recorded_at, results FROM compliance_history"
                    " WHERE recorded_at >= $1 AND ($2::timestamptz IS NULL OR recorded_at < $2) AND id > $3"
                    " ORDER BY id LIMIT $4",
                    since, until, last_id, _HISTORY_PAGE,
                )

            page = await self._transact("read the compliance history", work, write=False)
            # INVARIANT: as in sqlite.py, "oldest first" is the order entries were recorded (ids).
            for row_id, serial, owners, recorded_at, results in page:
                last_id = row_id
                yield HistoryEntry(serial, tuple(orjson.loads(owners)), recorded_at, orjson.loads(results))
            if len(page) < _HISTORY_PAGE:
                return

    async def prune_history(self, *, before: datetime) -> int:
        """Delete entries recorded before ``before``; returns how many were deleted."""

        async def work(conn: asyncpg.Connection) -> int:
            return _rowcount(await conn.execute("DELETE FROM compliance_history WHERE recorded_at < $1", before))

        return await self._transact("prune the compliance history", work, write=True)

    # -- access ledger -----------------------------------------------------------------------

    async def add_access_rollups(self, rollups: Sequence[AccessRollup], *, writer: str | None = None, seq: int = 0) -> bool:
        """Add each rollup's count to its row, widening first/last seen; False (nothing added) for a batch ``writer`` already added.

        Rows are added in key order, so two replicas adding overlapping batches lock rows in the same
        order and never deadlock each other.
        """
        params = sorted(
            (r.hour, r.route, r.tier, r.user, r.device, r.verdict.value, r.reason, r.count, r.first_seen, r.last_seen)
            for r in rollups
        )
        stamp = max((p[9] for p in params), default=None)

        async def work(conn: asyncpg.Connection) -> bool:
            if writer is not None:
                last = await conn.fetchval("SELECT last_seq FROM access_writers WHERE writer = $1 FOR UPDATE", writer)
                if last is not None and last >= seq:
                    return False
                await conn.execute(
                    "INSERT INTO access_writers (writer, last_seq, updated_at) VALUES ($1, $2, coalesce($3, now()))"
                    " ON CONFLICT (writer) DO UPDATE SET last_seq = excluded.last_seq,"
                    " updated_at = GREATEST(access_writers.updated_at, excluded.updated_at)",
                    writer, seq, stamp,
                )
            if params:
                await conn.executemany(
                    f"INSERT INTO access_ledger ({_ACCESS_KEY}, count, first_seen, last_seen)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                    f" ON CONFLICT ({_ACCESS_KEY}) DO UPDATE SET count = access_ledger.count + excluded.count,"
                    " first_seen = LEAST(access_ledger.first_seen, excluded.first_seen),"
                    " last_seen = GREATEST(access_ledger.last_seen, excluded.last_seen)",
                    params,
                )
            return True

        return await self._transact(f"add {_count(len(params), 'access ledger row')}", work, write=True)

    async def iter_access(self, *, since: datetime, until: datetime | None = None) -> AsyncIterator[AccessRollup]:
        """Every rollup whose hour is in [since, until), oldest hour first, fetched in pages."""
        after: tuple[object, ...] | None = None
        while True:

            async def work(conn: asyncpg.Connection, after: tuple[object, ...] | None = after) -> list[asyncpg.Record]:
                if after is None:
                    return await conn.fetch(  # type: ignore[no-any-return]
                        f"SELECT {_ACCESS_KEY}, count, first_seen, last_seen FROM access_ledger"
                        " WHERE hour >= $1 AND ($2::timestamptz IS NULL OR hour < $2)"
                        f" ORDER BY {_ACCESS_KEY} LIMIT $3",
                        since, until, _ACCESS_PAGE,
                    )
                return await conn.fetch(  # type: ignore[no-any-return]
                    f"SELECT {_ACCESS_KEY}, count, first_seen, last_seen FROM access_ledger"
                    f" WHERE ($1::timestamptz IS NULL OR hour < $1) AND ({_ACCESS_KEY}) > ($2, $3, $4, $5, $6, $7, $8)"
                    f" ORDER BY {_ACCESS_KEY} LIMIT $9",
                    until, *after, _ACCESS_PAGE,
                )

            page = await self._transact("read the access ledger", work, write=False)
            for hour, route, tier, user, device, verdict, reason, count, first_seen, last_seen in page:
                yield AccessRollup(hour, route, tier, user, device, AccessVerdict(verdict), reason, count, first_seen, last_seen)
            if len(page) < _ACCESS_PAGE:
                return
            after = tuple(page[-1])[:7]

    async def prune_access(self, *, before: datetime) -> int:
        """Remove rollups whose hour is before ``before`` (and writers silent since then); returns how many rollups went."""

        async def work(conn: asyncpg.Connection) -> int:
            await conn.execute("DELETE FROM access_writers WHERE updated_at < $1", before)
            return _rowcount(await conn.execute("DELETE FROM access_ledger WHERE hour < $1", before))

        return await self._transact("prune the access ledger", work, write=True)

    async def failing_since(self, serial: str) -> Mapping[str, datetime]:
        """When each currently failing check of a device started failing, by check name."""

        async def work(conn: asyncpg.Connection) -> Mapping[str, datetime]:
            rows = await conn.fetch("SELECT check_name, since FROM failing_since WHERE serial = $1", serial)
            return {check: since for check, since in rows}

        return await self._transact(f"read the failing checks of `{serial}`", work, write=False)

    async def load_failing_since(self, serials: Sequence[str] | None = None) -> Mapping[str, Mapping[str, datetime]]:
        """Failing-since of many devices at once (all devices when ``serials`` is None), by serial then check."""

        async def work(conn: asyncpg.Connection) -> Mapping[str, Mapping[str, datetime]]:
            if serials is None:
                rows = await conn.fetch("SELECT serial, check_name, since FROM failing_since")
            else:
                rows = await conn.fetch(
                    "SELECT serial, check_name, since FROM failing_since WHERE serial = ANY($1::text[])", list(serials)
                )
            out: dict[str, dict[str, datetime]] = {}
            for serial, check, since in rows:
                out.setdefault(serial, {})[sys.intern(check)] = since
            return out

        return await self._transact("read the failing checks of many devices", work, write=False)

    async def set_failing_since(self, serial: str, check: str, since: datetime | None) -> None:
        """Set (or clear, with None) when a device's check started failing."""

        async def work(conn: asyncpg.Connection) -> None:
            if since is None:
                await conn.execute("DELETE FROM failing_since WHERE serial = $1 AND check_name = $2", serial, check)
            else:
                await conn.execute(
                    "INSERT INTO failing_since (serial, check_name, since) VALUES ($1, $2, $3)"
                    " ON CONFLICT (serial, check_name) DO UPDATE SET since = excluded.since",
                    serial, check, since,
                )

        await self._transact(f"set when `{check}` of `{serial}` started failing", work, write=True)

    # -- distributed queries -----------------------------------------------------------------

    async def add_pending_queries(self, queries: Sequence[PendingQuery]) -> None:
        """Queue queries for their devices; a query_id already queued is replaced."""
        params = [(q.query_id, q.serial, q.query_name, q.sql, q.created_at) for q in queries]
        if not params:
            return

        async def work(conn: asyncpg.Connection) -> None:
            await conn.executemany(
                "INSERT INTO pending_queries (query_id, serial, query_name, sql, created_at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (query_id) DO UPDATE SET serial = excluded.serial,"
                " query_name = excluded.query_name, sql = excluded.sql, created_at = excluded.created_at",
                params,
            )

        await self._transact(f"queue {_count(len(params), 'distributed query', 'distributed queries')}", work, write=True)

    async def pending_queries(self, serial: str) -> tuple[PendingQuery, ...]:
        """Queries queued for a device and not yet answered, oldest first."""

        async def work(conn: asyncpg.Connection) -> tuple[PendingQuery, ...]:
            rows = await conn.fetch(
                "SELECT query_id, query_name, sql, created_at FROM pending_queries WHERE serial = $1"
                " ORDER BY created_at, query_id",
                serial,
            )
            return tuple(PendingQuery(qid, serial, name, sql, at) for qid, name, sql, at in rows)

        return await self._transact(f"read the pending queries of `{serial}`", work, write=False)

    async def complete_pending_queries(self, serial: str, query_ids: Sequence[str]) -> None:
        """Forget queries the agent answered (unknown ids are ignored)."""
        ids = list(query_ids)
        if not ids:
            return

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "DELETE FROM pending_queries WHERE serial = $1 AND query_id = ANY($2::text[])", serial, ids
            )

        await self._transact(f"complete the pending queries of `{serial}`", work, write=True)

    # -- owner inventory ---------------------------------------------------------------------

    async def edit_owners(self, edits: Sequence[OwnerEdit]) -> tuple[OwnerRecord, ...]:
        """Apply the edits in one transaction, in order; returns each edited serial's record after its edit."""
        if not edits:
            return ()

        async def work(conn: asyncpg.Connection) -> tuple[OwnerRecord, ...]:
            # INVARIANT: the counter row lock serialises inventory writers (seqs commit in order) and
            # makes each read-modify-write of a serial's list atomic.
            seq: int = await conn.fetchval("SELECT value FROM counters WHERE name = 'owner_seq' FOR UPDATE")
            start = seq
            rows = await conn.fetch(_OWNER_SELECT + " WHERE serial = ANY($1::text[])", list({e.serial for e in edits}))
            held: dict[str, OwnerRecord] = {r.serial: r for r in map(_owner_record, rows)}
            out: list[OwnerRecord] = []
            for edit in edits:
                record = held.get(edit.serial)
                current = record.owners if record is not None else ()
                owners = edited_owners(current, edit)
                if record is not None and owners == current:
                    out.append(record)
                    continue
                if record is None and not owners:
                    out.append(OwnerRecord(edit.serial, (), edit.set_by, edit.set_at, edit.source))
                    continue
                seq += 1
                await conn.execute(
                    "INSERT INTO device_owners (serial, owners, set_by, set_at, source, seq) VALUES ($1, $2, $3, $4, $5, $6)"
                    " ON CONFLICT (serial) DO UPDATE SET owners = excluded.owners, set_by = excluded.set_by,"
                    " set_at = excluded.set_at, source = excluded.source, seq = excluded.seq",
                    edit.serial, orjson.dumps(list(owners)).decode(), edit.set_by, edit.set_at, edit.source.value, seq,
                )
                held[edit.serial] = OwnerRecord(edit.serial, owners, edit.set_by, edit.set_at, edit.source)
                out.append(held[edit.serial])
            if seq != start:
                await conn.execute("UPDATE counters SET value = $1 WHERE name = 'owner_seq'", seq)
                await _notify(conn, self.channel, ChangeKind.OWNERS, seq)
            return tuple(out)

        return await self._transact(f"change the owners of {_count(len(edits), 'device')}", work, write=True)

    async def owners(self, serial: str) -> OwnerRecord | None:
        """The serial's inventory entry; None when it has none (never assigned, or unassigned)."""

        async def work(conn: asyncpg.Connection) -> asyncpg.Record | None:
            return await conn.fetchrow(_OWNER_SELECT + " WHERE serial = $1", serial)

        row = await self._transact(f"read the owners of `{serial}`", work, write=False)
        record = None if row is None else _owner_record(row)
        return record if record is not None and record.owners else None

    async def load_owners(self) -> OwnerChanges:
        """Every serial with owners (no tombstones), with the cursor to follow changes from."""

        async def work(conn: asyncpg.Connection) -> tuple[int, list[asyncpg.Record]]:
            cursor = await conn.fetchval("SELECT value FROM counters WHERE name = 'owner_seq'")
            return cursor, await conn.fetch(_OWNER_SELECT + " ORDER BY seq")

        cursor, rows = await self._transact("load the owner inventory", work, write=False, snapshot=True)
        return RecordFeed(tuple(r for r in map(_owner_record, rows) if r.owners), cursor)

    async def owner_changes_since(self, cursor: int, *, limit: int = 10_000) -> OwnerChanges:
        """Owner records changed after ``cursor`` (at most ``limit``, tombstones included), oldest first."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(  # type: ignore[no-any-return]
                _OWNER_SELECT + " WHERE seq > $1 ORDER BY seq LIMIT $2", cursor, limit + 1
            )

        rows = await self._transact(f"read owner changes after {cursor}", work, write=False)
        more = len(rows) > limit
        rows = rows[:limit]
        new_cursor = rows[-1]["seq"] if rows else cursor
        return RecordFeed(tuple(map(_owner_record, rows)), new_cursor, more)

    # -- pull connectors ---------------------------------------------------------------------

    async def claim_connector(self, name: str, holder: str, *, now: datetime, lease_s: float) -> ConnectorClaim:
        """Take (or renew) the connector's lease when it is free, lapsed or already ``holder``'s; always returns the state.

        The conditional UPDATE on the row is atomic: of replicas claiming at once, one wins.
        """
        until = now + timedelta(seconds=lease_s)

        async def work(conn: asyncpg.Connection) -> tuple[str, asyncpg.Record]:
            await conn.execute(
                "INSERT INTO connector_state (name, holder, lease_until, cursor, last_success_at)"
                " VALUES ($1, '', NULL, '', NULL) ON CONFLICT (name) DO NOTHING", name
            )
            status = await conn.execute(
                "UPDATE connector_state SET holder = $2, lease_until = $3 WHERE name = $1"
                " AND (holder = $2 OR lease_until IS NULL OR lease_until <= $4)", name, holder, until, now
            )
            return status, await conn.fetchrow(_CONNECTOR_SELECT, name)

        status, row = await self._transact(f"claim the connector `{name}`", work, write=True)
        return ConnectorClaim(_connector_state(row), held=_rowcount(status) == 1)

    async def save_connector_state(
        self, name: str, holder: str, *, cursor: str, last_success_at: datetime | None, now: datetime, lease_s: float
    ) -> bool:
        """Record the sync position and renew the lease; False (nothing written) when ``holder`` lost the lease."""
        until = now + timedelta(seconds=lease_s)

        async def work(conn: asyncpg.Connection) -> str:
            return await conn.execute(  # type: ignore[no-any-return]
                "UPDATE connector_state SET cursor = $3, last_success_at = $4, lease_until = $5 WHERE name = $1 AND holder = $2",
                name, holder, cursor, last_success_at, until,
            )

        return _rowcount(await self._transact(f"save the state of the connector `{name}`", work, write=True)) == 1

    # -- device certificates -----------------------------------------------------------------

    async def _take_certificate_seqs(self, conn: asyncpg.Connection, count: int) -> int:
        """Reserve ``count`` certificate seqs (the counter row stays locked until commit); returns the first."""
        # INVARIANT: the row lock serialises certificate writers, so seqs become visible in commit order.
        last: int = await conn.fetchval(
            "UPDATE counters SET value = value + $1 WHERE name = 'certificate_seq' RETURNING value", count,
        )
        return last - count + 1

    async def record_certificate(self, cert: CertificateRecord) -> None:
        """Keep a newly issued certificate (a fingerprint already recorded is left as it is)."""

        async def work(conn: asyncpg.Connection) -> None:
            seq: int = await conn.fetchval("SELECT value FROM counters WHERE name = 'certificate_seq' FOR UPDATE")
            if await conn.fetchval("SELECT 1 FROM device_certificates WHERE fingerprint = $1", cert.fingerprint):
                return
            seq += 1
            await conn.execute(
                "INSERT INTO device_certificates (fingerprint, serial, owner, not_before, not_after, issued_at, revoked_at,"
                " revoked_by, seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                cert.fingerprint, cert.serial, cert.owner, cert.not_before, cert.not_after, cert.issued_at, cert.revoked_at,
                cert.revoked_by, seq,
            )
            await conn.execute("UPDATE counters SET value = $1 WHERE name = 'certificate_seq'", seq)
            await _notify(conn, self.channel, ChangeKind.CERTIFICATES, seq)

        await self._transact(f"record the certificate of `{cert.serial}`", work, write=True)

    async def revoke_certificate(self, fingerprint: str, *, at: datetime, by: str) -> CertificateRecord | None:
        """Revoke one certificate; returns its record (unchanged when it was revoked already), None when unknown."""

        async def work(conn: asyncpg.Connection) -> CertificateRecord | None:
            row = await conn.fetchrow(_CERT_SELECT + " WHERE fingerprint = $1 FOR UPDATE", fingerprint)
            if row is None:
                return None
            if row["revoked_at"] is not None:
                return _certificate_record(row)
            seq = await self._take_certificate_seqs(conn, 1)
            row = await conn.fetchrow(
                "UPDATE device_certificates SET revoked_at = $2, revoked_by = $3, seq = $4 WHERE fingerprint = $1"
                " RETURNING fingerprint, serial, owner, not_before, not_after, issued_at, revoked_at, revoked_by, seq",
                fingerprint, at, by, seq,
            )
            await _notify(conn, self.channel, ChangeKind.CERTIFICATES, seq)
            return _certificate_record(row)

        return await self._transact(f"revoke the certificate `{fingerprint[:16]}`", work, write=True)

    async def revoke_certificates_of(self, serial: str, *, at: datetime, by: str) -> tuple[CertificateRecord, ...]:
        """Revoke every unrevoked certificate naming ``serial``; returns those it revoked."""

        async def work(conn: asyncpg.Connection) -> tuple[CertificateRecord, ...]:
            rows = await conn.fetch(
                _CERT_SELECT + " WHERE serial = $1 AND revoked_at IS NULL ORDER BY issued_at, seq FOR UPDATE", serial,
            )
            if not rows:
                return ()
            first = await self._take_certificate_seqs(conn, len(rows))
            out = []
            for offset, row in enumerate(rows):
                updated = await conn.fetchrow(
                    "UPDATE device_certificates SET revoked_at = $2, revoked_by = $3, seq = $4 WHERE fingerprint = $1"
                    " RETURNING fingerprint, serial, owner, not_before, not_after, issued_at, revoked_at, revoked_by, seq",
                    row["fingerprint"], at, by, first + offset,
                )
                out.append(_certificate_record(updated))
            await _notify(conn, self.channel, ChangeKind.CERTIFICATES, first + len(rows) - 1)
            return tuple(out)

        return await self._transact(f"revoke the certificates of `{serial}`", work, write=True)

    async def certificates_of(self, serial: str) -> tuple[CertificateRecord, ...]:
        """Every certificate recorded for a serial, revoked and expired ones included, oldest issued first."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(_CERT_SELECT + " WHERE serial = $1 ORDER BY issued_at, seq", serial)  # type: ignore[no-any-return]

        return tuple(map(_certificate_record, await self._transact(f"read the certificates of `{serial}`", work, write=False)))

    async def load_certificates(self) -> CertificateChanges:
        """Every recorded certificate, with the cursor to follow changes from."""

        async def work(conn: asyncpg.Connection) -> tuple[int, list[asyncpg.Record]]:
            cursor = await conn.fetchval("SELECT value FROM counters WHERE name = 'certificate_seq'")
            return cursor, await conn.fetch(_CERT_SELECT + " ORDER BY seq")

        cursor, rows = await self._transact("load the device certificates", work, write=False, snapshot=True)
        return RecordFeed(tuple(map(_certificate_record, rows)), cursor)

    async def certificate_changes_since(self, cursor: int, *, limit: int = 10_000) -> CertificateChanges:
        """Certificates recorded or revoked after ``cursor`` (at most ``limit``), oldest change first."""

        async def work(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            return await conn.fetch(_CERT_SELECT + " WHERE seq > $1 ORDER BY seq LIMIT $2", cursor, limit + 1)  # type: ignore[no-any-return]

        rows = await self._transact(f"read certificate changes after {cursor}", work, write=False)
        more = len(rows) > limit
        rows = rows[:limit]
        return RecordFeed(tuple(map(_certificate_record, rows)), rows[-1]["seq"] if rows else cursor, more)


_CONNECTOR_SELECT = "SELECT name, holder, lease_until, cursor, last_success_at FROM connector_state WHERE name = $1"


def _connector_state(row: asyncpg.Record) -> ConnectorState:
    return ConnectorState(row["name"], row["holder"], row["lease_until"], row["cursor"], row["last_success_at"])


_CERT_SELECT = (
    "SELECT fingerprint, serial, owner, not_before, not_after, issued_at, revoked_at, revoked_by, seq FROM device_certificates"
)


def _certificate_record(row: asyncpg.Record) -> CertificateRecord:
    return CertificateRecord(
        row["fingerprint"], row["serial"], row["owner"], row["not_before"], row["not_after"], row["issued_at"], row["revoked_at"],
        row["revoked_by"],
    )


_OWNER_SELECT = "SELECT serial, owners, set_by, set_at, source, seq FROM device_owners"


def _owner_record(row: asyncpg.Record) -> OwnerRecord:
    return OwnerRecord(row["serial"], tuple(orjson.loads(row["owners"])), row["set_by"], row["set_at"], OwnerSource(row["source"]))


class PostgresAuditSink:
    """The break-glass ``AuditSink`` on a PostgresStore's pool: one shared chain for every replica.

    ``append`` locks the head row (``SELECT ... FOR UPDATE``), compares, inserts the entries (the
    primary key on ``seq`` forbids a fork even without the lock), moves the head and sends an
    ``audit`` notice, all in one transaction. Storage failures raise ``StoreError``.
    """

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        """Durably store ``entries`` after the current head, all or nothing.

        Raises:
            AuditConflict: the head is not the one ``entries[0]`` follows; nothing was written.
            ValueError: the batch is empty or not a sealed chain.
            StoreError: the database failed or is unreachable.
        """
        if not entries:
            raise ValueError("an empty batch cannot be appended; pass at least one entry")
        rows = [(e.seq, e.prev_hash, e.hash, encode_entry(e).decode()) for e in entries]
        last = entries[-1]

        async def work(conn: asyncpg.Connection) -> None:
            row = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            check_batch(entries, ChainHead(seq=row[0], hash=row[1]))
            await conn.executemany(
                "INSERT INTO audit_entries (seq, prev_hash, hash, body) VALUES ($1, $2, $3, $4)", rows
            )
            await conn.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", last.seq, last.hash)
            await _notify(conn, self._store.channel, ChangeKind.AUDIT, last.seq)

        what = f"append audit {_count(len(entries), 'entry', 'entries')} from {entries[0].seq}"
        await self._store._transact(what, work, write=True)

    async def entries(self, *, after_seq: int = 0) -> Sequence[AuditEntry]:
        """Every stored entry with ``seq > after_seq``, in ascending order, unmodified."""

        async def work(conn: asyncpg.Connection) -> list[str]:
            rows = await conn.fetch("SELECT body FROM audit_entries WHERE seq > $1 ORDER BY seq", after_seq)
            return [row[0] for row in rows]

        bodies = await self._store._transact("read the audit log", work, write=False)
        return tuple(decode_entry(body) for body in bodies)

    async def head(self) -> ChainHead:
        """The stored head; ``GENESIS_HEAD`` for an empty log."""

        async def work(conn: asyncpg.Connection) -> ChainHead:
            row = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
            return ChainHead(seq=row[0], hash=row[1])

        return await self._store._transact("read the audit head", work, write=False)

    async def snapshot(self) -> tuple[ChainHead, tuple[AuditEntry, ...]]:
        """The head and every entry, read in one snapshot (what ``verify`` needs)."""

        async def work(conn: asyncpg.Connection) -> tuple[ChainHead, list[str]]:
            row = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
            rows = await conn.fetch("SELECT body FROM audit_entries ORDER BY seq")
            return ChainHead(seq=row[0], hash=row[1]), [r[0] for r in rows]

        head, bodies = await self._store._transact("read the audit log", work, write=False, snapshot=True)
        return head, tuple(decode_entry(body) for body in bodies)


async def _notify(conn: asyncpg.Connection, channel: str, kind: ChangeKind, seq: int) -> None:
    payload = orjson.dumps({"kind": kind.value, "seq": seq}).decode()
    await conn.execute("SELECT pg_notify($1, $2)", channel, payload)


async def _migrate(conn: asyncpg.Connection) -> None:
    # INVARIANT: the lock is held until this transaction ends, so replicas migrate one at a time.
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
    if await conn.fetchval("SELECT to_regclass('gatehouse_schema_migrations')") is None:
        await conn.execute(
            "CREATE TABLE gatehouse_schema_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM gatehouse_schema_migrations")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the PostgreSQL store has schema version {version}, newer than this Gatehouse knows"
            f" ({SCHEMA_VERSION}); upgrade Gatehouse or point `store` at another database"
        )
    for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in statements:
            await conn.execute(statement)
        await conn.execute("INSERT INTO gatehouse_schema_migrations (version) VALUES ($1)", number)
        _log.info("store.migrated", version=number)


def _details_dict(details: HostDetails) -> dict[str, str]:
    return {name: getattr(details, name) for name in HostDetails.__dataclass_fields__}


def _lock_key(text: str) -> int:
    """A stable signed 32-bit key for pg_advisory_xact_lock(int, int)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big", signed=True)


def _rowcount(status: str) -> int:
    """The row count at the end of a command tag such as ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return f"{name}: {text}" if text else name
