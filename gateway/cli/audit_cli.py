"""Plain functions behind ``gatehouse audit verify|export`` and ``gatehouse break-glass list``.

Owns: verify_audit, export_audit, list_grants, parse_since.
Must not import: argparse, aiohttp, gateway.app (cli.py parses arguments, opens the store and the
service, and prints what these return).

Each returns ``(exit_code, text)``: 0 on success, 1 when a check finds problems or the log cannot
be read, 2 on bad usage; error text ends with the command that would fix it. ``export_audit``
writes the records to ``out`` and returns a one-line summary for stderr.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import TextIO

import orjson

from breakglass import (
    AuditSink,
    BreakglassService,
    GrantFilter,
    GrantStatus,
    export_entries,
    verify_sink,
)


async def verify_audit(sink: AuditSink) -> tuple[int, str]:
    """Verify the whole chain against its stored head; list every problem with its entry seq."""
    try:
        report = await verify_sink(sink)
    except Exception as exc:
        return 1, (f"the audit log could not be read: {type(exc).__name__}: {exc}\n"
                   "check the store settings, then run `gatehouse audit verify` again\n")
    if report.ok:
        tail = f", head at entry {report.head.seq} ({report.head.hash[:16]})" if report.head.seq else ""
        return 0, f"audit log ok: {report.checked} entries checked{tail}\n"
    lines = [f"audit log FAILED verification: {len(report.problems)} problem(s) in {report.checked} entries"]
    for problem in report.problems:
        lines.append(f"  entry {problem.seq}: {problem.kind.value}: {problem.message}")
    lines.append("kinds found: " + ", ".join(sorted(k.value for k in report.kinds())))
    lines.append("restore the log from a backup, then run `gatehouse audit verify` again")
    return 1, "\n".join(lines) + "\n"


def parse_since(value: str | datetime | None) -> datetime | None:
    """``2026-11-01`` (midnight UTC) or an ISO time with a zone (``2026-11-01T08:00Z``) as a datetime.

    Raises:
        ValueError: not a date, or a time without a zone.
    """
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.utcoffset() is None:
            raise ValueError(f"`{value.isoformat()}` has no timezone; write a UTC time such as `2026-11-01T00:00Z`")
        return value
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"`{value}` is not a date; write `2026-11-01` or `2026-11-01T08:00Z`") from None
    if parsed.utcoffset() is None:
        raise ValueError(f"`{value}` has no timezone; add `Z` for UTC, as in `{text}Z`")
    return parsed


async def export_audit(sink: AuditSink, since: str | datetime | None, fmt: str, out: TextIO) -> tuple[int, str]:
    """Write the entries at or after ``since`` to ``out`` as ``jsonl`` or ``csv``; return a summary."""
    if fmt not in ("jsonl", "csv"):
        return 2, (f"export format `{fmt}` is unknown; use `jsonl` or `csv`\n"
                   "  gatehouse audit export --format jsonl\n")
    try:
        start = parse_since(since)
    except ValueError as exc:
        return 2, f"{exc}\n  gatehouse audit export --since 2026-11-01 --format {fmt}\n"
    try:
        entries = list(await sink.entries())
    except Exception as exc:
        return 1, (f"the audit log could not be read: {type(exc).__name__}: {exc}\n"
                   "check the store settings, then run `gatehouse audit export` again\n")
    written = 0
    for record in export_entries(entries, fmt=fmt, since=start):  # type: ignore[arg-type]
        out.write(record)
        written += 1
    if fmt == "csv":
        written -= 1  # the header
    when = f" since {start.isoformat()}" if start else ""
    return 0, f"exported {written} of {len(entries)} entries{when} as {fmt}\n"


_COLUMNS = ("ID", "USER", "DEVICE", "SCOPE", "STATUS", "REQUESTED", "EXPIRES", "FLAGS")


def list_grants(
    service: BreakglassService,
    *,
    now: datetime,
    user: str | None = None,
    status: str | None = None,
    tier: str | None = None,
    since: str | datetime | None = None,
    until: str | datetime | None = None,
    unreviewed: bool = False,
    flagged: bool = False,
    fmt: str = "table",
) -> tuple[int, str]:
    """The grants matching the filters, newest first, as an aligned table or JSON lines."""
    try:
        grant_status = GrantStatus(status) if status else None
    except ValueError:
        known = ", ".join(s.value for s in GrantStatus)
        return 2, f"status `{status}` is unknown; use one of {known}\n  gatehouse break-glass list --status active\n"
    if fmt not in ("table", "json"):
        return 2, f"format `{fmt}` is unknown; use `table` or `json`\n  gatehouse break-glass list --format table\n"
    try:
        start, end = parse_since(since), parse_since(until)
    except ValueError as exc:
        return 2, f"{exc}\n  gatehouse break-glass list --since 2026-11-01\n"
    grants = service.list_grants(GrantFilter(user=user, status=grant_status, tier=tier, since=start, until=end,
                                             unreviewed_only=unreviewed, flagged_only=flagged), now=now)
    if fmt == "json":
        lines = []
        for g in grants:
            lines.append(orjson.dumps({
                "id": g.id, "user": g.user, "user_email": g.user_email, "device_serial": g.device_serial,
                "scope": g.scope.describe(), "tier": g.scope.tier, "status": service.status_at(g, now=now).value,
                "requested_at": g.requested_at.isoformat(),
                "expires_at": g.expires_at.isoformat() if g.expires_at else None,
                "flagged": g.flagged, "reviewed": g.reviewed, "reason": g.reason,
            }).decode())
        return 0, "".join(line + "\n" for line in lines)
    if not grants:
        return 0, "no grant matches\n"
    rows = [_COLUMNS]
    for g in grants:
        flags = ",".join(x for x in ("repeat-user" if g.flagged else "", "" if g.reviewed else "unreviewed") if x)
        rows.append((
            g.id, g.user_email or g.user, g.device_serial, g.scope.describe(), service.status_at(g, now=now).value,
            g.requested_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
            g.expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if g.expires_at else "-", flags or "-",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    text = "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in rows)
    return 0, text
