"""The shared ingest path: history retention pruning."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gateway.ingest.pipeline import prune_history, run_history_prune
from gateway.store.base import HistoryEntry
from gateway.store.sqlite import SqliteStore
from tests.gateway.ingest.support import FakeClock


class StopLoop(Exception):
    """Ends the prune loop from the test's wait function."""


async def fill(store: SqliteStore, now: datetime) -> None:
    for days in (120, 91, 90, 30, 0):
        await store.record_compliance(HistoryEntry("S", (), now - timedelta(days=days, minutes=-1), {"disk": True}))


class TestHistoryRetention:
    async def test_prune_keeps_the_retention_period(self, store: SqliteStore, clock: FakeClock) -> None:
        """Entries older than retention_days are deleted; the rest of the period stays."""
        await fill(store, clock())

        deleted = await prune_history(store, retention_days=90, now=clock())

        kept = [e.recorded_at async for e in store.iter_history(since=clock() - timedelta(days=400))]
        assert 2 == deleted
        assert [clock() - timedelta(days=d, minutes=-1) for d in (90, 30, 0)] == kept

    async def test_prune_loop_runs_at_once_and_then_periodically(self, store: SqliteStore, clock: FakeClock) -> None:
        """The loop prunes on start and after every wait, with the clock's time each round."""
        await fill(store, clock())
        waits: list[float] = []

        async def wait(seconds: float) -> None:
            waits.append(seconds)
            clock.advance(days=31)
            if len(waits) == 2:
                raise StopLoop

        with pytest.raises(StopLoop):
            await run_history_prune(store, retention_days=90, clock=clock, wait=wait, every_s=60)

        left = [e.recorded_at async for e in store.iter_history(since=clock() - timedelta(days=400))]
        assert [60, 60] == waits
        assert [clock() - timedelta(days=d, minutes=-1) for d in (92, 62)] == left


class TestHistoryThrottle:
    def test_records_changes_and_a_daily_heartbeat(self, clock: FakeClock) -> None:
        """Same results within a day are skipped; a change or a day later is recorded."""
        from gateway.ingest.pipeline import HistoryThrottle

        throttle = HistoryThrottle()
        t = clock()

        decisions = [
            throttle.should_record("S", {"disk": True}, t),
            throttle.should_record("S", {"disk": True}, t + timedelta(minutes=5)),
            throttle.should_record("S", {"disk": False}, t + timedelta(minutes=10)),
            throttle.should_record("T", {"disk": False}, t + timedelta(minutes=10)),
            throttle.should_record("S", {"disk": False}, t + timedelta(hours=23)),
            throttle.should_record("S", {"disk": False}, t + timedelta(days=1, minutes=10)),
        ]

        assert [True, False, True, True, False, True] == decisions
