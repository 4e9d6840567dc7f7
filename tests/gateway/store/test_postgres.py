"""What only the PostgreSQL store does: replicas migrating at once, change notices, commit-ordered seqs, outages."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest


from breakglass import AuditConflict, AuditWriteError, BreakglassService, seal, verify
from gateway.store import HostDetails, PutOutcome, StoreError, open_store
from gateway.store.base import ChangeKind, ChangeNotice
from gateway.store.postgres import (
    SCHEMA_VERSION,
    PostgresStore,
    describe_dsn,
    open_postgres_store,
)
from gateway.store.sqlite import SqliteStore
from tests.breakglass.factories import ALLOWED, NOW, make_chain, make_config, make_event, make_request
from tests.conftest import free_port
from tests.gateway.store.snapshots import T0, make_snapshot
from tests.pgcluster import Cluster

pytestmark = pytest.mark.postgres


async def _eventually(condition: Callable[[], bool], *, within_s: float, step_s: float = 0.02) -> float:
    """Wait until ``condition()`` is true; returns how long it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not true within {within_s} s")
        await asyncio.sleep(step_s)
    return time.monotonic() - started


class TestMigrations:
    async def test_replicas_starting_together_migrate_once(self, postgres_dsn: str) -> None:
        """Six stores opened at once on an empty database all start; each version is applied once."""
        stores = await asyncio.gather(*(open_postgres_store(postgres_dsn, max_connections=2) for _ in range(6)))
        try:
            conn = await asyncpg.connect(postgres_dsn)
            versions = [r[0] for r in await conn.fetch("SELECT version FROM gatehouse_schema_migrations ORDER BY 1")]
            await conn.close()

            assert list(range(1, SCHEMA_VERSION + 1)) == versions
            assert (PutOutcome.STORED,) == await stores[3].put_snapshots([make_snapshot()])
        finally:
            for store in stores:
                await store.close()

    async def test_a_newer_schema_is_refused(self, postgres_dsn: str) -> None:
        """A database migrated by a newer Gatehouse is not touched; the error says what to do."""
        store = await open_postgres_store(postgres_dsn)
        await store.close()
        conn = await asyncpg.connect(postgres_dsn)
        await conn.execute("INSERT INTO gatehouse_schema_migrations (version) VALUES (99)")
        await conn.close()

        with pytest.raises(StoreError, match="schema version 99, newer than this Gatehouse"):
            await open_postgres_store(postgres_dsn)

    async def test_impossible_options_are_refused(self, postgres_dsn: str) -> None:
        """A pool of zero connections or a channel that is not an identifier is a ValueError."""
        with pytest.raises(ValueError, match="pool size"):
            await open_postgres_store(postgres_dsn, min_connections=0)
        with pytest.raises(ValueError, match="channel"):
            await open_postgres_store(postgres_dsn, channel="a; DROP TABLE x")


