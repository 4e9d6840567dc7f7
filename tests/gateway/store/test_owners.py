"""The owner inventory part of the Store contract, on SQLite and PostgreSQL, and the cache that follows it."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from gateway.store.snapshots import SnapshotCache
from gateway.store import Store
from gateway.store.base import OwnerEdit, OwnerEditMode, OwnerSource
from gateway.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore
from tests.gateway.store.snapshots import T0, make_snapshot
from tests.gateway.store.conftest import Backend

ALICE, BOB = "alice@example.com", "bob@example.com"


def edit(serial: str, *owners: str, mode: OwnerEditMode = OwnerEditMode.ADD, minutes: int = 0) -> OwnerEdit:
    return OwnerEdit(serial, owners, mode, "cli:ops", T0 + timedelta(minutes=minutes), OwnerSource.CLI)


class TestEditOwners:
    async def test_add_replace_and_remove_keep_who_when_and_how(self, store: Store) -> None:
        """Adding keeps listed owners, replacing sets the list, removing drops the named one; each records who, when and the source."""
        await store.edit_owners([edit("C02A", ALICE)])
        await store.edit_owners([edit("C02A", BOB, ALICE, minutes=1)])
        after_add = await store.owners("C02A")
        await store.edit_owners([OwnerEdit("C02A", (BOB,), OwnerEditMode.REPLACE, "import:hr.csv", T0 + timedelta(minutes=2), OwnerSource.IMPORT)])
        after_replace = await store.owners("C02A")
        await store.edit_owners([edit("C02A", BOB, mode=OwnerEditMode.REMOVE, minutes=3)])

        assert after_add is not None and (ALICE, BOB) == after_add.owners
        assert after_replace is not None
        assert ((BOB,), "import:hr.csv", T0 + timedelta(minutes=2), OwnerSource.IMPORT) == (
            after_replace.owners, after_replace.set_by, after_replace.set_at, after_replace.source)
        assert None is await store.owners("C02A")

    async def test_change_feed_carries_unassignments_and_skips_no_ops(self, store: Store) -> None:
        """Followers see every change in order, an unassignment as an empty list; an edit that changes nothing takes no seq."""
        start = (await store.load_owners()).cursor
        await store.edit_owners([edit("C02A", ALICE), edit("C02B", BOB)])
        middle = (await store.owner_changes_since(start)).cursor
        await store.edit_owners([edit("C02A", ALICE)])  # already listed
        await store.edit_owners([edit("C02A", mode=OwnerEditMode.REMOVE)])

        changes = await store.owner_changes_since(middle)
        loaded = await store.load_owners()

        assert [("C02A", ())] == [(r.serial, r.owners) for r in changes.records]
        assert middle + 1 == changes.cursor
        assert [("C02B", (BOB,))] == [(r.serial, r.owners) for r in loaded.records]

    async def test_changes_come_in_pages(self, store: Store) -> None:
        """With a limit, the feed says there is more and resumes from its cursor."""
        start = (await store.load_owners()).cursor
        await store.edit_owners([edit(f"SER{i}", ALICE) for i in range(5)])

        first = await store.owner_changes_since(start, limit=3)
        rest = await store.owner_changes_since(first.cursor, limit=3)

        assert (3, True, 2, False) == (len(first.records), first.more, len(rest.records), rest.more)


class TestCacheFollowsTheInventory:
    async def test_refresh_brings_another_writers_change_and_owners_of_applies_the_trust_rule(self, backend: Backend) -> None:
        """A second store handle's edits reach the cache on refresh; the inventory beats reported owners, which count only when trusted."""
        reader, writer = await backend.open(), await backend.open()
        try:
            await writer.put_snapshots([make_snapshot("C02A", owners=(BOB,)), make_snapshot("C02B", owners=(BOB,))])
            cache = SnapshotCache(reader)
            await cache.load()
            before = (cache.owners_of("C02A", trust_reported=True), cache.owners_of("C02A", trust_reported=False))
            await writer.edit_owners([edit("C02A", ALICE)])

            changed = await cache.refresh()

            assert (((BOB,), ()), 1) == (before, changed)
            assert ((ALICE,), (ALICE,)) == (cache.owners_of("C02A", trust_reported=True), cache.owners_of("C02A", trust_reported=False))
            assert ((BOB,), ()) == (cache.owners_of("C02B", trust_reported=True), cache.owners_of("C02B", trust_reported=False))
        finally:
            await reader.close()
            await writer.close()


async def test_a_version_1_sqlite_store_gains_the_inventory(tmp_path: Path) -> None:
    """A store created before the owner inventory is migrated on open and keeps its snapshots."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()

    opened = await SqliteStore.open(path)
    try:
        await opened.edit_owners([edit("C02A", ALICE)])
        record = await opened.owners("C02A")
    finally:
        await opened.close()

    assert (len(MIGRATIONS), (ALICE,)) == (SCHEMA_VERSION, record.owners if record else None)
