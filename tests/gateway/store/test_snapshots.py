"""The in-memory snapshot cache: loaded at start, follows the store, takes local ingests at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.metrics import Metrics
from gateway.store.snapshots import SnapshotCache, run_cache_refresh
from gateway.store.sqlite import SqliteStore
from tests.gateway.store.snapshots import make_snapshot


class StopLoop(Exception):
    """Raised by the test's wait function to end a forever-loop."""


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, SqliteStore]]:
    """Two store instances on one file: this process's and another replica's."""
    ours = await SqliteStore.open(tmp_path / "g.db")
    theirs = await SqliteStore.open(tmp_path / "g.db")
    yield ours, theirs
    await ours.close()
    await theirs.close()


class TestSnapshotCache:
    async def test_load_fills_the_cache_and_the_gauge(self, stores: tuple[SqliteStore, SqliteStore], metrics: Metrics) -> None:
        """Everything in the store is in memory after load, and the gauge says how many."""
        ours, _ = stores
        await ours.put_snapshots([make_snapshot("A"), make_snapshot("B")])
        cache = SnapshotCache(ours, metrics=metrics)

        await cache.load()

        assert (True, 2, make_snapshot("A")) == (cache.loaded, len(cache), cache.get("A"))
        assert 2.0 == metrics.registry.get_sample_value("gatehouse_snapshots_held")

    async def test_refresh_picks_up_another_instances_writes(self, stores: tuple[SqliteStore, SqliteStore]) -> None:
        """Snapshots stored by another process on the same file appear after a refresh, not before."""
        ours, theirs = stores
        cache = SnapshotCache(ours)
        await cache.load()
        await theirs.put_snapshots([make_snapshot("A", minutes=1), make_snapshot("B")])
        before = cache.get("A")

        changed = await cache.refresh()

        assert (None, 2, make_snapshot("A", minutes=1)) == (before, changed, cache.get("A"))
        assert 0 == await cache.refresh()

    async def test_apply_keeps_the_newer_snapshot(self, stores: tuple[SqliteStore, SqliteStore]) -> None:
        """A local ingest shows at once; an older snapshot never replaces a newer one."""
        cache = SnapshotCache(stores[0])
        newer = make_snapshot("A", minutes=5)

        took = (cache.apply(newer), cache.apply(make_snapshot("A", minutes=1)))

        assert ((True, False), newer) == (took, cache.get("A"))

    async def test_refresh_does_not_roll_back_a_newer_local_snapshot(self, stores: tuple[SqliteStore, SqliteStore]) -> None:
        """A change feed entry older than what this process already holds is ignored."""
        ours, theirs = stores
        cache = SnapshotCache(ours)
        await cache.load()
        await theirs.put_snapshots([make_snapshot("A", minutes=1)])
        cache.apply(make_snapshot("A", minutes=9))

        await cache.refresh()

        assert make_snapshot("A", minutes=9) == cache.get("A")

    async def test_fresh_reads_the_store_now(self, stores: tuple[SqliteStore, SqliteStore]) -> None:
        """"Check again" gets the newest snapshot from the store before any refresh, and keeps it."""
        ours, theirs = stores
        cache = SnapshotCache(ours)
        await cache.load()
        await theirs.put_snapshots([make_snapshot("A", disk_encrypted=False)])

        fresh = await cache.fresh("A")

        assert (make_snapshot("A", disk_encrypted=False), fresh) == (fresh, cache.get("A"))
        assert None is await cache.fresh("UNKNOWN")

    async def test_decoded_snapshots_share_repeated_strings(self, stores: tuple[SqliteStore, SqliteStore]) -> None:
        """Strings, versions, owners and custom facts repeated across the fleet are shared so resident snapshots stay small."""
        ours, _ = stores
        await ours.put_snapshots([make_snapshot("A"), make_snapshot("B")])
        cache = SnapshotCache(ours)

        await cache.load()

        a, b = cache.get("A"), cache.get("B")
        assert a is not None and b is not None
        assert (True, True, True, True, True) == (
            a.os_name is b.os_name, a.source is b.source, a.os_version is b.os_version, a.custom is b.custom, a.owners is b.owners)


    async def test_resident_snapshots_stay_small(self, stores: tuple[SqliteStore, SqliteStore]) -> None:
        """A loaded snapshot costs well under 1 KB of memory (100,000 devices in under 100 MB)."""
        import gc
        import tracemalloc

        ours, _ = stores
        await ours.put_snapshots([make_snapshot(f"SER{i:06d}", hostname=f"host-{i}", owners=(f"u{i % 300}@example.com",)) for i in range(5000)])
        cache = SnapshotCache(ours)
        gc.collect()
        tracemalloc.start()
        try:
            await cache.load()
            gc.collect()
            used, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert 5000 == len(cache)
        assert used / 5000 < 700, f"{used / 5000:.0f} bytes per snapshot"


