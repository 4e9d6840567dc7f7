"""An in-memory LedgerStore and HistoryStore for the report's tests.

The access ledger's SQLite and PostgreSQL backends are being built in parallel; once they are merged,
the tests that use ``MemoryLedger`` for the store round trip should use the real store instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime

from gateway.store.base import AccessRollup, HistoryEntry


class MemoryLedger:
    """Rollups kept in a list; adding sums counts of the same row, as the real backends do."""

    def __init__(self, rollups: Sequence[AccessRollup] = ()) -> None:
        self.rows: list[AccessRollup] = list(rollups)

    async def add_access_rollups(self, rollups: Sequence[AccessRollup]) -> None:
        self.rows.extend(rollups)

    async def iter_access(self, *, since: datetime, until: datetime | None = None) -> AsyncIterator[AccessRollup]:
        for r in sorted(self.rows, key=lambda r: r.hour):
            if r.hour >= since and (until is None or r.hour < until):
                yield r

    async def prune_access(self, *, before: datetime) -> int:
        kept = [r for r in self.rows if r.hour >= before]
        gone, self.rows = len(self.rows) - len(kept), kept
        return gone


class MemoryHistory:
    """History entries in a list, served in [since, until) oldest first."""

    def __init__(self, entries: Sequence[HistoryEntry] = ()) -> None:
        self.entries = list(entries)

    async def iter_history(self, *, since: datetime, until: datetime | None = None) -> AsyncIterator[HistoryEntry]:
        for e in sorted(self.entries, key=lambda e: e.recorded_at):
            if e.recorded_at >= since and (until is None or e.recorded_at < until):
                yield e
