"""The SQLite store: outcomes, durability across reopen, change feed, enrollments, history, queries."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import AsyncIterator

import pytest
from structlog.testing import capture_logs

from gateway.store import HistoryEntry, HostDetails, PendingQuery, PutOutcome, QueryResult, Store, StoreError, open_store
from gateway.store.base import ChangeKind, ChangeNotice
from gateway.store.sqlite import SCHEMA_VERSION, SqliteStore, hash_node_key
from tests.gateway.store.snapshots import T0, make_snapshot

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "var" / "gatehouse.db")
    yield opened
    await opened.close()


class TestSnapshots:
    async def test_put_reports_stored_duplicate_and_older(self, store: SqliteStore) -> None:
        """A batch gets one outcome per item: new is stored, same collected_at is a duplicate, earlier is older."""
        first = make_snapshot(minutes=10)

        outcomes = await store.put_snapshots([first, first, make_snapshot(minutes=5), make_snapshot("OTHER1", minutes=1)])

        assert (PutOutcome.STORED, PutOutcome.DUPLICATE, PutOutcome.OLDER, PutOutcome.STORED) == outcomes
        assert first == await store.latest(first.serial)

    async def test_newer_snapshot_replaces_latest(self, store: SqliteStore) -> None:
        """The latest snapshot of a serial is the one with the newest collected_at."""
        await store.put_snapshots([make_snapshot(minutes=1)])
        newer = make_snapshot(minutes=2, disk_encrypted=False)

        assert (PutOutcome.STORED,) == await store.put_snapshots([newer])

        assert newer == await store.latest(newer.serial)

    async def test_every_field_survives_the_round_trip(self, store: SqliteStore) -> None:
        """What is stored reads back equal, including versions' text, None facts and custom facts."""
        snapshot = make_snapshot(os_version=None, custom={}, owners=(), gatekeeper_enabled=False)

        await store.put_snapshots([snapshot, make_snapshot("S2")])

        assert snapshot == await store.latest(snapshot.serial)
        assert "1.5.3" == (await store.latest("S2")).agent_version.text  # type: ignore[union-attr]

    async def test_unknown_serial_has_no_latest(self, store: SqliteStore) -> None:
        """A serial never stored reads as None."""
        assert None is await store.latest("NOPE")

    async def test_data_is_intact_after_close_and_reopen(self, tmp_path: Path) -> None:
        """Closing and reopening the file gives back every snapshot, enrollment and the cursor."""
        path = tmp_path / "g.db"
        first = await open_store(f"sqlite:///{path}")
        snapshots = [make_snapshot(f"SER{i}", minutes=i) for i in range(50)]
        await first.put_snapshots(snapshots)
        await first.create_enrollment(node_key="nk_1", serial="SER1", host_identifier="h", details=HostDetails(), now=T0)
        before = await first.load_latest()
        await first.close()

        second = await open_store(f"sqlite:///{path}")
        after = await second.load_latest()
        enrollment = await second.enrollment_by_node_key("nk_1")
        await second.close()

        assert sorted(snapshots, key=lambda s: s.serial) == sorted(after.snapshots, key=lambda s: s.serial)
        assert before.cursor == after.cursor
        assert "SER1" == enrollment.serial  # type: ignore[union-attr]

    async def test_changes_since_follows_another_instance(self, tmp_path: Path) -> None:
        """A second store on the same file sees what the first one wrote, in order, through its cursor."""
        path = tmp_path / "g.db"
        writer = await SqliteStore.open(path)
        reader = await SqliteStore.open(path)
        start = (await reader.load_latest()).cursor
        await writer.put_snapshots([make_snapshot("A"), make_snapshot("B")])
        await writer.put_snapshots([make_snapshot("A", minutes=1)])

        changes = await reader.changes_since(start)
        nothing = await reader.changes_since(changes.cursor)
        await writer.close()
        await reader.close()

        assert [("B", 0.0), ("A", 60.0)] == [(s.serial, (s.collected_at - T0).total_seconds()) for s in changes.snapshots]
        assert () == nothing.snapshots
        assert changes.cursor == nothing.cursor

    async def test_changes_since_pages_with_limit(self, store: SqliteStore) -> None:
        """A limit cuts the feed into pages, each telling whether more follows."""
        await store.put_snapshots([make_snapshot(f"S{i}") for i in range(5)])

        page = await store.changes_since(0, limit=3)
        rest = await store.changes_since(page.cursor, limit=3)

        assert (3, True, 2, False) == (len(page.snapshots), page.more, len(rest.snapshots), rest.more)

    async def test_empty_batch_stores_nothing(self, store: SqliteStore) -> None:
        """An empty batch is a no-op."""
        assert () == await store.put_snapshots([])

    async def test_wal_and_full_sync_are_set(self, tmp_path: Path) -> None:
        """The file is in WAL mode and the schema is at the current version."""
        store = await SqliteStore.open(tmp_path / "g.db")
        await store.close()

        conn = sqlite3.connect(tmp_path / "g.db")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.close()

        assert ("wal", SCHEMA_VERSION) == (mode, version)

    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A file written by a newer Gatehouse is not touched."""
        conn = sqlite3.connect(tmp_path / "g.db")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.close()

        with pytest.raises(StoreError, match="newer than this Gatehouse knows"):
            await SqliteStore.open(tmp_path / "g.db")

    async def test_closed_store_refuses_calls(self, tmp_path: Path) -> None:
        """After close every call raises StoreError."""
        store = await SqliteStore.open(tmp_path / "g.db")
        await store.close()

        with pytest.raises(StoreError, match="closed"):
            await store.latest("X")

    async def test_sqlite_store_satisfies_the_protocol(self, store: SqliteStore) -> None:
        """The SQLite backend is a Store."""
        assert isinstance(store, Store)


class TestChangeNotices:
    async def test_only_writes_that_change_something_are_announced_at_once_and_locally(self, store: SqliteStore) -> None:
        """Notices come before the write returns, local, one per write that took a seq; none after unsubscribing."""
        await store.put_snapshots([make_snapshot()])
        heard: list[ChangeNotice] = []
        unsubscribe = store.subscribe(heard.append)

        await store.put_snapshots([make_snapshot()])  # a duplicate: nothing changed
        await store.put_snapshots([make_snapshot(minutes=1), make_snapshot("OTHER1")])
        await store.revoke_certificate("f" * 64, at=T0, by="cli:ops")  # unknown: nothing changed
        unsubscribe()
        await store.put_snapshots([make_snapshot(minutes=2)])

        assert [ChangeNotice(ChangeKind.SNAPSHOT, 3, local=True)] == heard

    async def test_a_failing_subscriber_does_not_stop_the_others_or_the_write(self, store: SqliteStore) -> None:
        """A callback that raises is logged; the next one still hears the notice and the write stands."""
        heard: list[ChangeNotice] = []

        def broken(notice: ChangeNotice) -> None:
            raise RuntimeError("boom")

        store.subscribe(broken)
        store.subscribe(heard.append)
        with capture_logs() as logs:
            outcomes = await store.put_snapshots([make_snapshot()])

        assert ((PutOutcome.STORED,), [ChangeKind.SNAPSHOT]) == (outcomes, [n.kind for n in heard])
        assert ["store.change_callback_failed"] == [e["event"] for e in logs]


class TestOpenStore:
    async def test_creates_parent_directories(self, tmp_path: Path) -> None:
        """An absolute sqlite:/// DSN whose directories do not exist yet is created."""
        store = await open_store(f"sqlite:///{tmp_path}/a/b/gatehouse.db")
        await store.close()

        assert (tmp_path / "a" / "b" / "gatehouse.db").exists()

    def test_postgresql_without_asyncpg_names_the_missing_extra(self) -> None:
        """A postgresql:// DSN where asyncpg is not installed says how to install it."""
        script = (
            "import asyncio, sys\n"
            "sys.modules['asyncpg'] = None  # as if `pip install gatehouse[postgres]` had not been run\n"
            "from gateway.store import open_store\n"
            "try:\n"
            "    asyncio.run(open_store('postgresql://gatehouse@db/gatehouse'))\n"
            "except ValueError as exc:\n"
            "    print(exc)\n"
        )

        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)

        assert "pip install gatehouse[postgres]" in done.stdout, done.stderr

    async def test_unknown_scheme_is_refused(self) -> None:
        """Only sqlite and postgresql DSNs are accepted."""
        with pytest.raises(ValueError, match="`mysql` is not supported"):
            await open_store("mysql://x/y")

    async def test_relative_sqlite_path_is_refused(self) -> None:
        """The settings resolve paths; a DSN reaching the store must be absolute."""
        with pytest.raises(ValueError, match="absolute"):
            await open_store("sqlite:///")


