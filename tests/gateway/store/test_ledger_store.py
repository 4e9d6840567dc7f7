"""The LedgerStore contract, run against every backend: counts add up, retries add once, a period reads back in pages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from gateway.store import Store
from gateway.store.base import AccessRollup, AccessVerdict, LedgerStore
from tests.gateway.store.conftest import Backend

HOUR = datetime(2026, 3, 2, 9, tzinfo=UTC)


def rollup(
    *, hour: datetime = HOUR, user: str = "alice@example.com", device: str = "C02ALICE", verdict: AccessVerdict = AccessVerdict.ALLOWED,
    reason: str = "", count: int = 1, first: int = 5, last: int = 10, route: str = "wiki",
) -> AccessRollup:
    return AccessRollup(
        hour, route, "medium", user, device, verdict, reason, count,
        hour + timedelta(minutes=first, microseconds=1), hour + timedelta(minutes=last, microseconds=2),
    )


async def read_all(store: Store, since: datetime = HOUR - timedelta(days=1), until: datetime | None = None) -> list[AccessRollup]:
    return [r async for r in store.iter_access(since=since, until=until)]


class TestAccessLedger:
    async def test_adds_sum_counts_and_widen_first_and_last_seen(self, store: Store) -> None:
        """Adding to an existing row adds the count and keeps the earliest first and latest last seen, to the microsecond."""
        denied = rollup(verdict=AccessVerdict.DENIED, reason="checks-failed", count=2)
        await store.add_access_rollups([rollup(count=3, first=5, last=10), denied])

        await store.add_access_rollups([rollup(count=4, first=1, last=7)])

        assert {denied, rollup(count=7, first=1, last=10)} == set(await read_all(store))

    async def test_a_period_reads_oldest_hour_first_within_since_and_until(self, store: Store) -> None:
        """``iter_access`` returns the hours in [since, until), oldest first."""
        hours = [HOUR + timedelta(hours=n) for n in (3, 0, 2, 1)]
        await store.add_access_rollups([rollup(hour=h) for h in hours])

        got = await read_all(store, since=HOUR + timedelta(hours=1), until=HOUR + timedelta(hours=3))

        assert [HOUR + timedelta(hours=1), HOUR + timedelta(hours=2)] == [r.hour for r in got]

    async def test_a_large_period_is_read_whole_in_pages(self, store: Store, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        """Rows beyond one page come back once each, in key order, however the page boundary falls."""
        monkeypatch.setattr(backend.module, "_ACCESS_PAGE", 7)
        rows = [rollup(hour=HOUR + timedelta(hours=h), user=f"u{u:02d}@example.com") for h in range(3) for u in range(10)]
        await store.add_access_rollups(rows)

        got = await read_all(store)

        assert rows == got

    async def test_a_retried_batch_is_added_once_per_writer_and_seq(self, store: Store) -> None:
        """A writer's batch number is added at most once: a retry (or an older number) adds nothing and says so."""
        first = await store.add_access_rollups([rollup(count=2)], writer="w1", seq=1)
        retried = await store.add_access_rollups([rollup(count=2)], writer="w1", seq=1)
        other_writer = await store.add_access_rollups([rollup(count=5)], writer="w2", seq=1)
        next_batch = await store.add_access_rollups([rollup(count=1)], writer="w1", seq=2)
        older = await store.add_access_rollups([rollup(count=100)], writer="w1", seq=1)

        assert (True, False, True, True, False) == (first, retried, other_writer, next_batch, older)
        assert [8] == [r.count for r in await read_all(store)]

    async def test_concurrent_writers_on_two_connections_never_lose_a_count(self, store: Store, backend: Backend) -> None:
        """Two stores (as two replicas) adding overlapping rows at the same time: every count is kept."""
        other = await backend.open()
        users = [f"u{n}@example.com" for n in range(20)]
        try:
            await asyncio.gather(*(
                target.add_access_rollups([rollup(user=u, count=1) for u in (users if n % 2 else users[::-1])], writer=f"w{n}", seq=1)
                for n, target in enumerate([store, other] * 10)
            ))
        finally:
            await other.close()

        got = await read_all(store)

        assert {u: 20 for u in users} == {r.user: r.count for r in got}

    async def test_prune_removes_only_older_hours(self, store: Store) -> None:
        """Pruning deletes rows whose hour is before the cut and says how many went."""
        await store.add_access_rollups([rollup(hour=HOUR - timedelta(hours=2)), rollup(hour=HOUR - timedelta(hours=1)), rollup()])

        deleted = await store.prune_access(before=HOUR - timedelta(hours=1))
        again = await store.prune_access(before=HOUR - timedelta(hours=1))

        assert (1, 0) == (deleted, again)
        assert [HOUR - timedelta(hours=1), HOUR] == [r.hour for r in await read_all(store)]

    async def test_every_verdict_and_reason_survives_a_reopen(self, store: Store, backend: Backend) -> None:
        """Each verdict reads back as the same enum value, with its reason, after the store is reopened."""
        rows = [rollup(user="", device="", verdict=v, reason=f"r-{v.value}") for v in AccessVerdict]
        await store.add_access_rollups(rows)
        await store.close()
        reopened = await backend.open()
        try:
            got = await read_all(reopened)
        finally:
            await reopened.close()

        assert sorted(rows, key=lambda r: r.verdict.value) == sorted(got, key=lambda r: r.verdict.value)

    async def test_the_backend_implements_the_ledger_protocol(self, store: Store) -> None:
        """Both backends satisfy LedgerStore (as part of Store)."""
        assert isinstance(store, LedgerStore)
