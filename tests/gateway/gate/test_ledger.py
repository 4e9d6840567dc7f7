"""The access ledger's recorder: counts in memory, batches to the store, holds through outages, drops beyond its bound."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.errors import ConfigError
from gateway.gate.ledger import AccessLedger, ledger_entry
from gateway.gate.decide import GateOutcome, Verdict
from gateway.metrics import Metrics
from gateway.config.settings import parse_settings
from gateway.store.base import AccessRollup, AccessVerdict, StoreError
from gateway.store.sqlite import SqliteStore
from policy_engine import Decision, Reason
from policy_engine.decision import Finding
from policy_engine.document import Severity

T0 = datetime(2026, 3, 2, 9, 59, 58, tzinfo=UTC)
A, D = AccessVerdict.ALLOWED, AccessVerdict.DENIED


class FlakyStore:
    """A real SQLite store behind a switch: ``down`` refuses every add; ``lose_ack`` commits the next add, then fails as if the answer was lost."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.down = False
        self.lose_ack = False
        self.pruned_before: list[datetime] = []

    async def add_access_rollups(self, rollups: Sequence[AccessRollup], *, writer: str | None = None, seq: int = 0) -> bool:
        if self.down:
            raise StoreError("the store is unreachable; nothing was stored")
        added = await self.store.add_access_rollups(rollups, writer=writer, seq=seq)
        if self.lose_ack:
            self.lose_ack = False
            raise StoreError("the commit was not confirmed; it may or may not have been stored")
        return added

    def iter_access(self, *, since: datetime, until: datetime | None = None) -> AsyncIterator[AccessRollup]:
        return self.store.iter_access(since=since, until=until)

    async def prune_access(self, *, before: datetime) -> int:
        self.pruned_before.append(before)
        return await self.store.prune_access(before=before)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FlakyStore]:
    opened = await SqliteStore.open(tmp_path / "gatehouse.db")
    yield FlakyStore(opened)
    await opened.close()


async def stored(store: FlakyStore) -> dict[tuple[datetime, str, str, AccessVerdict, str], int]:
    return {(r.hour, r.user, r.device, r.verdict, r.reason): r.count async for r in store.iter_access(since=T0 - timedelta(days=1))}


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def count_many(ledger: AccessLedger, n: int, *, at: datetime = T0, user: str = "alice@example.com", verdict: AccessVerdict = A, reason: str = "") -> None:
    for _ in range(n):
        ledger.count(at, "wiki", "medium", user, "C02ALICE", verdict, reason)


