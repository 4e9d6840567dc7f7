"""Tests for breakglass/audit.py: the hash chain, the reference sink, verification and export."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from datetime import timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from breakglass import (
    CSV_COLUMNS,
    GENESIS_HASH,
    GENESIS_HEAD,
    AuditEntry,
    AuditIntegrityError,
    ChainHead,
    EventKind,
    InMemoryAuditSink,
    Scope,
    TamperKind,
    decode_entry,
    encode_entry,
    entry_hash,
    export_entries,
    seal,
    verify,
    verify_sink,
)
from tests.breakglass.factories import NOW, make_chain, make_event
from tests.breakglass.sink_contract import AuditSinkContract


def reseal_from(entries: list[AuditEntry], start: int) -> list[AuditEntry]:
    """Recompute hashes from position ``start`` on, as a careful forger would."""
    out = entries[:start]
    prev = out[-1].hash if out else GENESIS_HASH
    for entry in entries[start:]:
        digest = entry_hash(entry.seq, prev, entry.event)
        out.append(replace(entry, prev_hash=prev, hash=digest))
        prev = digest
    return out


class TestChain:
    def test_seal_links_each_entry_to_the_one_before(self) -> None:
        """Sealed entries number from 1 and carry the previous entry's hash."""
        chain = make_chain(3)

        assert [1, 2, 3] == [e.seq for e in chain]
        assert [GENESIS_HASH, chain[0].hash, chain[1].hash] == [e.prev_hash for e in chain]

    def test_canonical_form_is_sorted_orjson_sha256(self) -> None:
        """The hash is SHA-256 over the key-sorted JSON of v, seq, prev_hash and event."""
        import hashlib

        entry = make_chain(1)[0]
        stored = orjson.loads(encode_entry(entry))
        del stored["hash"]

        digest = hashlib.sha256(orjson.dumps(stored, option=orjson.OPT_SORT_KEYS)).hexdigest()

        assert entry.hash == digest
        assert {"v", "seq", "prev_hash", "event"} == set(stored)
        assert "2026-11-22T03:01:00.000000+00:00" == stored["event"]["at"]

    def test_encode_then_decode_gives_the_same_entry(self) -> None:
        """An encoded entry decodes to an equal entry, route sets and failing checks included."""
        event = make_event(scope=Scope.for_route_set("billing-admin", frozenset({"b", "a"}), tier="high"),
                           flags=frozenset({"repeat-user"}))
        entry = seal([event], head=GENESIS_HEAD)[0]

        decoded = decode_entry(encode_entry(entry))

        assert entry == decoded

    def test_decode_refuses_unknown_keys(self) -> None:
        """A stored entry with an extra key is unreadable rather than silently trimmed."""
        stored = orjson.loads(encode_entry(make_chain(1)[0]))
        stored["event"]["note"] = "hello"

        with pytest.raises(AuditIntegrityError, match="unreadable audit entry"):
            decode_entry(orjson.dumps(stored))

    def test_naive_datetimes_are_refused(self) -> None:
        """Events need timezone-aware times, so the encoding is unambiguous."""
        with pytest.raises(ValueError, match="no timezone"):
            make_event(at=NOW.replace(tzinfo=None))


class TestInMemoryAuditSink(AuditSinkContract):
    @pytest.fixture
    def sink(self) -> InMemoryAuditSink:
        """An empty in-memory sink."""
        return InMemoryAuditSink()

    async def test_a_bad_batch_is_not_partly_written(self, sink: InMemoryAuditSink) -> None:
        """A batch with a wrong hash anywhere is refused entirely."""
        chain = list(make_chain(2))
        chain[1] = replace(chain[1], hash="f" * 64)

        with pytest.raises(ValueError, match="wrong hash"):
            await sink.append(chain)

        assert GENESIS_HEAD == await sink.head()
        assert () == tuple(await sink.entries())


