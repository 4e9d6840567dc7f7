"""The Store contract, run against every backend: SQLite (the reference) and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import timedelta, timezone

import pytest

from gateway.store import HistoryEntry, HostDetails, PendingQuery, PutOutcome, QueryResult, Store, StoreError
from gateway.store.base import CertificateRecord, ChangeKind, ChangeNotice, OwnerEdit, OwnerEditMode, OwnerSource
from gateway.store.sqlite import hash_node_key
from policy_engine.model import DeviceSnapshot
from tests.breakglass.factories import make_chain
from tests.gateway.store.conftest import Backend
from tests.gateway.store.snapshots import T0, make_snapshot


def _by_serial(snapshots: Iterable[DeviceSnapshot]) -> list[DeviceSnapshot]:
    return sorted(snapshots, key=lambda s: s.serial)


class TestPutSnapshots:
    async def test_outcomes_are_stored_duplicate_and_older(self, store: Store) -> None:
        """Each item gets its outcome in order: new is stored, same collected_at duplicate, earlier older."""
        first = make_snapshot(minutes=10)

        outcomes = await store.put_snapshots(
            [first, first, make_snapshot(minutes=5), make_snapshot("OTHER1", minutes=1), make_snapshot(minutes=11)]
        )

        assert (
            PutOutcome.STORED, PutOutcome.DUPLICATE, PutOutcome.OLDER, PutOutcome.STORED, PutOutcome.STORED,
        ) == outcomes
        assert make_snapshot(minutes=11) == await store.latest(first.serial)

    async def test_retrying_a_batch_is_idempotent(self, store: Store) -> None:
        """Sending the same batch again stores nothing and leaves the change feed where it was."""
        batch = [make_snapshot(f"S{i}", minutes=i) for i in range(5)]
        await store.put_snapshots(batch)
        cursor = (await store.load_latest()).cursor

        outcomes = await store.put_snapshots(batch)

        assert (PutOutcome.DUPLICATE,) * 5 == outcomes
        assert cursor == (await store.load_latest()).cursor
        assert () == (await store.changes_since(cursor)).snapshots

    async def test_an_older_snapshot_never_replaces_a_newer_one(self, store: Store) -> None:
        """The latest is the newest collected_at, whatever order they arrive in."""
        await store.put_snapshots([make_snapshot(minutes=5, disk_encrypted=True)])

        outcomes = await store.put_snapshots([make_snapshot(minutes=4, disk_encrypted=False)])

        assert (PutOutcome.OLDER,) == outcomes
        assert True is (await store.latest(make_snapshot().serial)).disk_encrypted  # type: ignore[union-attr]

    async def test_every_field_and_microsecond_survives(self, store: Store) -> None:
        """What is stored reads back equal, to the microsecond and in UTC, whatever zone it came in."""
        zone = timezone(timedelta(hours=-5))
        snapshot = make_snapshot(
            collected_at=(T0 + timedelta(microseconds=123457)).astimezone(zone),
            os_version=None, owners=("a@example.com", "b@example.com"), gatekeeper_enabled=False,
            custom={"n": 3, "f": 1.5, "s": "x", "b": False},
        )

        await store.put_snapshots([snapshot])

        stored = await store.latest(snapshot.serial)
        assert snapshot == stored
        assert timezone.utc == stored.collected_at.tzinfo  # type: ignore[union-attr]
        assert 123457 == stored.collected_at.microsecond  # type: ignore[union-attr]

    async def test_the_backend_implements_the_store_protocol(self, store: Store) -> None:
        """Every backend is a Store (runtime-checkable Protocol)."""
        assert isinstance(store, Store)

    async def test_empty_batch_and_unknown_serial(self, store: Store) -> None:
        """An empty batch does nothing and a serial never stored reads as None."""
        assert () == await store.put_snapshots([])

        assert None is await store.latest("NOPE")

    async def test_a_microsecond_later_is_a_new_snapshot(self, store: Store) -> None:
        """Idempotency compares collected_at exactly, to the microsecond."""
        first = make_snapshot()
        later = make_snapshot(collected_at=first.collected_at + timedelta(microseconds=1))

        outcomes = await store.put_snapshots([first, later])

        assert (PutOutcome.STORED, PutOutcome.STORED) == outcomes


class TestChangeFeed:
    async def test_empty_store_loads_nothing_at_cursor_zero(self, store: Store) -> None:
        """A new store has no snapshots and cursor 0."""
        changes = await store.load_latest()

        assert ((), 0, False) == (changes.snapshots, changes.cursor, changes.more)

    async def test_load_latest_holds_every_latest_snapshot(self, store: Store) -> None:
        """load_latest returns one latest snapshot per serial and the cursor of the last change."""
        await store.put_snapshots([make_snapshot("A", minutes=1), make_snapshot("B", minutes=1)])
        await store.put_snapshots([make_snapshot("A", minutes=2)])

        changes = await store.load_latest()

        assert [make_snapshot("A", minutes=2), make_snapshot("B", minutes=1)] == _by_serial(changes.snapshots)
        assert 3 == changes.cursor
        assert () == (await store.changes_since(changes.cursor)).snapshots

    async def test_changes_come_in_store_order_with_limit_and_more(self, store: Store) -> None:
        """changes_since pages through the latest snapshots oldest first; more says when to ask again."""
        await store.put_snapshots([make_snapshot(f"S{i}", minutes=i) for i in range(5)])
        await store.put_snapshots([make_snapshot("S0", minutes=10)])

        first = await store.changes_since(0, limit=2)
        second = await store.changes_since(first.cursor, limit=2)
        third = await store.changes_since(second.cursor, limit=2)

        assert (["S1", "S2"], True) == ([s.serial for s in first.snapshots], first.more)
        assert (["S3", "S4"], True) == ([s.serial for s in second.snapshots], second.more)
        assert ([make_snapshot("S0", minutes=10)], False) == (list(third.snapshots), third.more)
        assert 6 == third.cursor

    async def test_a_large_feed_comes_back_whole_and_in_order(self, store: Store) -> None:
        """Hundreds of changes come back complete, in the order they were stored."""
        snapshots = [make_snapshot(f"S{i:03}", minutes=i) for i in range(300)]
        await store.put_snapshots(snapshots[:150])
        await store.put_snapshots(snapshots[150:])

        changes = await store.changes_since(0)

        assert (snapshots, 300, False) == (list(changes.snapshots), changes.cursor, changes.more)

    async def test_exact_limit_has_no_more(self, store: Store) -> None:
        """A page that holds exactly the remaining changes says there is no more."""
        await store.put_snapshots([make_snapshot(f"S{i}") for i in range(3)])

        changes = await store.changes_since(0, limit=3)

        assert (3, False, 3) == (len(changes.snapshots), changes.more, changes.cursor)

    async def test_a_cursor_with_nothing_new_stays_put(self, store: Store) -> None:
        """Asking from the current cursor returns nothing and the same cursor."""
        await store.put_snapshots([make_snapshot()])

        changes = await store.changes_since(1)

        assert ((), 1, False) == (changes.snapshots, changes.cursor, changes.more)

    async def test_the_same_serial_twice_in_a_batch_appears_once(self, store: Store) -> None:
        """A device updated twice in one batch is one change, its newest snapshot."""
        await store.put_snapshots([make_snapshot(minutes=1), make_snapshot("X"), make_snapshot(minutes=2)])

        changes = await store.changes_since(0)

        assert [make_snapshot("X"), make_snapshot(minutes=2)] == list(changes.snapshots)
        assert 3 == changes.cursor


class TestEnrollments:
    async def test_enrollment_is_found_by_its_node_key_and_stores_only_the_hash(self, store: Store) -> None:
        """The node key finds its enrollment; only its hash is kept."""
        details = HostDetails(hostname="bobs-mbp", platform="darwin", os_version="15.6", agent_version="5.12.1")

        created = await store.create_enrollment(
            node_key="nk-1", serial="SER1", host_identifier="bobs-mbp", details=details, now=T0
        )

        found = await store.enrollment_by_node_key("nk-1")
        assert created == found
        assert (hash_node_key("nk-1"), True, details, T0) == (
            found.node_key_hash, found.active, found.details, found.enrolled_at,  # type: ignore[union-attr]
        )
        assert None is await store.enrollment_by_node_key("nk-unknown")

    async def test_a_new_enrollment_revokes_the_old_keys_of_the_serial(self, store: Store) -> None:
        """Re-enrolling a device revokes its earlier node key at that moment; other devices keep theirs."""
        for key, serial in (("nk-1", "SER1"), ("nk-other", "SER2")):
            await store.create_enrollment(node_key=key, serial=serial, host_identifier="h", details=HostDetails(), now=T0)
        later = T0 + timedelta(hours=1, microseconds=7)

        await store.create_enrollment(node_key="nk-2", serial="SER1", host_identifier="h", details=HostDetails(), now=later)

        assert later == (await store.enrollment_by_node_key("nk-1")).revoked_at  # type: ignore[union-attr]
        assert True is (await store.enrollment_by_node_key("nk-2")).active  # type: ignore[union-attr]
        assert True is (await store.enrollment_by_node_key("nk-other")).active  # type: ignore[union-attr]

    async def test_revoke_counts_only_active_keys(self, store: Store) -> None:
        """revoke_enrollments revokes the active keys and says how many; a second call finds none."""
        await store.create_enrollment(node_key="nk-1", serial="SER1", host_identifier="h", details=HostDetails(), now=T0)
        await store.create_enrollment(node_key="nk-2", serial="SER1", host_identifier="h", details=HostDetails(), now=T0)

        counts = (await store.revoke_enrollments("SER1", now=T0), await store.revoke_enrollments("SER1", now=T0))

        assert (1, 0) == counts
        assert False is (await store.enrollment_by_node_key("nk-2")).active  # type: ignore[union-attr]

    async def test_a_node_key_used_twice_is_refused(self, store: Store) -> None:
        """Storing an existing node key again raises StoreError."""
        await store.create_enrollment(node_key="nk-1", serial="SER1", host_identifier="h", details=HostDetails(), now=T0)

        with pytest.raises(StoreError):
            await store.create_enrollment(node_key="nk-1", serial="SER2", host_identifier="h", details=HostDetails(), now=T0)


class TestQueryState:
    async def test_saved_rows_read_back_by_query_name(self, store: Store) -> None:
        """Rows are kept per query and read back in order."""
        rows = ({"name": "FileVault", "enabled": "1"}, {"name": "Firewall", "enabled": "0"})

        await store.save_query_results("SER1", {"disk": QueryResult(rows, T0), "empty": QueryResult((), T0)})

        assert {"disk": QueryResult(rows, T0), "empty": QueryResult((), T0)} == await store.query_results("SER1")
        assert {} == await store.query_results("SER2")

    async def test_saving_replaces_only_the_named_queries(self, store: Store) -> None:
        """A save replaces the queries it names and leaves the others."""
        await store.save_query_results("SER1", {"a": QueryResult(({"x": "1"},), T0), "b": QueryResult(({"y": "1"},), T0)})
        later = T0 + timedelta(minutes=1)

        await store.save_query_results("SER1", {"a": QueryResult(({"x": "2"},), later)})
        await store.save_query_results("SER1", {})

        assert {"a": QueryResult(({"x": "2"},), later), "b": QueryResult(({"y": "1"},), T0)} == await store.query_results("SER1")


class TestHistory:
    async def test_history_reads_back_in_a_time_window_in_recorded_order(self, store: Store) -> None:
        """iter_history yields the entries in [since, until), in the order they were recorded."""
        entries = [
            HistoryEntry(f"S{i}", ("o@example.com",), T0 + timedelta(hours=i), {"disk-encrypted": i % 2 == 0, "fw": True})
            for i in range(5)
        ]
        for entry in entries:
            await store.record_compliance(entry)

        window = [e async for e in store.iter_history(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=4))]
        everything = [e async for e in store.iter_history(since=T0)]

        assert entries[1:4] == window
        assert entries == everything
        assert ["disk-encrypted", "fw"] == list(everything[0].results)

    async def test_history_is_read_in_pages(self, store: Store, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        """Paging returns every entry exactly once."""
        monkeypatch.setattr(backend.module, "_HISTORY_PAGE", 2)
        entries = [HistoryEntry("S", (), T0 + timedelta(minutes=i), {"c": True}) for i in range(5)]
        for entry in entries:
            await store.record_compliance(entry)

        assert entries == [e async for e in store.iter_history(since=T0)]

    async def test_prune_deletes_only_older_entries(self, store: Store) -> None:
        """prune_history deletes entries recorded before the bound and says how many."""
        for i in range(4):
            await store.record_compliance(HistoryEntry("S", (), T0 + timedelta(days=i), {"c": True}))

        pruned = await store.prune_history(before=T0 + timedelta(days=2))

        assert 2 == pruned
        assert [T0 + timedelta(days=2), T0 + timedelta(days=3)] == [e.recorded_at async for e in store.iter_history(since=T0)]
        assert 0 == await store.prune_history(before=T0)

    async def test_failing_since_starts_at_the_first_failure_and_clears_on_pass(self, store: Store) -> None:
        """A failing check keeps its first failure time; a pass clears it; unnamed checks are untouched."""
        t1, t2, t3 = (T0 + timedelta(hours=h) for h in (1, 2, 3))
        await store.record_compliance(HistoryEntry("S", (), t1, {"disk": False, "fw": False}))
        await store.record_compliance(HistoryEntry("S", (), t2, {"disk": False, "fw": True}))

        after_two = await store.failing_since("S")
        await store.record_compliance(HistoryEntry("S", (), t3, {"os": False}))

        assert {"disk": t1} == after_two
        assert {"disk": t1, "os": t3} == await store.failing_since("S")
        assert {} == await store.failing_since("OTHER")

    async def test_set_failing_since_sets_and_clears(self, store: Store) -> None:
        """set_failing_since overwrites the time, and None forgets the check."""
        await store.set_failing_since("S", "disk", T0)
        await store.set_failing_since("S", "disk", T0 + timedelta(microseconds=5))
        await store.set_failing_since("S", "fw", T0)

        await store.set_failing_since("S", "fw", None)

        assert {"disk": T0 + timedelta(microseconds=5)} == await store.failing_since("S")


class TestPendingQueries:
    async def test_pending_queries_come_oldest_first_then_by_id(self, store: Store) -> None:
        """Queries for a device come by created_at, then query_id in byte order."""
        queries = [
            PendingQuery("b", "S", "disk", "SELECT 1", T0),
            PendingQuery("B", "S", "disk", "SELECT 2", T0),
            PendingQuery("a", "S", "disk", "SELECT 3", T0),
            PendingQuery("0", "S", "fw", "SELECT 4", T0 + timedelta(seconds=1)),
            PendingQuery("x", "OTHER", "fw", "SELECT 5", T0),
        ]

        await store.add_pending_queries(queries)

        assert ["B", "a", "b", "0"] == [q.query_id for q in await store.pending_queries("S")]
        assert queries[0] == (await store.pending_queries("S"))[2]

    async def test_a_queued_id_is_replaced_and_completed_ones_forgotten(self, store: Store) -> None:
        """Re-queuing an id replaces it; completing removes only that device's named ids."""
        await store.add_pending_queries([PendingQuery("q1", "S", "disk", "SELECT 1", T0), PendingQuery("q2", "S", "fw", "SELECT 2", T0)])
        replacement = PendingQuery("q1", "S", "disk", "SELECT 9", T0 + timedelta(minutes=1))

        await store.add_pending_queries([replacement])
        await store.complete_pending_queries("OTHER", ["q2"])
        await store.complete_pending_queries("S", ["q2", "unknown"])
        await store.complete_pending_queries("S", [])

        assert (replacement,) == await store.pending_queries("S")