class TestCounting:
    async def test_requests_roll_up_per_hour_key_with_first_and_last_seen(self, store: FlakyStore, metrics: Metrics) -> None:
        """Requests with the same key in one hour make one row; the next hour and another verdict make their own."""
        ledger = AccessLedger(max_pending_rows=100, metrics=metrics)
        count_many(ledger, 3)
        ledger.count(T0 + timedelta(seconds=1), "wiki", "medium", "alice@example.com", "C02ALICE", A, "")
        ledger.count(T0 + timedelta(seconds=3), "wiki", "medium", "alice@example.com", "C02ALICE", A, "")
        ledger.count(T0, "wiki", "medium", "alice@example.com", "C02ALICE", D, "checks-failed")

        flushed = await ledger.flush(store)
        rows = [r async for r in store.iter_access(since=T0 - timedelta(hours=1))]

        hour = T0.replace(minute=0, second=0)
        assert True is flushed
        assert [
            (hour, A, "", 4, T0, T0 + timedelta(seconds=1)),
            (hour, D, "checks-failed", 1, T0, T0),
            (hour + timedelta(hours=1), A, "", 1, T0 + timedelta(seconds=3), T0 + timedelta(seconds=3)),
        ] == sorted(((r.hour, r.verdict, r.reason, r.count, r.first_seen, r.last_seen) for r in rows), key=lambda t: (t[0], t[1] != A))
        assert (0, 1) == (sample(metrics, "gatehouse_ledger_rows_pending"), sample(metrics, "gatehouse_ledger_flushes_total", outcome="stored"))

    async def test_recount_adds_to_a_row_until_it_is_sealed_or_its_hour_ends(self, store: FlakyStore, metrics: Metrics) -> None:
        """A row from count takes recounts while it collects; once flushed, or in the next hour, recount counts nothing and count starts a new row."""
        ledger = AccessLedger(max_pending_rows=100, metrics=metrics)
        row = ledger.count(T0, "wiki", "medium", "alice@example.com", "C02ALICE", A, "")
        before_flush = [ledger.recount(row, T0 + timedelta(microseconds=n)) for n in (1, 2)]
        await ledger.flush(store)
        after_flush = ledger.recount(row, T0 + timedelta(microseconds=3))
        row = ledger.count(T0 + timedelta(microseconds=3), "wiki", "medium", "alice@example.com", "C02ALICE", A, "")
        next_hour = ledger.recount(row, T0 + timedelta(seconds=3))
        ledger.count(T0 + timedelta(seconds=3), "wiki", "medium", "alice@example.com", "C02ALICE", A, "")

        await ledger.flush(store)
        rows = [r async for r in store.iter_access(since=T0 - timedelta(hours=1))]

        hour = T0.replace(minute=0, second=0)
        assert ([True, True], False, False) == (before_flush, after_flush, next_hour)
        assert [
            (hour, 4, T0, T0 + timedelta(microseconds=3)),
            (hour + timedelta(hours=1), 1, T0 + timedelta(seconds=3), T0 + timedelta(seconds=3)),
        ] == sorted((r.hour, r.count, r.first_seen, r.last_seen) for r in rows)
        assert 0 == ledger.requests_pending

    def test_gate_outcomes_map_to_the_ledger_verdicts(self) -> None:
        """Allowed, in grace, nudged, break-glass, monitored and denied outcomes each get their verdict and reason."""
        finding = Finding("firewall", "firewall_enabled", "off", "on", Severity.FAIL, None, "firewall")
        allowed = Decision(allowed=True, tier="medium", reason=Reason.OK)
        denied = Decision(allowed=False, tier="medium", reason=Reason.CHECKS_FAILED, failing=(finding,))

        entries = [
            ledger_entry(GateOutcome(Verdict.ALLOW, "ok", allowed)),
            ledger_entry(GateOutcome(Verdict.ALLOW, "ok", Decision(allowed=True, tier="medium", reason=Reason.OK, in_grace=(finding,)))),
            ledger_entry(GateOutcome(Verdict.ALLOW, "ok", Decision(allowed=True, tier="medium", reason=Reason.OK, nudges=(finding,)))),
            ledger_entry(GateOutcome(Verdict.BREAK_GLASS, "checks-failed", denied)),
            ledger_entry(GateOutcome(Verdict.MONITOR, "checks-failed", denied)),
            ledger_entry(GateOutcome(Verdict.DENY, "device-unowned", denied)),
            ledger_entry(GateOutcome(Verdict.ALLOW, "identity-only", Decision(allowed=True, tier="lobby", reason=Reason.IDENTITY_ONLY))),
        ]

        assert [
            (A, ""), (AccessVerdict.GRACE, "in-grace"), (AccessVerdict.GRACE, "nudge"),
            (AccessVerdict.BREAK_GLASS, "checks-failed"), (AccessVerdict.MONITOR, "checks-failed"), (D, "device-unowned"),
            (A, "identity-only"),
        ] == entries