class TestChangeNotices:
    async def test_a_snapshot_stored_on_one_replica_is_announced_on_another_within_a_second(
        self, postgres_dsn: str
    ) -> None:
        """Replica B hears of A's snapshot in well under a second and then finds it in changes_since."""
        replica_a, replica_b = await open_postgres_store(postgres_dsn), await open_postgres_store(postgres_dsn)
        heard: list[ChangeNotice] = []
        unsubscribe = replica_b.subscribe(heard.append)
        try:
            await _eventually(lambda: replica_b.listening, within_s=5)
            cursor = (await replica_b.load_latest()).cursor

            await replica_a.put_snapshots([make_snapshot("S1"), make_snapshot("S2")])
            latency = await _eventually(lambda: ChangeNotice(ChangeKind.SNAPSHOT, 2) in heard, within_s=1)
            changes = await replica_b.changes_since(cursor)

            assert latency < 1
            assert ChangeNotice(ChangeKind.RESYNC, 0) == heard[0]
            assert ["S1", "S2"] == [s.serial for s in changes.snapshots]
        finally:
            unsubscribe()
            await replica_a.close()
            await replica_b.close()

    async def test_audit_appends_are_announced_and_refused_ones_are_not(self, postgres_dsn: str) -> None:
        """An appended audit batch is announced with its head seq; a conflicting or duplicate write announces nothing."""
        replica_a, replica_b = await open_postgres_store(postgres_dsn), await open_postgres_store(postgres_dsn)
        heard: list[ChangeNotice] = []
        unsubscribe = replica_b.subscribe(heard.append)
        try:
            await _eventually(lambda: replica_b.listening, within_s=5)
            chain = make_chain(3)
            await (await replica_a.audit_sink()).append(chain[:2])
            with pytest.raises(AuditConflict):
                await (await replica_a.audit_sink()).append(chain[:1])
            await replica_a.put_snapshots([make_snapshot()])
            await replica_a.put_snapshots([make_snapshot()])
            await (await replica_a.audit_sink()).append(chain[2:])

            await _eventually(lambda: ChangeNotice(ChangeKind.AUDIT, 3) in heard, within_s=1)

            assert [
                ChangeNotice(ChangeKind.RESYNC, 0),
                ChangeNotice(ChangeKind.AUDIT, 2),
                ChangeNotice(ChangeKind.SNAPSHOT, 1),
                ChangeNotice(ChangeKind.AUDIT, 3),
            ] == heard
        finally:
            unsubscribe()
            await replica_a.close()
            await replica_b.close()

    async def test_unsubscribing_stops_the_listener(self, postgres_dsn: str) -> None:
        """After the last unsubscribe no callback runs and the listening connection is closed."""
        store = await open_postgres_store(postgres_dsn)
        heard: list[ChangeNotice] = []
        unsubscribe = store.subscribe(heard.append)
        await _eventually(lambda: store.listening, within_s=5)

        unsubscribe()
        await _eventually(lambda: not store.listening, within_s=2)
        await store.put_snapshots([make_snapshot()])
        await asyncio.sleep(0.2)
        await store.close()

        assert [ChangeNotice(ChangeKind.RESYNC, 0)] == heard


class TestReplicasWritingAtOnce:
    async def test_a_follower_of_the_change_feed_misses_nothing_while_replicas_write(self, postgres_dsn: str) -> None:
        """Snapshot seqs become visible in commit order, so a follower polling during racing writes ends complete."""
        writers = [await open_postgres_store(postgres_dsn, max_connections=4) for _ in range(2)]
        follower = await open_postgres_store(postgres_dsn)
        held: dict[str, object] = {}
        cursor = 0
        done = False

        async def write(store: PostgresStore, tag: str) -> None:
            await asyncio.gather(*(
                store.put_snapshots([make_snapshot(f"{tag}-{task}-{i}") for i in range(3)]) for task in range(30)
            ))

        async def follow() -> None:
            nonlocal cursor
            while True:
                finished = done
                changes = await follower.changes_since(cursor, limit=7)
                held.update((s.serial, s) for s in changes.snapshots)
                cursor = changes.cursor
                if finished and not changes.more:
                    return

        following = asyncio.create_task(follow())
        try:
            await asyncio.gather(write(writers[0], "a"), write(writers[1], "b"))
            done = True
            await following
            everything = await follower.load_latest()

            assert 180 == len(everything.snapshots) == len(held)
            assert everything.cursor == cursor
        finally:
            following.cancel()
            for store in (*writers, follower):
                await store.close()

    async def test_enrolling_one_device_on_two_replicas_leaves_one_active_key(self, postgres_dsn: str) -> None:
        """Concurrent enrollments of one serial end with exactly one active node key."""
        replicas = [await open_postgres_store(postgres_dsn) for _ in range(2)]
        try:
            await asyncio.gather(*(
                replica.create_enrollment(node_key=f"nk-{i}-{n}", serial="SER", host_identifier="h",
                                          details=HostDetails(), now=T0 + timedelta(seconds=n))
                for n in range(10) for i, replica in enumerate(replicas)
            ))

            found = [await replicas[0].enrollment_by_node_key(f"nk-{i}-{n}") for n in range(10) for i in range(2)]

            assert 1 == sum(e.active for e in found if e is not None)
        finally:
            for replica in replicas:
                await replica.close()


