"""The AuditSink contract on every sink (in memory, SQLite, PostgreSQL), and racing writers on shared storage."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from itertools import count
from pathlib import Path

import asyncpg
import pytest

from breakglass import (
    GENESIS_HEAD,
    AuditConflict,
    AuditSink,
    BreakglassService,
    InMemoryAuditSink,
    TamperKind,
    seal,
    verify,
    verify_sink,
)
from gateway.store.postgres import PostgresAuditSink, PostgresStore, open_postgres_store
from gateway.store.sqlite import SCHEMA_VERSION, SqliteStore
from gateway.store.sqlite_audit import SqliteAuditSink
from tests.breakglass.factories import ALLOWED, NOW, make_chain, make_config, make_event, make_request
from tests.breakglass.sink_contract import AuditSinkContract

REPO = Path(__file__).resolve().parents[3]


class TestInMemorySinkContract(AuditSinkContract):
    @pytest.fixture
    def sink(self) -> InMemoryAuditSink:
        return InMemoryAuditSink()


class TestSqliteSinkContract(AuditSinkContract):
    @pytest.fixture
    async def sink(self, tmp_path: Path) -> AsyncIterator[SqliteAuditSink]:
        opened = await SqliteAuditSink.open(tmp_path / "gatehouse.db")
        yield opened
        await opened.close()


@pytest.mark.postgres
class TestPostgresSinkContract(AuditSinkContract):
    @pytest.fixture
    async def sink(self, postgres_dsn: str) -> AsyncIterator[PostgresAuditSink]:
        store = await open_postgres_store(postgres_dsn, max_connections=4)
        yield await store.audit_sink()
        await store.close()


@dataclass(frozen=True)
class Shared:
    """Opens independent sinks (own connection or pool each) on one shared log, as replicas do."""

    name: str
    open: Callable[[], Awaitable[tuple[AuditSink, Callable[[], Awaitable[None]]]]]
    tamper: Callable[[str], Awaitable[None]]
    """Run one SQL statement directly against the storage, behind the sink's back."""
    dsn: str = ""
    """The PostgreSQL DSN (empty for SQLite)."""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Shared:
    if request.param == "sqlite":
        path = tmp_path / "gatehouse.db"

        async def open_sqlite() -> tuple[AuditSink, Callable[[], Awaitable[None]]]:
            sink = await SqliteAuditSink.open(path)
            return sink, sink.close

        async def tamper_sqlite(sql: str) -> None:
            with closing(sqlite3.connect(path)) as conn, conn:
                conn.execute(sql)

        return Shared("sqlite", open_sqlite, tamper_sqlite)
    dsn: str = request.getfixturevalue("postgres_dsn")

    async def open_pg() -> tuple[AuditSink, Callable[[], Awaitable[None]]]:
        store = await PostgresStore.open(dsn, max_connections=3)
        return await store.audit_sink(), store.close

    async def tamper_pg(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    return Shared("postgresql", open_pg, tamper_pg, dsn)


async def _append_with_retries(sink: AuditSink, writer: str, n: int) -> int:
    """Append ``n`` single-entry batches as a replica would: on conflict, re-read the head and retry."""
    conflicts = 0
    for i in range(n):
        while True:
            head = await sink.head()
            batch = seal([make_event(grant_id=f"{writer}-{i}", actor=writer)], head=head)
            try:
                await sink.append(batch)
                break
            except AuditConflict:
                conflicts += 1
    return conflicts


class TestSharedLog:
    async def test_a_bad_batch_is_stored_not_at_all(self, shared: Shared) -> None:
        """A batch with a broken link or a wrong hash is refused whole; the head stays put."""
        sink, close = await shared.open()
        try:
            chain = make_chain(3)
            forged = (chain[0], replace(chain[1], hash="f" * 64), chain[2])

            with pytest.raises(ValueError):
                await sink.append(forged)
            with pytest.raises(ValueError):
                await sink.append((chain[0], chain[2]))
            with pytest.raises(ValueError):
                await sink.append(())

            assert (GENESIS_HEAD, ()) == (await sink.head(), tuple(await sink.entries()))
        finally:
            await close()

    async def test_the_log_survives_close_and_reopen(self, shared: Shared) -> None:
        """Entries and head acknowledged before closing are there after reopening."""
        chain = make_chain(4)
        sink, close = await shared.open()
        await sink.append(chain[:3])
        await sink.append(chain[3:])
        await close()

        again, close_again = await shared.open()
        try:
            assert (chain, chain[-1].head) == (tuple(await again.entries()), await again.head())
        finally:
            await close_again()

    async def test_racing_replicas_keep_one_linear_verifiable_chain(self, shared: Shared) -> None:
        """Two sinks with their own connections, four writers each, racing: no fork, no loss, verify passes."""
        (sink_a, close_a), (sink_b, close_b) = await shared.open(), await shared.open()
        try:
            writers = [(sink_a, f"a{i}") for i in range(4)] + [(sink_b, f"b{i}") for i in range(4)]

            conflicts = await asyncio.gather(*(_append_with_retries(sink, name, 10) for sink, name in writers))

            head, entries = await sink_a.head(), tuple(await sink_b.entries())
            assert (80, list(range(1, 81))) == (head.seq, [e.seq for e in entries])
            assert 80 == len({e.event.grant_id for e in entries})
            assert True is verify(entries, expected_head=head).ok
            assert True is (await verify_sink(sink_b)).ok
            assert sum(conflicts) > 0
        finally:
            await close_a()
            await close_b()

    async def test_services_on_two_replicas_see_each_others_grants(self, shared: Shared) -> None:
        """Two BreakglassServices on separate sinks grant concurrently; both end with every grant and a valid chain."""
        (sink_a, close_a), (sink_b, close_b) = await shared.open(), await shared.open()
        try:
            ids_a, ids_b = count(1), count(1)
            service_a = BreakglassService(sink_a, config=make_config(), new_id=lambda: f"ga-{next(ids_a)}")
            service_b = BreakglassService(sink_b, config=make_config(), new_id=lambda: f"gb-{next(ids_b)}")
            requests = [
                service.request(make_request(user=f"user-{tag}{i}"), rule=ALLOWED, now=NOW)
                for service, tag in ((service_a, "a"), (service_b, "b"))
                for i in range(5)
            ]

            grants = await asyncio.gather(*requests)
            await service_a.refresh()
            await service_b.refresh()

            assert 10 == len({g.id for g in grants})
            assert service_a.head == service_b.head == await sink_a.head()
            assert 10 == len(service_a.list_grants(now=NOW)) == len(service_b.list_grants(now=NOW))
            assert True is verify(await sink_b.entries(), expected_head=await sink_b.head()).ok
        finally:
            await close_a()
            await close_b()

    async def test_entries_are_read_back_as_stored_so_tampering_shows(self, shared: Shared) -> None:
        """A body altered or a tail deleted in storage reaches verify unrepaired, which names it."""
        sink, close = await shared.open()
        try:
            await sink.append(make_chain(3))
            await shared.tamper("UPDATE audit_entries SET body = replace(body, 'paged at 3am', 'paged at 4am') WHERE seq = 2")
            await shared.tamper("DELETE FROM audit_entries WHERE seq = 3")

            report = verify(await sink.entries(), expected_head=await sink.head())

            assert {TamperKind.MODIFIED, TamperKind.TRUNCATED} <= report.kinds()
        finally:
            await close()

    async def test_snapshot_reads_head_and_entries_together(self, shared: Shared) -> None:
        """snapshot() returns the head with exactly the entries up to it."""
        sink, close = await shared.open()
        try:
            chain = make_chain(2)
            await sink.append(chain)

            head, entries = await sink.snapshot()  # type: ignore[attr-defined]

            assert (chain[-1].head, chain) == (head, entries)
        finally:
            await close()


_CHILD = """
import asyncio, sys
from breakglass import AuditConflict, seal
from gateway.store.sqlite_audit import SqliteAuditSink
from tests.breakglass.factories import make_event

async def main(path, writer, n):
    sink = await SqliteAuditSink.open(path)
    for i in range(n):
        while True:
            batch = seal([make_event(grant_id=f"{writer}-{i}", actor=writer)], head=await sink.head())
            try:
                await sink.append(batch)
                break
            except AuditConflict:
                pass
    await sink.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


class TestSqliteAcrossProcesses:
    async def test_processes_appending_at_once_keep_the_chain_linear(self, tmp_path: Path) -> None:
        """Three processes append to one SQLite file at once; the chain has every entry and verifies."""
        path = tmp_path / "gatehouse.db"
        store = await SqliteStore.open(path)
        await store.close()
        children = [
            await asyncio.create_subprocess_exec(sys.executable, "-c", _CHILD, str(path), f"p{i}", "15", cwd=REPO)
            for i in range(3)
        ]

        codes = [await child.wait() for child in children]

        sink = await SqliteAuditSink.open(path)
        try:
            head, entries = await sink.snapshot()
            assert ([0, 0, 0], 45) == (codes, head.seq)
            assert True is verify(entries, expected_head=head).ok
        finally:
            await sink.close()

    async def test_the_audit_tables_live_beside_the_store_without_touching_its_schema(self, tmp_path: Path) -> None:
        """Opening the sink on the store's file leaves the store's schema version and data alone."""
        path = tmp_path / "gatehouse.db"
        store = await SqliteStore.open(path)
        await store.close()
        sink = await SqliteAuditSink.open(path)
        await sink.append(make_chain(1))
        await sink.close()

        reopened = await SqliteStore.open(path)
        await reopened.close()

        with closing(sqlite3.connect(path)) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert (SCHEMA_VERSION, "wal") == (version, mode)



_KILLED_CHILD = """
import asyncio, sys
from breakglass import seal
from tests.breakglass.factories import make_event

async def main(kind, target):
    if kind == "sqlite":
        from gateway.store.sqlite_audit import SqliteAuditSink
        sink = await SqliteAuditSink.open(target)
    else:
        from gateway.store.postgres import open_postgres_store
        sink = await (await open_postgres_store(target)).audit_sink()
    i = 0
    while True:
        i += 1
        batch = seal([make_event(grant_id=f"k-{i}"), make_event(grant_id=f"k-{i}-b")], head=await sink.head())
        await sink.append(batch)
        print("ACK", batch[-1].seq, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class TestKillDuringAppends:
    async def test_every_acknowledged_entry_survives_kill_9(self, shared: Shared, tmp_path: Path) -> None:
        """A writer killed with SIGKILL mid-stream loses nothing it was told was stored; the chain still verifies."""
        target = str(tmp_path / "gatehouse.db") if shared.name == "sqlite" else shared.dsn
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _KILLED_CHILD, shared.name, target, cwd=REPO, stdout=asyncio.subprocess.PIPE
        )
        assert child.stdout is not None
        acknowledged = 0
        try:
            while acknowledged < 40:
                line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
                assert line, "the writer stopped before it was killed"
                if line.startswith(b"ACK "):
                    acknowledged = int(line.split()[1])
        finally:
            child.kill()
            await child.wait()

        sink, close = await shared.open()
        try:
            head, entries = await sink.snapshot()  # type: ignore[attr-defined]
            assert head.seq >= acknowledged
            assert list(range(1, head.seq + 1)) == [e.seq for e in entries]
            assert True is verify(entries, expected_head=head).ok
        finally:
            await close()