class TestRestart:
    async def test_everything_is_intact_after_close_and_reopen(self, backend: Backend) -> None:
        """Closing and reopening gives back snapshots, the cursor, enrollments, history, state and queries."""
        first = await backend.open()
        snapshots = [make_snapshot(f"SER{i}", minutes=i) for i in range(20)]
        await first.put_snapshots(snapshots)
        await first.create_enrollment(node_key="nk", serial="SER1", host_identifier="h", details=HostDetails(hostname="h"), now=T0)
        await first.save_query_results("SER1", {"disk": QueryResult(({"a": "1"},), T0)})
        await first.record_compliance(HistoryEntry("SER1", ("o@example.com",), T0, {"disk": False}))
        await first.add_pending_queries([PendingQuery("q", "SER1", "disk", "SELECT 1", T0)])
        cursor = (await first.load_latest()).cursor
        await first.close()

        second = await backend.open()
        try:
            changes = await second.load_latest()
            outcome = await second.put_snapshots([make_snapshot("NEW")])
            after = await second.changes_since(cursor)

            assert (_by_serial(snapshots), cursor) == (_by_serial(changes.snapshots), changes.cursor)
            assert "SER1" == (await second.enrollment_by_node_key("nk")).serial  # type: ignore[union-attr]
            assert {"disk": QueryResult(({"a": "1"},), T0)} == await second.query_results("SER1")
            assert [HistoryEntry("SER1", ("o@example.com",), T0, {"disk": False})] == [e async for e in second.iter_history(since=T0)]
            assert {"disk": T0} == await second.failing_since("SER1")
            assert 1 == len(await second.pending_queries("SER1"))
            assert ((PutOutcome.STORED,), [make_snapshot("NEW")], cursor + 1) == (outcome, list(after.snapshots), after.cursor)
        finally:
            await second.close()

    async def test_a_closed_store_refuses_calls(self, backend: Backend) -> None:
        """After close, a call raises StoreError instead of touching closed connections."""
        opened = await backend.open()
        await opened.close()

        with pytest.raises(StoreError):
            await opened.latest("S")