class TestVerify:
    def test_untouched_chain_verifies(self) -> None:
        """A chain as written verifies against its head."""
        chain = make_chain(5)

        report = verify(chain, expected_head=chain[-1].head)

        assert True is report.ok
        assert (5, chain[-1].head) == (report.checked, report.head)

    def test_empty_log_verifies(self) -> None:
        """An empty log with the genesis head is fine."""
        assert True is verify([], expected_head=GENESIS_HEAD).ok

    def test_modified_entry_is_named(self) -> None:
        """Changing an entry's content without its hash is reported as modified at that entry."""
        chain = list(make_chain(5))
        chain[2] = replace(chain[2], event=replace(chain[2].event, reason="nothing to see here, move along"))

        report = verify(chain, expected_head=make_chain(5)[-1].head)

        assert [(TamperKind.MODIFIED, 3)] == [(p.kind, p.seq) for p in report.problems]
        assert "entry 3" in str(report.problems[0])

    def test_modified_and_rehashed_entry_is_named(self) -> None:
        """Rewriting an entry with a fresh hash breaks the next link, and that entry is named."""
        chain = list(make_chain(5))
        forged = replace(chain[2].event, actor="mallory")
        chain[2] = replace(chain[2], event=forged, hash=entry_hash(3, chain[2].prev_hash, forged))

        report = verify(chain, expected_head=chain[-1].head)

        assert [(TamperKind.MODIFIED, 3)] == [(p.kind, p.seq) for p in report.problems]

    def test_deleted_entry_is_named(self) -> None:
        """A missing entry in the middle is reported as deleted, with its seq."""
        chain = list(make_chain(5))
        del chain[2]

        report = verify(chain, expected_head=chain[-1].head)

        assert [(TamperKind.DELETED, 3)] == [(p.kind, p.seq) for p in report.problems]
        assert "entry 3 is missing" in report.problems[0].message

    def test_deleted_first_entry_is_named(self) -> None:
        """Deleting the first entry is reported too."""
        chain = list(make_chain(3))[1:]

        report = verify(chain, expected_head=chain[-1].head)

        assert [(TamperKind.DELETED, 1)] == [(p.kind, p.seq) for p in report.problems]

    def test_several_deleted_entries_are_named_as_a_range(self) -> None:
        """Deleting entries 2 to 4 names the whole range once."""
        chain = list(make_chain(6))
        del chain[1:4]

        report = verify(chain, expected_head=chain[-1].head)

        assert [(TamperKind.DELETED, 2)] == [(p.kind, p.seq) for p in report.problems]
        assert "entries 2 to 4 are missing" in report.problems[0].message

    def test_inserted_entry_is_named(self) -> None:
        """A well-formed entry slipped between 3 and 4 is reported as inserted."""
        chain = list(make_chain(5))
        forged = seal([make_event(grant_id="g-forged")], head=chain[2].head)[0]
        chain.insert(3, forged)

        report = verify(chain, expected_head=chain[-1].head)

        assert [(TamperKind.INSERTED, 4)] == [(p.kind, p.seq) for p in report.problems]
        assert "`g-forged`" in report.problems[0].message

    def test_inserted_entry_after_its_twin_is_named(self) -> None:
        """An extra entry stored after the genuine one with the same seq is reported as inserted."""
        chain = list(make_chain(5))
        forged = seal([make_event(grant_id="g-forged")], head=chain[2].head)[0]
        chain.insert(4, forged)

        report = verify(chain, expected_head=make_chain(5)[-1].head)

        assert [(TamperKind.INSERTED, 4)] == [(p.kind, p.seq) for p in report.problems]
        assert "`g-forged`" in report.problems[0].message

    def test_entry_appended_without_moving_the_head_is_inserted(self) -> None:
        """A forged entry chained onto the end is caught by the stored head."""
        chain = list(make_chain(3))
        head = chain[-1].head
        chain.append(seal([make_event(grant_id="g-forged")], head=head)[0])

        report = verify(chain, expected_head=head)

        assert [(TamperKind.INSERTED, 4)] == [(p.kind, p.seq) for p in report.problems]

    def test_reordered_entries_are_named(self) -> None:
        """Swapping two stored entries is reported as reordered, naming them."""
        chain = list(make_chain(5))
        chain[2], chain[3] = chain[3], chain[2]

        report = verify(chain, expected_head=make_chain(5)[-1].head)

        assert [(TamperKind.REORDERED, 3)] == [(p.kind, p.seq) for p in report.problems]
        assert "entry 3 is stored after entry 4" in report.problems[0].message

    def test_reordered_and_renumbered_entries_are_named(self) -> None:
        """Swapping two events and renumbering them to hide it is still named as a swap."""
        chain = list(make_chain(5))
        third, fourth = chain[2], chain[3]
        chain[2] = replace(fourth, seq=3)
        chain[3] = replace(third, seq=4)

        report = verify(chain, expected_head=make_chain(5)[-1].head)

        assert TamperKind.REORDERED in report.kinds()
        assert {3} == {p.seq for p in report.problems if p.kind is TamperKind.REORDERED}

    def test_truncated_tail_is_named_when_the_head_is_given(self) -> None:
        """Removing the last entries is caught by comparing with the stored head."""
        full = make_chain(5)

        report = verify(full[:3], expected_head=full[-1].head)

        assert [(TamperKind.TRUNCATED, 4)] == [(p.kind, p.seq) for p in report.problems]
        assert "entries 4 to 5 were removed from the end" in report.problems[0].message

    def test_truncation_is_invisible_without_the_head(self) -> None:
        """Without the stored head a shorter log cannot be told from a truncated one."""
        assert True is verify(make_chain(5)[:3]).ok

    def test_rewritten_chain_is_caught_by_the_head(self) -> None:
        """Rewriting an entry and rehashing everything after it still disagrees with the stored head."""
        chain = list(make_chain(5))
        head = chain[-1].head
        chain[1] = replace(chain[1], event=replace(chain[1].event, reason="rewritten history, all of it"))
        forged = reseal_from(chain, 1)

        report = verify(forged, expected_head=head)

        assert [(TamperKind.MODIFIED, 5)] == [(p.kind, p.seq) for p in report.problems]

    @given(st.integers(min_value=1, max_value=10), st.data())
    def test_any_single_tampering_is_named_exactly(self, length: int, data: st.DataObject) -> None:
        """Deleting, modifying, inserting or swapping any one entry is reported as that, at that entry."""
        chain = list(make_chain(length))
        head = chain[-1].head
        i = data.draw(st.integers(min_value=0, max_value=length - 1), label="position")
        tampering = data.draw(st.sampled_from(["delete", "modify", "insert-before", "insert-after", "swap"]))
        if tampering == "delete":
            del chain[i]
            expected = [(TamperKind.TRUNCATED if i == length - 1 else TamperKind.DELETED, i + 1)]
        elif tampering == "modify":
            chain[i] = replace(chain[i], event=replace(chain[i].event, actor="mallory"))
            expected = [(TamperKind.MODIFIED, i + 1)]
        elif tampering.startswith("insert"):
            after = chain[i - 1].head if i else GENESIS_HEAD
            chain.insert(i if tampering == "insert-before" else i + 1,
                         seal([make_event(grant_id="g-forged")], head=after)[0])
            expected = [(TamperKind.INSERTED, i + 1)]
        else:
            if i == length - 1:
                return
            chain[i], chain[i + 1] = chain[i + 1], chain[i]
            expected = [(TamperKind.REORDERED, i + 1)]

        report = verify(chain, expected_head=head)

        assert expected == [(p.kind, p.seq) for p in report.problems]

    @given(st.lists(st.integers(min_value=0, max_value=12), max_size=12), st.integers(min_value=0, max_value=12))
    def test_verify_never_raises(self, order: list[int], head_seq: int) -> None:
        """Whatever subset and order of entries it is given, verify reports instead of raising."""
        chain = make_chain(12)
        picked = [chain[i] for i in order if i < len(chain)]
        head = chain[head_seq - 1].head if head_seq else GENESIS_HEAD

        report = verify(picked, expected_head=head)

        assert len(picked) == report.checked