class TestOutages:
    async def test_an_outage_holds_the_counts_and_the_next_flush_stores_them_once(self, store: FlakyStore, metrics: Metrics) -> None:
        """A refused flush keeps its batch; requests meanwhile add to new rows; once the store is back everything is stored once."""
        ledger = AccessLedger(max_pending_rows=100, metrics=metrics)
        count_many(ledger, 5)
        store.down = True
        during = await ledger.flush(store)
        count_many(ledger, 2)
        pending_during = (ledger.rows_pending, ledger.requests_pending)
        store.down = False

        after = await ledger.flush(store)

        hour = T0.replace(minute=0, second=0)
        assert (False, True) == (during, after)
        assert (2, 7) == pending_during
        assert {(hour, "alice@example.com", "C02ALICE", A, ""): 7} == await stored(store)
        assert (1, 2) == (sample(metrics, "gatehouse_ledger_flushes_total", outcome="failed"), sample(metrics, "gatehouse_ledger_flushes_total", outcome="stored"))

    async def test_a_batch_whose_commit_was_not_confirmed_is_not_counted_twice(self, store: FlakyStore, metrics: Metrics) -> None:
        """The store committed but the answer was lost: the retried batch is recognised and nothing is added again."""
        ledger = AccessLedger(max_pending_rows=100, metrics=metrics)
        count_many(ledger, 4)
        store.lose_ack = True
        first = await ledger.flush(store)

        second = await ledger.flush(store)

        assert (False, True) == (first, second)
        assert [4] == list((await stored(store)).values())
        assert 1 == sample(metrics, "gatehouse_ledger_flushes_total", outcome="already-stored")

    async def test_beyond_the_bound_new_rows_are_dropped_counted_and_logged(self, store: FlakyStore, metrics: Metrics) -> None:
        """With the bound reached during an outage, requests needing a new row are dropped, counted and logged as an error; existing rows still count."""
        ledger = AccessLedger(max_pending_rows=3, metrics=metrics)
        store.down = True
        for user in ("a", "b"):
            count_many(ledger, 1, user=user)
        await ledger.flush(store)  # two rows held
        count_many(ledger, 2, user="c")  # the third row
        count_many(ledger, 1, user="d")  # over the bound: dropped
        count_many(ledger, 4, user="e")  # dropped
        count_many(ledger, 5, user="a")  # a new row too (the held one is sealed): dropped
        store.down = False

        with capture_logs() as logs:
            await ledger.flush(store)

        got = await stored(store)
        assert {"a": 1, "b": 1, "c": 2} == {user: n for (_, user, *_), n in got.items()}
        assert 10 == sample(metrics, "gatehouse_ledger_dropped_requests_total")
        assert [("error", 10, 3)] == [
            (e["log_level"], e["dropped"], e["max_pending_rows"]) for e in logs if e["event"] == "ledger.requests_dropped"
        ]

    async def test_prune_runs_hourly_with_the_retention(self, store: FlakyStore, metrics: Metrics) -> None:
        """Pruning deletes hours older than the retention, at most once an hour."""
        ledger = AccessLedger(max_pending_rows=100, metrics=metrics)
        count_many(ledger, 1, at=T0 - timedelta(days=401))
        count_many(ledger, 1, at=T0 - timedelta(days=399))
        await ledger.flush(store)

        first = await ledger.prune(store, retention_days=400, now=T0)
        too_soon = await ledger.prune(store, retention_days=400, now=T0 + timedelta(minutes=59))
        due = await ledger.prune(store, retention_days=400, now=T0 + timedelta(hours=1))

        assert (1, None, 0) == (first, too_soon, due)
        assert [T0 - timedelta(days=400), T0 + timedelta(hours=1) - timedelta(days=400)] == store.pruned_before
        assert 1 == len([r async for r in store.iter_access(since=T0 - timedelta(days=500))])


class TestSettings:
    def test_every_bad_ledger_setting_is_reported_with_its_location(self, tmp_path: Path) -> None:
        """A zero flush period, a tiny bound and a zero retention are each reported under `evidence.`."""
        raw = {
            "listeners": [{"address": "127.0.0.1:0"}],
            "evidence": {"ledger_flush_s": 0, "ledger_max_pending_rows": 5, "ledger_retention_days": 0},
        }

        with pytest.raises(ConfigError) as caught:
            parse_settings(raw, source="gatehouse.yaml", base_dir=tmp_path, environ={})

        assert {"evidence.ledger_flush_s", "evidence.ledger_max_pending_rows", "evidence.ledger_retention_days"} == {
            p.path for p in caught.value.problems
        }

    def test_defaults_keep_an_annual_audit_and_lose_at_most_five_seconds(self, tmp_path: Path) -> None:
        """Without an `evidence` section the ledger flushes every 5 s, holds 100,000 rows and keeps 400 days."""
        settings = parse_settings({"listeners": [{"address": "127.0.0.1:0"}]}, source="g.yaml", base_dir=tmp_path, environ={})

        assert (5.0, 100_000, 400) == (
            settings.evidence.ledger_flush_s, settings.evidence.ledger_max_pending_rows, settings.evidence.ledger_retention_days,
        )