class TestEnrollments:
    async def test_node_key_is_stored_only_as_a_hash(self, store: SqliteStore, tmp_path: Path) -> None:
        """The node key never reaches the file; lookups by the key find the enrollment."""
        details = HostDetails(hostname="lt-alice-01", platform="ubuntu", os_name="Ubuntu", os_version="24.4.0")
        await store.create_enrollment(node_key="nk_secret_value", serial="PF3ABCDE", host_identifier="lt-alice-01", details=details, now=T0)

        found = await store.enrollment_by_node_key("nk_secret_value")
        raw = b"".join(p.read_bytes() for p in (tmp_path / "var").iterdir())

        assert (hash_node_key("nk_secret_value"), "PF3ABCDE", details, True) == (found.node_key_hash, found.serial, found.details, found.active)  # type: ignore[union-attr]
        assert b"nk_secret_value" not in raw

    async def test_unknown_node_key_is_none(self, store: SqliteStore) -> None:
        """An unknown node key finds nothing."""
        assert None is await store.enrollment_by_node_key("nk_unknown")

    async def test_re_enrolling_revokes_the_older_key(self, store: SqliteStore) -> None:
        """A new enrollment of the same serial revokes the previous node key."""
        await store.create_enrollment(node_key="nk_old", serial="S", host_identifier="h", details=HostDetails(), now=T0)
        await store.create_enrollment(node_key="nk_new", serial="S", host_identifier="h", details=HostDetails(), now=T0 + timedelta(hours=1))

        old = await store.enrollment_by_node_key("nk_old")
        new = await store.enrollment_by_node_key("nk_new")

        assert (T0 + timedelta(hours=1), True) == (old.revoked_at, new.active)  # type: ignore[union-attr]

    async def test_revoke_enrollments_of_a_device(self, store: SqliteStore) -> None:
        """Revoking a device's enrollments marks its active key revoked and counts it."""
        await store.create_enrollment(node_key="nk_1", serial="S", host_identifier="h", details=HostDetails(), now=T0)

        count = await store.revoke_enrollments("S", now=T0)
        again = await store.revoke_enrollments("S", now=T0)

        assert (1, 0, False) == (count, again, (await store.enrollment_by_node_key("nk_1")).active)  # type: ignore[union-attr]


