"""The functions behind `gatehouse audit verify|export` and `gatehouse break-glass list`."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta

import orjson
import pytest

from breakglass import (
    AuditEntry,
    ChainHead,
    BreakglassService,
    GrantRequest,
    InMemoryAuditSink,
    Scope,
    TierMode,
    TierRule,
    decode_entry,
    verify,
)
from gateway.cli.audit_cli import export_audit, list_grants, parse_since, verify_audit
from tests.gateway.web.breakglass.support import NOW, REASON, make_settings

ALLOWED = TierRule(TierMode.ALLOWED, max_duration=timedelta(hours=4))


async def filled() -> tuple[InMemoryAuditSink, BreakglassService]:
    """A log with two grants (alice at NOW, bob a day later) and a review."""
    sink = InMemoryAuditSink()
    service = BreakglassService(sink, config=make_settings().to_config())
    for user, at in (("alice", NOW), ("bob", NOW + timedelta(days=1))):
        await service.request(GrantRequest(user=user, user_email=f"{user}@example.com", device_serial="SER",
                                           scope=Scope.for_tier("low"), reason=REASON,
                                           duration=timedelta(minutes=30)), rule=ALLOWED, now=at)
    return sink, service


class Tampered:
    """A read-only sink returning a changed copy of another sink's entries, as a tampered store would."""

    def __init__(self, sink: InMemoryAuditSink, change: Callable[[list[AuditEntry]], list[AuditEntry]]) -> None:
        head, entries = sink.snapshot()
        self._head = head
        self._entries = change(list(entries))

    async def entries(self, *, after_seq: int = 0) -> Sequence[AuditEntry]:
        return [e for e in self._entries if e.seq > after_seq]

    async def head(self) -> ChainHead:
        return self._head

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        raise OSError("read-only")


class TestVerify:
    async def test_intact_log_passes(self) -> None:
        """An untouched log exits 0 with the number of entries checked."""
        sink, _ = await filled()

        code, text = await verify_audit(sink)

        assert 0 == code
        assert text.startswith("audit log ok: 4 entries checked, head at entry 4")

    @pytest.mark.parametrize(("name", "change", "seq", "kind"), [
        ("modified", lambda es: [es[0], replace(es[1], event=replace(es[1].event, reason="edited")), *es[2:]], 2, "modified"),
        ("deleted", lambda es: [es[0], *es[2:]], 2, "deleted"),
        ("truncated", lambda es: es[:-1], 4, "truncated"),
        ("reordered", lambda es: [es[0], es[2], es[1], es[3]], 2, "reordered"),
    ])
    async def test_tampering_is_listed_with_the_entry(self, name: str, change: Callable[[list[AuditEntry]], list[AuditEntry]],
                                                    seq: int, kind: str) -> None:
        """Each kind of tampering exits 1 and names the entry seq and what is wrong."""
        sink, _ = await filled()

        code, text = await verify_audit(Tampered(sink, change))

        assert 1 == code
        assert f"entry {seq}: {kind}:" in text
        assert text.rstrip().endswith("run `gatehouse audit verify` again")

    async def test_unreadable_log_is_reported(self) -> None:
        """A store that cannot be read exits 1 and says what to check."""
        class Broken:
            async def head(self) -> None:
                raise ConnectionError("database is down")

        code, text = await verify_audit(Broken())  # type: ignore[arg-type]

        assert 1 == code
        assert "could not be read: ConnectionError: database is down" in text


class TestExport:
    async def test_jsonl_since_a_date(self) -> None:
        """`--since` keeps entries at or after midnight UTC of that day, one JSON object per line."""
        sink, _ = await filled()
        out = io.StringIO()

        code, summary = await export_audit(sink, "2026-11-23", "jsonl", out)

        lines = out.getvalue().splitlines()
        assert 0 == code
        assert "exported 2 of 4 entries since 2026-11-23T00:00:00+00:00 as jsonl\n" == summary
        assert ["bob", "bob"] == [orjson.loads(line)["event"]["user"] for line in lines]

    async def test_full_jsonl_export_verifies(self) -> None:
        """A whole export decodes back to a chain that verifies."""
        sink, _ = await filled()
        out = io.StringIO()

        await export_audit(sink, None, "jsonl", out)

        assert verify([decode_entry(line) for line in out.getvalue().splitlines()]).ok

    async def test_csv_has_a_header_and_a_row_per_entry(self) -> None:
        """CSV export writes the header and one row per entry."""
        sink, _ = await filled()
        out = io.StringIO()

        code, summary = await export_audit(sink, None, "csv", out)

        rows = list(csv.reader(io.StringIO(out.getvalue())))
        assert (0, 5) == (code, len(rows))
        assert "seq" == rows[0][0]
        assert summary.startswith("exported 4 of 4 entries")

    @pytest.mark.parametrize(("since", "fmt", "message"), [
        (None, "xml", "export format `xml` is unknown"),
        ("2026-11-01T08:00", "jsonl", "has no timezone"),
        ("yesterday", "jsonl", "is not a date"),
    ])
    async def test_bad_usage_exits_2_with_the_fix(self, since: str | None, fmt: str, message: str) -> None:
        """A bad format or date exits 2 and shows a command that works."""
        sink, _ = await filled()

        code, text = await export_audit(sink, since, fmt, io.StringIO())

        assert 2 == code
        assert message in text
        assert "gatehouse audit export" in text

    def test_since_accepts_z(self) -> None:
        """`2026-11-01T08:00Z` is 08:00 UTC."""
        assert NOW.replace(day=1, hour=8) == parse_since("2026-11-01T08:00Z")


class TestList:
    async def test_table_lists_newest_first(self) -> None:
        """The table has a header and the newest grant first, with its flags."""
        _, service = await filled()

        code, text = list_grants(service, now=NOW + timedelta(days=1))

        lines = text.splitlines()
        assert 0 == code
        assert lines[0].split() == ["ID", "USER", "DEVICE", "SCOPE", "STATUS", "REQUESTED", "EXPIRES", "FLAGS"]
        assert "bob@example.com" in lines[1] and "active" in lines[1] and "unreviewed" in lines[1]
        assert "alice@example.com" in lines[2] and "expired" in lines[2]

    async def test_json_filters_by_user_and_status(self) -> None:
        """JSON lines with the filters applied."""
        _, service = await filled()

        code, text = list_grants(service, now=NOW + timedelta(days=1), user="bob", status="active", fmt="json")

        assert 0 == code
        assert ["bob"] == [orjson.loads(line)["user"] for line in text.splitlines()]

    async def test_unknown_status_exits_2(self) -> None:
        """An unknown status names the known ones."""
        _, service = await filled()

        code, text = list_grants(service, now=NOW, status="open")

        assert 2 == code
        assert "pending" in text
