"""The owner inventory's input rules: which serials and emails are acceptable, and the import file formats.

Owns: owner_email_problem, clean_owner_emails, OwnerRow, OwnerFileReport, parse_owner_file.
Must not import: aiohttp, the store backends (callers turn rows into ``OwnerEdit`` values and write them).

Serials follow the one serial rule of every ingest path (``serial_problem``). Emails are trimmed and
lower-cased; one is acceptable when it has one ``@`` with text on both sides, a dot in the domain, no
spaces or control characters, and at most 254 characters.

Import files are what an MDM or HR export gives:

- CSV with a header row naming ``serial`` and ``owner`` (or ``owners``) columns, other columns
  ignored; a serial may take several rows, and one cell may hold several owners joined by ``;``.
- JSON ``{"devices": [{"serial": "C02...", "owners": ["a@corp.example"]}, ...]}``.

Every problem in the file is reported with its row (CSV line number, or ``devices[i]``), the field
and what is expected; rows without problems are still returned, so a dry run shows both.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import orjson

from gateway.ingest.snapshot_parse import serial_problem

MAX_EMAIL = 254
_MAX_OWNERS = 100


def owner_email_problem(raw: object) -> str | None:
    """What an owner address should be, when ``raw`` is not one; None when it is."""
    if not isinstance(raw, str):
        return "an email address as a string"
    email = raw.strip()
    local, at, domain = email.partition("@")
    if (not at or not local or "@" in domain or "." not in domain.strip(".") or len(email) > MAX_EMAIL
            or not email.isprintable() or any(c.isspace() for c in email)):
        shown = raw[:60].encode("unicode_escape").decode("ascii")
        return f"an email address such as `alice@corp.example`, not `{shown}`"
    return None


def clean_owner_emails(raw: list[object] | tuple[object, ...]) -> tuple[tuple[str, ...], list[str]]:
    """The addresses trimmed, lower-cased and without repeats, and a problem text per bad one."""
    owners: dict[str, None] = {}
    problems: list[str] = []
    for value in raw:
        problem = owner_email_problem(value)
        if problem is not None:
            problems.append(problem)
        else:
            owners[str(value).strip().lower()] = None
    if len(owners) > _MAX_OWNERS:
        problems.append(f"at most {_MAX_OWNERS} owners per device, not {len(owners)}")
    return tuple(owners), problems


@dataclass(frozen=True, slots=True)
class OwnerRow:
    """One device's owners read from an import file (all of its rows merged)."""

    serial: str
    owners: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OwnerFileReport:
    """What an import file holds: the good devices, and every problem found."""

    rows: tuple[OwnerRow, ...]
    problems: tuple[str, ...]
    """One lowercase line each: ``line 4: owner: an email address such as ...``."""


def parse_owner_file(text: str, *, name: str) -> OwnerFileReport:
    """Read an owner import file, CSV or JSON (chosen by content: JSON starts with ``{``)."""
    if text.lstrip().startswith("{"):
        return _parse_json(text, name=name)
    return _parse_csv(text, name=name)


def _merge(found: dict[str, dict[str, None]], serial: str, owners: tuple[str, ...]) -> None:
    found.setdefault(serial, {}).update(dict.fromkeys(owners))


def _parse_csv(text: str, *, name: str) -> OwnerFileReport:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    columns = [c.strip().lower().lstrip("\ufeff") for c in header] if header else []
    owner_column = next((c for c in ("owner", "owners", "email") if c in columns), None)
    if "serial" not in columns or owner_column is None:
        shown = ",".join(columns)[:80]
        return OwnerFileReport((), (f"{name}: line 1: the header `{shown}` names no `serial` and `owner` columns; "
                                    "start the file with `serial,owner`",))
    s_at, o_at = columns.index("serial"), columns.index(owner_column)
    found: dict[str, dict[str, None]] = {}
    problems: list[str] = []
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        raw_serial = cells[s_at] if s_at < len(cells) else ""
        raw_owners = [o for o in (cells[o_at] if o_at < len(cells) else "").split(";") if o.strip()]
        bad = serial_problem(raw_serial)
        if bad is not None:
            problems.append(f"{name}: line {line}: serial: {bad}")
        if not raw_owners:
            problems.append(f"{name}: line {line}: {owner_column}: an email address, or several joined by `;`; the cell is empty")
        owners, owner_problems = clean_owner_emails(list(raw_owners))
        problems += [f"{name}: line {line}: {owner_column}: {p}" for p in owner_problems]
        if bad is None and owners and not owner_problems:
            _merge(found, raw_serial.strip(), owners)
    return OwnerFileReport(tuple(OwnerRow(s, tuple(o)) for s, o in found.items()), tuple(problems))


def _parse_json(text: str, *, name: str) -> OwnerFileReport:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return OwnerFileReport((), (f"{name}: not JSON ({exc}); write `{{\"devices\": [{{\"serial\": ..., \"owners\": [...]}}]}}`",))
    devices = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(devices, list):
        return OwnerFileReport((), (f"{name}: devices: a list of `{{\"serial\": ..., \"owners\": [...]}}` objects is expected",))
    found: dict[str, dict[str, None]] = {}
    problems: list[str] = []
    for index, item in enumerate(devices):
        where = f"{name}: devices[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: an object with `serial` and `owners` is expected")
            continue
        bad = serial_problem(item.get("serial"))
        if bad is not None:
            problems.append(f"{where}.serial: {bad}")
        raw = item.get("owners")
        if not isinstance(raw, list) or not raw:
            problems.append(f"{where}.owners: a non-empty list of email addresses is expected")
            continue
        owners, owner_problems = clean_owner_emails(raw)
        problems += [f"{where}.owners: {p}" for p in owner_problems]
        if bad is None and not owner_problems:
            _merge(found, str(item["serial"]).strip(), owners)
    return OwnerFileReport(tuple(OwnerRow(s, tuple(o)) for s, o in found.items()), tuple(problems))


__all__ = ["OwnerFileReport", "OwnerRow", "clean_owner_emails", "owner_email_problem", "parse_owner_file"]
