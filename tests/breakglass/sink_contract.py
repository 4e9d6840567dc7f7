"""The behaviour every ``AuditSink`` must have, as a test class store backends reuse.

Subclass it next to a backend's tests and provide the ``sink`` fixture::

    class TestSqliteAuditSink(AuditSinkContract):
        @pytest.fixture
        async def sink(self, tmp_path):
            store = await open_sqlite(tmp_path / "gatehouse.db")
            yield store.audit
            await store.close()

For durability across ``kill -9``, backends add their own test (a child process acknowledges an
append, is killed, and the entry must be there when the store is reopened).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from breakglass import (
    GENESIS_HEAD,
    AuditConflict,
    AuditSink,
    FailingCheck,
    Scope,
    seal,
    verify,
)
from tests.breakglass.factories import NOW, make_chain, make_event


class AuditSinkContract:
    """Tests any AuditSink must pass; subclasses provide an empty ``sink`` fixture."""

    async def test_empty_sink_has_the_genesis_head(self, sink: AuditSink) -> None:
        """A new log has no entries and the genesis head."""
        assert (GENESIS_HEAD, ()) == (await sink.head(), tuple(await sink.entries()))

    async def test_entries_come_back_exactly_and_in_order(self, sink: AuditSink) -> None:
        """Appended entries read back equal, in seq order, and move the head."""
        chain = make_chain(3)

        await sink.append(chain[:2])
        await sink.append(chain[2:])

        assert chain == tuple(await sink.entries())
        assert chain[2:] == tuple(await sink.entries(after_seq=2))
        assert chain[2].head == await sink.head()

    async def test_every_field_survives_storage(self, sink: AuditSink) -> None:
        """Route sets, flags, failing checks, expiry and non-ASCII text are stored unchanged."""
        event = make_event(
            scope=Scope.for_route_set("billing-admin", frozenset({"ledger", "billing"}), tier="high"),
            reason="Ausfall der Datenbank — 🚨 paged", flags=frozenset({"repeat-user"}),
            failing_checks=(FailingCheck("os-outdated", "macOS 13.1 < 14.2"),),
            duration=timedelta(minutes=45), expires_at=NOW + timedelta(minutes=45),
        )
        entries = seal([event], head=GENESIS_HEAD)

        await sink.append(entries)

        assert entries == tuple(await sink.entries())

    async def test_stale_head_conflicts_and_writes_nothing(self, sink: AuditSink) -> None:
        """A batch sealed after an old head is refused with AuditConflict, nothing stored."""
        await sink.append(seal([make_event(grant_id="g-1")], head=GENESIS_HEAD))
        stale = seal([make_event(grant_id="g-2"), make_event(grant_id="g-3")], head=GENESIS_HEAD)

        with pytest.raises(AuditConflict):
            await sink.append(stale)

        assert 1 == len(await sink.entries())

    async def test_right_seq_wrong_predecessor_conflicts(self, sink: AuditSink) -> None:
        """A batch whose prev_hash is not the head's hash is refused even when its seq fits."""
        await sink.append(seal([make_event(grant_id="g-1")], head=GENESIS_HEAD))
        forked = seal([make_event(grant_id="g-2")], head=replace(GENESIS_HEAD, seq=1))

        with pytest.raises(AuditConflict):
            await sink.append(forked)

        assert 1 == len(await sink.entries())

    async def test_racing_writers_keep_the_chain_linear(self, sink: AuditSink) -> None:
        """Of two batches sealed after the same head, one is stored and the other conflicts."""
        head = await sink.head()
        first = seal([make_event(grant_id="g-a"), make_event(grant_id="g-a", actor="x")], head=head)
        second = seal([make_event(grant_id="g-b")], head=head)

        results = await asyncio.gather(sink.append(first), sink.append(second), return_exceptions=True)

        assert 1 == sum(isinstance(r, AuditConflict) for r in results)
        assert True is verify(await sink.entries(), expected_head=await sink.head()).ok