class TestQueryResults:
    async def test_saved_rows_read_back_per_query(self, store: SqliteStore) -> None:
        """Each query's rows replace the earlier rows of that query only."""
        await store.save_query_results("S", {"zt_a": QueryResult(({"x": "1"},), T0), "zt_b": QueryResult((), T0)})
        await store.save_query_results("S", {"zt_a": QueryResult(({"x": "2"}, {"x": "3"}), T0 + timedelta(minutes=1))})

        results = await store.query_results("S")

        assert {
            "zt_a": QueryResult(({"x": "2"}, {"x": "3"}), T0 + timedelta(minutes=1)),
            "zt_b": QueryResult((), T0),
        } == dict(results)


class TestHistory:
    async def test_record_compliance_tracks_failing_since(self, store: SqliteStore) -> None:
        """A check keeps the time it first failed until it passes again."""
        await store.record_compliance(HistoryEntry("S", ("a@x.io",), T0, {"disk": False, "fw": True}))
        await store.record_compliance(HistoryEntry("S", ("a@x.io",), T0 + timedelta(hours=1), {"disk": False, "fw": False}))
        first = dict(await store.failing_since("S"))
        await store.record_compliance(HistoryEntry("S", ("a@x.io",), T0 + timedelta(hours=2), {"disk": True}))

        assert {"disk": T0, "fw": T0 + timedelta(hours=1)} == first
        assert {"fw": T0 + timedelta(hours=1)} == dict(await store.failing_since("S"))

    async def test_set_failing_since_sets_and_clears(self, store: SqliteStore) -> None:
        """set_failing_since writes a time and None removes it."""
        await store.set_failing_since("S", "os", T0)
        set_value = dict(await store.failing_since("S"))
        await store.set_failing_since("S", "os", None)

        assert ({"os": T0}, {}) == (set_value, dict(await store.failing_since("S")))

    async def test_load_failing_since_for_all_or_some_devices(self, store: SqliteStore) -> None:
        """Failing-since of many devices comes back in one call, for all of them or the named ones."""
        for i in range(700):
            await store.set_failing_since(f"S{i}", "disk", T0 + timedelta(seconds=i))
        await store.set_failing_since("S1", "os", T0)

        everything = await store.load_failing_since()
        some = await store.load_failing_since([f"S{i}" for i in range(0, 1400, 2)] + ["S1"])

        assert (700, {"disk": T0 + timedelta(seconds=1), "os": T0}) == (len(everything), everything["S1"])
        assert 351 == len(some)

    async def test_iter_history_covers_the_period_in_pages(self, store: SqliteStore) -> None:
        """Entries in [since, until) come back oldest first, across page boundaries."""
        for i in range(2500):
            await store.record_compliance(HistoryEntry(f"S{i % 7}", (), T0 + timedelta(minutes=i), {"c": i % 2 == 0}))

        got = [e async for e in store.iter_history(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=2010))]

        assert 2000 == len(got)
        assert (T0 + timedelta(minutes=10), T0 + timedelta(minutes=2009)) == (got[0].recorded_at, got[-1].recorded_at)

    async def test_prune_deletes_only_entries_before_the_cutoff(self, store: SqliteStore) -> None:
        """Pruning removes what is older than the retention cutoff and keeps the rest."""
        for days in (100, 91, 89, 1):
            await store.record_compliance(HistoryEntry("S", (), T0 - timedelta(days=days), {"c": True}))

        deleted = await store.prune_history(before=T0 - timedelta(days=90))
        left = [e.recorded_at async for e in store.iter_history(since=T0 - timedelta(days=365))]

        assert (2, [T0 - timedelta(days=89), T0 - timedelta(days=1)]) == (deleted, left)


class TestPendingQueries:
    async def test_queue_read_and_complete(self, store: SqliteStore) -> None:
        """Queued queries are read per device until the agent answers them."""
        queries = [PendingQuery(f"q{i}", "S", "zt_firewall", "SELECT 1;", T0 + timedelta(seconds=i)) for i in range(3)]
        await store.add_pending_queries([*queries, PendingQuery("other", "T", "zt_x", "SELECT 2;", T0)])

        pending = await store.pending_queries("S")
        await store.complete_pending_queries("S", ["q0", "q2", "unknown"])

        assert tuple(queries) == pending
        assert (queries[1],) == await store.pending_queries("S")