class TestFailingSince:
    async def test_loaded_at_start_and_refreshed_for_changed_devices(self, stores: tuple[SqliteStore, SqliteStore]) -> None:
        """Grace-period starts are in memory: loaded at start, re-read for the devices a refresh brings."""
        from gateway.store.base import HistoryEntry
        from tests.gateway.store.snapshots import T0

        ours, theirs = stores
        await ours.put_snapshots([make_snapshot("A")])
        await ours.record_compliance(HistoryEntry("A", (), T0, {"disk": False}))
        cache = SnapshotCache(ours)
        await cache.load()
        loaded = dict(cache.failing_since("A"))
        await theirs.put_snapshots([make_snapshot("A", minutes=1), make_snapshot("B", minutes=1)])
        await theirs.record_compliance(HistoryEntry("A", (), T0 + timedelta(minutes=1), {"disk": True, "fw": False}))
        await theirs.record_compliance(HistoryEntry("B", (), T0 + timedelta(minutes=1), {"os": False}))

        await cache.refresh()

        assert {"disk": T0} == loaded
        assert {"fw": T0 + timedelta(minutes=1)} == dict(cache.failing_since("A"))
        assert {"os": T0 + timedelta(minutes=1)} == dict(cache.failing_since("B"))
        assert {} == dict(cache.failing_since("UNKNOWN"))

    async def test_fresh_rereads_failing_since(self, stores: tuple[SqliteStore, SqliteStore]) -> None:
        """"Check again" also takes the store's current failing-since of the device."""
        from gateway.store.base import HistoryEntry
        from tests.gateway.store.snapshots import T0

        ours, theirs = stores
        cache = SnapshotCache(ours)
        await cache.load()
        await theirs.put_snapshots([make_snapshot("A")])
        await theirs.record_compliance(HistoryEntry("A", (), T0, {"disk": False}))

        await cache.fresh("A")

        assert {"disk": T0} == dict(cache.failing_since("A"))


class TestRunCacheRefresh:
    async def test_refreshes_every_interval(self, stores: tuple[SqliteStore, SqliteStore]) -> None:
        """The loop waits the configured interval, then applies what other writers stored."""
        ours, theirs = stores
        cache = SnapshotCache(ours, refresh_interval_s=7.5)
        await cache.load()
        waits: list[float] = []

        async def wait(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 1:
                await theirs.put_snapshots([make_snapshot("A")])
                return
            raise StopLoop

        with pytest.raises(StopLoop):
            await run_cache_refresh(cache, wait=wait)

        assert ([7.5, 7.5], True) == (waits, "A" in cache)

    async def test_store_errors_are_logged_counted_and_survived(self, tmp_path: Path, metrics: Metrics) -> None:
        """A failing store does not end the loop or empty the cache."""
        store = await SqliteStore.open(tmp_path / "g.db")
        await store.put_snapshots([make_snapshot("A")])
        cache = SnapshotCache(store)
        await cache.load()
        await store.close()
        calls = 0

        async def wait(seconds: float) -> None:
            nonlocal calls
            calls += 1
            if calls > 2:
                raise StopLoop

        with capture_logs() as logs, pytest.raises(StopLoop):
            await run_cache_refresh(cache, wait=wait, metrics=metrics)

        assert ["snapshot_cache.refresh_failed"] * 2 == [e["event"] for e in logs]
        assert 2.0 == metrics.registry.get_sample_value("gatehouse_store_errors_total", {"operation": "cache_refresh"})
        assert "A" in cache