class TestUnreachable:
    async def test_opening_an_unreachable_database_fails_fast_without_the_password(self) -> None:
        """Nothing listening: open raises StoreError within the connect timeout, naming host and port, not the secret."""
        port = free_port()
        started = time.monotonic()

        with pytest.raises(StoreError) as raised:
            await open_postgres_store(f"postgresql://gatehouse:s3cret@127.0.0.1:{port}/gh", connect_timeout_s=1)

        assert time.monotonic() - started < 3
        assert f"`127.0.0.1:{port}/gh`" in str(raised.value)
        assert "s3cret" not in str(raised.value)

    def test_describe_dsn_keeps_only_where(self) -> None:
        """describe_dsn shows host, port and database, never credentials."""
        assert "db.internal:6432/gatehouse" == describe_dsn("postgresql://u:pw@db.internal:6432/gatehouse?sslmode=require")


# --- a cluster of the test's own, to stop and start -----------------------------------------------


@pytest.fixture
def cluster(own_postgres: Cluster) -> Cluster:
    return own_postgres


class TestOutage:
    async def test_writes_fail_fast_and_clearly_while_down_and_recover_with_nothing_lost(self, cluster: Cluster) -> None:
        """Database killed: writes and reads raise StoreError in well under the timeouts' sum, a grant is
        refused; database back: the same pool and listener recover by themselves and every write acknowledged
        before the outage is there."""
        store = await open_postgres_store(cluster.dsn, max_connections=4, connect_timeout_s=1.0, command_timeout_s=2.0)
        heard: list[ChangeNotice] = []
        unsubscribe = store.subscribe(heard.append)
        service = await BreakglassService.open(await store.audit_sink(), config=make_config())
        try:
            acknowledged = [make_snapshot(f"SER{i}", minutes=i) for i in range(10)]
            await store.put_snapshots(acknowledged)
            granted = await service.request(make_request(), rule=ALLOWED, now=NOW)
            await store.create_enrollment(node_key="nk", serial="SER1", host_identifier="h", details=HostDetails(), now=T0)
            await _eventually(lambda: store.listening, within_s=5)

            cluster.stop("immediate")
            started = time.monotonic()
            with pytest.raises(StoreError) as write_error:
                await store.put_snapshots([make_snapshot("DURING", minutes=1)])
            write_s = time.monotonic() - started
            with pytest.raises(StoreError):
                await store.latest("SER1")
            with pytest.raises(AuditWriteError):
                await service.request(make_request(user="bob"), rule=ALLOWED, now=NOW)
            with pytest.raises(StoreError):
                await (await store.audit_sink()).append(seal([make_event(grant_id="x")], head=service.head))
            healthy_while_down = await store.health(timeout_s=0.5)
            await _eventually(lambda: not store.listening, within_s=2)

            assert write_s < 1.5
            message = str(write_error.value)
            assert "could not store 1 snapshot" in message and "is unreachable" in message
            assert "nothing was stored" in message and "works again by itself once the database is back" in message
            assert False is healthy_while_down
            assert 1 == len(service.list_grants(now=NOW))

            resyncs_before = heard.count(ChangeNotice(ChangeKind.RESYNC, 0))
            cluster.start()
            await _eventually(lambda: store.listening, within_s=5)
            assert True is await store.health(timeout_s=2)

            after = await store.put_snapshots([make_snapshot("AFTER")])
            again = await service.request(make_request(user="carol"), rule=ALLOWED, now=NOW)
            head, entries = await (await store.audit_sink()).snapshot()

            assert (PutOutcome.STORED,) == after
            assert acknowledged == [await store.latest(s.serial) for s in acknowledged]
            assert None is await store.latest("DURING")
            assert "SER1" == (await store.enrollment_by_node_key("nk")).serial  # type: ignore[union-attr]
            assert True is verify(entries, expected_head=head).ok
            assert {granted.id, again.id} == {e.event.grant_id for e in entries}
            assert heard.count(ChangeNotice(ChangeKind.RESYNC, 0)) > resyncs_before
            await _eventually(lambda: ChangeNotice(ChangeKind.SNAPSHOT, 11) in heard, within_s=1)
        finally:
            unsubscribe()
            await store.close()