class TestExport:
    def test_jsonl_lines_decode_and_verify(self) -> None:
        """Each JSONL line is a stored entry; read back, the export verifies."""
        chain = make_chain(3)

        lines = list(export_entries(chain, fmt="jsonl"))

        assert all(line.endswith("\n") for line in lines)
        assert True is verify([decode_entry(line) for line in lines], expected_head=chain[-1].head).ok

    def test_since_keeps_entries_at_or_after_the_date(self) -> None:
        """`--since` keeps entries at or after the given time."""
        chain = make_chain(4)

        lines = list(export_entries(chain, fmt="jsonl", since=NOW + timedelta(minutes=3)))

        assert [3, 4] == [decode_entry(line).seq for line in lines]

    def test_csv_has_a_header_and_one_row_per_entry(self) -> None:
        """CSV starts with the column names, then each entry with its failing checks."""
        chain = make_chain(2)

        rows = list(csv.reader(io.StringIO("".join(export_entries(chain, fmt="csv")))))

        assert list(CSV_COLUMNS) == rows[0]
        assert 3 == len(rows)
        row = dict(zip(rows[0], rows[1]))
        assert ("1", "requested", "g-1", "1800") == (row["seq"], row["kind"], row["grant_id"], row["duration_s"])
        assert "os-outdated: macOS 13.1, needs 14.2; disk-unencrypted: FileVault off" == row["failing_checks"]

    def test_csv_defuses_spreadsheet_formulas(self) -> None:
        """A reason starting with `=` is exported with a leading quote so spreadsheets do not run it."""
        entry = seal([make_event(reason='=HYPERLINK("http://evil")')], head=GENESIS_HEAD)[0]

        rows = list(csv.reader(io.StringIO("".join(export_entries([entry], fmt="csv")))))

        assert "'=HYPERLINK(\"http://evil\")" == dict(zip(rows[0], rows[1]))["reason"]

    def test_multiline_reason_stays_one_record(self) -> None:
        """A reason with a newline is quoted, so the CSV still has one record per entry."""
        entry = seal([make_event(reason="line one is long enough\nline two")], head=GENESIS_HEAD)[0]

        rows = list(csv.reader(io.StringIO("".join(export_entries([entry], fmt="csv")))))

        assert 2 == len(rows)

    def test_unknown_format_is_refused(self) -> None:
        """Only jsonl and csv exist."""
        with pytest.raises(ValueError, match="`xml`"):
            list(export_entries(make_chain(1), fmt="xml"))  # type: ignore[arg-type]