class TestConnectorState:
    async def test_the_first_claimer_holds_the_lease_and_others_wait(self, store: Store) -> None:
        """Of two replicas claiming a connector, the first holds it until its lease lapses."""
        first = await store.claim_connector("fleet", "replica-a", now=T0, lease_s=60)

        second = await store.claim_connector("fleet", "replica-b", now=T0 + timedelta(seconds=30), lease_s=60)

        assert (True, False, "replica-a") == (first.held, second.held, second.state.holder)

    async def test_a_lapsed_lease_passes_on_with_the_stored_cursor(self, store: Store) -> None:
        """A replica taking over after the lease lapsed gets the cursor the last holder saved."""
        await store.claim_connector("fleet", "replica-a", now=T0, lease_s=60)
        await store.save_connector_state("fleet", "replica-a", cursor="page:3", last_success_at=T0, now=T0, lease_s=60)

        claim = await store.claim_connector("fleet", "replica-b", now=T0 + timedelta(seconds=61), lease_s=60)

        assert (True, "page:3", T0) == (claim.held, claim.state.cursor, claim.state.last_success_at)

    async def test_a_replica_that_lost_the_lease_writes_nothing(self, store: Store) -> None:
        """Saving after another replica took the lease is refused and leaves the state as it was."""
        await store.claim_connector("jamf", "replica-a", now=T0, lease_s=10)
        await store.claim_connector("jamf", "replica-b", now=T0 + timedelta(seconds=11), lease_s=10)

        saved = await store.save_connector_state("jamf", "replica-a", cursor="x", last_success_at=None, now=T0, lease_s=10)

        claim = await store.claim_connector("jamf", "replica-c", now=T0 + timedelta(seconds=12), lease_s=10)
        assert (False, "", False) == (saved, claim.state.cursor, claim.held)


