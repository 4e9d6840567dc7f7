"""Evidence export: the compliance history of a period as CSV or JSON lines."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from gateway.report.evidence import export_evidence
from gateway.store.base import HistoryEntry
from gateway.store.sqlite import SqliteStore
from tests.gateway.store.snapshots import T0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await SqliteStore.open(tmp_path / "g.db")
    await opened.record_compliance(HistoryEntry("OLD1", ("old@example.com",), T0 - timedelta(days=3), {"disk": True}))
    await opened.record_compliance(HistoryEntry("C02XK0AAJGH6", ("bob@example.com", "it@example.com"), T0, {"firewall": True, "disk": False}))
    await opened.record_compliance(HistoryEntry("=cmd|x", ("@evil",), T0 + timedelta(hours=1), {"disk": True}))
    yield opened
    await opened.close()


class TestExportEvidence:
    async def test_csv_has_one_row_per_check(self, store: SqliteStore) -> None:
        """CSV lists device, owners, time, check and pass/fail for each evaluation in the period."""
        out = io.StringIO()

        written = await export_evidence(store, T0 - timedelta(days=1), "csv", out)

        rows = list(csv.reader(io.StringIO(out.getvalue())))
        assert 2 == written
        assert [
            ["device", "owners", "time", "check", "result"],
            ["C02XK0AAJGH6", "bob@example.com;it@example.com", "2026-11-22T14:00:00Z", "disk", "fail"],
            ["C02XK0AAJGH6", "bob@example.com;it@example.com", "2026-11-22T14:00:00Z", "firewall", "pass"],
            ["'=cmd|x", "'@evil", "2026-11-22T15:00:00Z", "disk", "pass"],
        ] == rows

    async def test_jsonl_has_one_object_per_evaluation(self, store: SqliteStore) -> None:
        """JSON lines carry the checks of one evaluation and whether all passed."""
        out = io.StringIO()

        await export_evidence(store, date(2026, 11, 22), "jsonl", out, until=T0 + timedelta(minutes=30))

        assert [{
            "device": "C02XK0AAJGH6",
            "owners": ["bob@example.com", "it@example.com"],
            "time": "2026-11-22T14:00:00Z",
            "compliant": False,
            "checks": {"disk": "fail", "firewall": "pass"},
        }] == [orjson.loads(line) for line in out.getvalue().splitlines()]

    async def test_pruned_history_is_not_exported(self, store: SqliteStore) -> None:
        """After pruning to the retention period, older evaluations are gone from the evidence."""
        await store.prune_history(before=T0 - timedelta(days=2))
        out = io.StringIO()

        written = await export_evidence(store, T0 - timedelta(days=90), "jsonl", out)

        assert 2 == written
        assert "OLD1" not in out.getvalue()

    async def test_unknown_format_and_naive_time_are_refused(self, store: SqliteStore) -> None:
        """Only csv and jsonl exist, and times must carry a timezone."""
        with pytest.raises(ValueError, match="use `csv` or `jsonl`"):
            await export_evidence(store, T0, "xml", io.StringIO())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="has no timezone"):
            await export_evidence(store, datetime(2026, 1, 1), "csv", io.StringIO())

    async def test_aware_non_utc_since_is_converted(self, store: SqliteStore) -> None:
        """A since with another offset is the same instant in UTC."""
        from datetime import timezone

        out = io.StringIO()

        written = await export_evidence(store, datetime(2026, 11, 22, 15, 30, tzinfo=timezone(timedelta(hours=1))), "jsonl", out)

        assert (1, True) == (written, "=cmd|x" in out.getvalue())
        assert UTC == datetime.fromisoformat(orjson.loads(out.getvalue())["time"].replace("Z", "+00:00")).tzinfo