def test_event_kinds_cover_the_issue() -> None:
    """Every kind of entry the issue lists exists."""
    expected = {"requested", "granted", "pending", "approved", "rejected", "first_use", "expired",
                "ended", "revoked", "reviewed"}

    assert expected == {k.value for k in EventKind}


def test_chain_head_of_an_empty_log_is_genesis() -> None:
    """The genesis head is seq 0 with the all-zero hash."""
    assert ChainHead(0, "0" * 64) == GENESIS_HEAD


class RacingSink(InMemoryAuditSink):
    """A sink where another writer appends right after the entries are read."""

    def __init__(self, entries: tuple[AuditEntry, ...], late: tuple[AuditEntry, ...]) -> None:
        super().__init__(entries)
        self._late = late

    async def entries(self, *, after_seq: int = 0) -> tuple[AuditEntry, ...]:
        read = tuple(await super().entries(after_seq=after_seq))
        if self._late:
            late, self._late = self._late, ()
            await self.append(late)
        return read


class TestVerifySink:
    async def test_clean_sink_verifies(self) -> None:
        """A sink as written verifies."""
        sink = InMemoryAuditSink(make_chain(4))

        report = await verify_sink(sink)

        assert (True, 4) == (report.ok, report.checked)

    async def test_append_during_verification_is_not_tampering(self) -> None:
        """An entry appended between reading the entries and the head is not mistaken for truncation."""
        chain = make_chain(5)
        sink = RacingSink(chain[:4], chain[4:])

        report = await verify_sink(sink)

        assert True is report.ok

    async def test_truncated_sink_is_named(self) -> None:
        """A sink whose entries stop before its head is reported as truncated."""
        chain = make_chain(5)
        sink = InMemoryAuditSink(chain)
        sink._entries = list(chain[:3])  # what an attacker with file access would do

        report = await verify_sink(sink)

        assert {TamperKind.TRUNCATED} == report.kinds()

    async def test_entry_beyond_the_head_is_named(self) -> None:
        """An entry chained onto the end without moving the head is reported as inserted."""
        chain = make_chain(3)
        sink = InMemoryAuditSink(chain)
        sink._head = chain[1].head

        report = await verify_sink(sink)

        assert [(TamperKind.INSERTED, 3)] == [(p.kind, p.seq) for p in report.problems]