class TestCertificates:
    @staticmethod
    def record(fingerprint: str, serial: str = "C02CERT1", *, days: int = 0) -> CertificateRecord:
        issued = T0 + timedelta(days=days)
        return CertificateRecord(fingerprint, serial, "alice@example.com", issued, issued + timedelta(days=30), issued)

    async def test_recorded_revoked_and_followed_in_seq_order(self, store: Store) -> None:
        """Recording and revoking each take a seq; the change feed returns the latest record of each, oldest change first."""
        await store.record_certificate(self.record("a" * 64))
        await store.record_certificate(self.record("b" * 64, days=1))
        await store.record_certificate(self.record("a" * 64))  # recorded already: nothing changes
        start = await store.load_certificates()

        revoked = await store.revoke_certificate("a" * 64, at=T0 + timedelta(days=2), by="security@example.com")
        again = await store.revoke_certificate("a" * 64, at=T0 + timedelta(days=3), by="someone-else")
        unknown = await store.revoke_certificate("c" * 64, at=T0, by="x")
        changes = await store.certificate_changes_since(start.cursor)

        assert ["a" * 64, "b" * 64] == [r.fingerprint for r in start.records]
        assert revoked is not None and (T0 + timedelta(days=2), "security@example.com") == (revoked.revoked_at, revoked.revoked_by)
        assert revoked == again
        assert unknown is None
        assert ((revoked,), start.cursor + 1) == (changes.records, changes.cursor)

    async def test_revoking_a_serial_revokes_each_live_certificate_once(self, store: Store) -> None:
        """Every unrevoked certificate of the serial is revoked; other serials and earlier revocations are left alone."""
        await store.record_certificate(self.record("a" * 64))
        await store.record_certificate(self.record("b" * 64, days=1))
        await store.record_certificate(self.record("c" * 64, "OTHER1"))
        await store.revoke_certificate("a" * 64, at=T0, by="first")

        revoked = await store.revoke_certificates_of("C02CERT1", at=T0 + timedelta(days=5), by="device-removed:cli:root")
        held = await store.certificates_of("C02CERT1")

        assert ["b" * 64] == [r.fingerprint for r in revoked]
        assert [("a" * 64, "first"), ("b" * 64, "device-removed:cli:root")] == [(r.fingerprint, r.revoked_by) for r in held]
        assert (None,) == tuple(r.revoked_at for r in await store.certificates_of("OTHER1"))