class TestBoundedWaits:
    async def test_a_server_that_never_answers_fails_open_within_the_connect_timeout(self) -> None:
        """A peer that accepts TCP but says nothing cannot make open hang."""
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        started = time.monotonic()
        try:
            with pytest.raises(StoreError, match="cannot open the PostgreSQL store"):
                await open_postgres_store(f"postgresql://postgres@127.0.0.1:{port}/x", connect_timeout_s=0.5)
        finally:
            server.close()
            await server.wait_closed()

        assert time.monotonic() - started < 2.5

    async def test_a_write_stuck_behind_a_lock_gives_up_after_the_command_timeout(self, postgres_dsn: str) -> None:
        """A write that cannot get its lock fails with StoreError after command_timeout_s, not never."""
        store = await open_postgres_store(postgres_dsn, command_timeout_s=0.5)
        blocker = await asyncpg.connect(postgres_dsn)
        blocking = blocker.transaction()
        await blocking.start()
        await blocker.execute("LOCK TABLE counters IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        try:
            with pytest.raises(StoreError, match="did not answer in time; nothing was stored"):
                await store.put_snapshots([make_snapshot()])
            elapsed = time.monotonic() - started
            await blocking.rollback()

            assert 0.4 < elapsed < 2
            assert (PutOutcome.STORED,) == await store.put_snapshots([make_snapshot()])
        finally:
            await blocker.close()
            await store.close()


class TestOpenStore:
    async def test_open_store_opens_postgresql_dsns(self, postgres_dsn: str) -> None:
        """The configured `store: postgresql://...` DSN opens this backend through open_store."""
        store = await open_store(postgres_dsn)
        try:
            assert (True, True) == (isinstance(store, PostgresStore), await store.health())
        finally:
            await store.close()


class TestSameAsSqlite:
    async def test_random_batches_give_sqlites_outcomes_feed_and_cursors(self, postgres_dsn: str, tmp_path: Path) -> None:
        """The same random batches (repeats, older, same-batch updates, microsecond steps) give identical answers on both backends."""
        rng = random.Random(8)
        batches = [
            [
                make_snapshot(f"S{rng.randrange(12)}", minutes=rng.randrange(6) + rng.choice((0, 1e-8)))
                for _ in range(rng.randrange(0, 9))
            ]
            for _ in range(40)
        ]
        reference = await SqliteStore.open(tmp_path / "reference.db")
        store = await open_postgres_store(postgres_dsn)
        try:
            for batch in batches:
                expected_outcomes = await reference.put_snapshots(batch)
                cursor = rng.randrange(0, 30)
                expected_feed = await reference.changes_since(cursor, limit=5)

                assert expected_outcomes == await store.put_snapshots(batch)
                assert expected_feed == await store.changes_since(cursor, limit=5)

            expected_all, actual_all = await reference.load_latest(), await store.load_latest()
            assert expected_all.cursor == actual_all.cursor
            assert sorted(expected_all.snapshots, key=lambda s: s.serial) == sorted(actual_all.snapshots, key=lambda s: s.serial)
        finally:
            await reference.close()
            await store.close()
