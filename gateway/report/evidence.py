"""Compliance evidence for auditors: the recorded history of every device's checks over a period.

Owns: export_evidence, EVIDENCE_FORMATS.
Must not import: aiohttp, gateway.app (``gatehouse evidence export`` in cli.py is a thin layer over export_evidence).

CSV has one row per device, evaluation and check — ``device,owners,time,check,result`` with
``result`` ``pass`` or ``fail`` and owners joined by ``;`` — so checks added later need no new
columns. JSON lines have one object per evaluation:
``{"device": ..., "owners": [...], "time": ..., "compliant": bool, "checks": {"name": "pass"|"fail"}}``.
Times are RFC 3339 UTC. Cells that a spreadsheet would run as a formula are prefixed with ``'``.
"""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime, time
from typing import Literal, TextIO

import orjson

from gateway.store.base import HistoryStore

EVIDENCE_FORMATS = ("csv", "jsonl")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def _moment(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"`{value.isoformat()}` has no timezone; give a UTC time such as `2026-01-01T00:00:00Z`")
        return value.astimezone(UTC)
    return datetime.combine(value, time.min, tzinfo=UTC)


async def export_evidence(
    store: HistoryStore,
    since: date | datetime,
    fmt: Literal["csv", "jsonl"],
    out: TextIO,
    *,
    until: date | datetime | None = None,
) -> int:
    """Write the compliance history recorded in [since, until) to ``out``; returns how many evaluations were written.

    A date means midnight UTC of that day.

    Raises:
        ValueError: unknown format, or a datetime without timezone.
        StoreError: the history could not be read.
    """
    if fmt not in EVIDENCE_FORMATS:
        raise ValueError(f"format `{fmt}` is not supported; use `csv` or `jsonl`")
    start = _moment(since)
    end = None if until is None else _moment(until)
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(["device", "owners", "time", "check", "result"])
    written = 0
    async for entry in store.iter_history(since=start, until=end):
        stamp = entry.recorded_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        checks = {name: "pass" if ok else "fail" for name, ok in sorted(entry.results.items())}
        if writer is not None:
            owners = _cell(";".join(entry.owners))
            for name, result in checks.items():
                writer.writerow([_cell(entry.serial), owners, stamp, _cell(name), result])
        else:
            line = {
                "device": entry.serial,
                "owners": list(entry.owners),
                "time": stamp,
                "compliant": all(entry.results.values()),
                "checks": checks,
            }
            out.write(orjson.dumps(line).decode() + "\n")
        written += 1
    return written