class TestSeams:
    """What callers use beyond the data: health, change notices and the audit sink, on every backend alike."""

    async def test_health_is_true_while_open_and_false_once_closed(self, backend: Backend) -> None:
        """health() answers True on an open store and False (never raising) after close."""
        store = await backend.open()
        healthy = await store.health(timeout_s=2)
        await store.close()

        assert (True, False) == (healthy, await store.health(timeout_s=2))

    async def test_each_write_others_cache_is_announced_after_commit(self, store: Store, backend: Backend) -> None:
        """Stored snapshots, owner edits, certificates and audit appends each announce their kind; SQLite's notices are local."""
        wanted = {ChangeKind.SNAPSHOT, ChangeKind.OWNERS, ChangeKind.CERTIFICATES, ChangeKind.AUDIT}
        heard: list[ChangeNotice] = []
        all_heard = asyncio.Event()

        def hear(notice: ChangeNotice) -> None:
            heard.append(notice)
            if wanted <= {n.kind for n in heard}:
                all_heard.set()

        unsubscribe = store.subscribe(hear)
        if backend.name == "postgresql":  # the listener's first (re)connect notice: only then is LISTEN in place
            await _heard(heard, lambda: any(n.kind is ChangeKind.RESYNC for n in heard))
        await store.put_snapshots([make_snapshot()])
        await store.edit_owners([OwnerEdit("C02A", ("bob@example.com",), OwnerEditMode.REPLACE, "cli:ops", T0, OwnerSource.CLI)])
        await store.record_certificate(TestCertificates.record("a" * 64))
        await (await store.audit_sink()).append(make_chain(1))
        async with asyncio.timeout(5):
            await all_heard.wait()
        unsubscribe()

        local = backend.name == "sqlite"
        assert {(kind, local) for kind in wanted} == {(n.kind, n.local) for n in heard if n.kind is not ChangeKind.RESYNC}

    async def test_the_audit_sink_is_opened_once_and_closed_with_the_store(self, backend: Backend) -> None:
        """audit_sink() returns the same working sink each time; after close the store refuses to hand it out or use it."""
        store = await backend.open()
        sink = await store.audit_sink()
        await sink.append(make_chain(2))
        again = await store.audit_sink()
        head = await again.head()
        await store.close()

        assert (2, make_chain(2)[-1].hash) == (head.seq, head.hash)
        with pytest.raises(StoreError, match="closed"):
            await store.audit_sink()
        with pytest.raises(StoreError, match="closed"):
            await sink.entries()

    async def test_subscribing_to_a_closed_store_is_refused(self, backend: Backend) -> None:
        """subscribe() on a closed store raises StoreError naming the store."""
        store = await backend.open()
        await store.close()

        with pytest.raises(StoreError, match="cannot subscribe"):
            store.subscribe(lambda notice: None)


async def _heard(heard: list[ChangeNotice], condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)
