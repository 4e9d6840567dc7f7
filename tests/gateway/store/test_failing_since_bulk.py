"""load_failing_since (the cache's bulk read of grace-period starts) on every backend."""

from __future__ import annotations

from datetime import timedelta

from gateway.store.base import HistoryEntry, Store
from tests.gateway.store.snapshots import T0


class TestLoadFailingSince:
    async def test_all_devices_or_the_named_ones(self, store: Store) -> None:  # noqa: F811
        """Every failing device comes back with its checks; a serial list narrows it; passing devices are absent."""
        await store.record_compliance(HistoryEntry("A", (), T0, {"disk": False, "fw": True}))
        await store.record_compliance(HistoryEntry("B", (), T0 + timedelta(minutes=1), {"os": False}))
        await store.record_compliance(HistoryEntry("C", (), T0, {"os": True}))

        everything = await store.load_failing_since()
        some = await store.load_failing_since(["B", "C", "UNKNOWN"])

        assert {"A": {"disk": T0}, "B": {"os": T0 + timedelta(minutes=1)}} == {k: dict(v) for k, v in everything.items()}
        assert {"B": {"os": T0 + timedelta(minutes=1)}} == {k: dict(v) for k, v in some.items()}
