"""`gatehouse devices assign|unassign|owners|import|revoke-cert`: the owner inventory and device certificates from the command line.

Owns: assign_owners, unassign_owners, list_owners, import_owners, revoke_device_certificates.
Must not import: argparse, cli. The input rules are gateway.ingest.owners'; the store writes are OwnerStore's.

Each write records who made it (``--by``, default the login running the command), when, and its
source (``cli`` or ``import``). A running Gatehouse sees the change on its next cache refresh
(PostgreSQL: at once, through NOTIFY).

A device is removed when its last owner is unassigned: every certificate Gatehouse's device CA issued
for it is revoked in the same command (``revoked_by`` ``device-removed:<who>``), so the laptop must
enroll again before its certificate names it.
"""

from __future__ import annotations

import getpass
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal, TextIO

import orjson

from gateway.cli.commands.common import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Refused, command, load_config, opened_store, streams
from gateway.ingest.snapshot_parse import serial_problem
from gateway.ingest.owners import clean_owner_emails, parse_owner_file
from gateway.store.base import CertificateRecord, OwnerEdit, OwnerEditMode, OwnerRecord, OwnerSource


def operator_name() -> str:
    """Who runs the command, for the inventory's ``set_by`` (``cli:<login>``)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _serial(raw: str, usage: str) -> str:
    problem = serial_problem(raw)
    if problem is not None:
        raise Refused(f"serial: {problem}\n  {usage}", EXIT_USAGE)
    return raw.strip()


def _emails(raw: Sequence[str], usage: str) -> tuple[str, ...]:
    owners, problems = clean_owner_emails(list(raw))
    if problems:
        raise Refused("\n".join(f"owner: {p}" for p in problems) + f"\n  {usage}", EXIT_USAGE)
    return owners


def _describe(record: OwnerRecord) -> str:
    owners = ", ".join(record.owners) or "nobody"
    return f"{record.serial}: {owners} (set by {record.set_by} via {record.source.value} at {record.set_at.isoformat()})"


@command
async def assign_owners(
    serial: str, emails: Sequence[str], config: Path, *, clock: Callable[[], datetime], by: str | None = None,
    environ: Mapping[str, str] | None = None, out: TextIO | None = None, err: TextIO | None = None,
) -> int:
    """Add owners to a serial in the inventory (owners already listed stay)."""
    out = out or sys.stdout
    usage = f"gatehouse devices assign SERIAL EMAIL [EMAIL...] --config {config}"
    clean = _serial(serial, usage)
    owners = _emails(emails, usage)
    settings = load_config(config, environ)
    edit = OwnerEdit(clean, owners, OwnerEditMode.ADD, by or operator_name(), clock(), OwnerSource.CLI)
    async with opened_store(settings, config, create=True) as store:
        (record,) = await store.edit_owners([edit])
    print(f"assigned {_describe(record)}", file=out)
    return EXIT_OK


@command
async def unassign_owners(
    serial: str, emails: Sequence[str], config: Path, *, clock: Callable[[], datetime], by: str | None = None,
    environ: Mapping[str, str] | None = None, out: TextIO | None = None, err: TextIO | None = None,
) -> int:
    """Remove the named owners from a serial, or every owner when none is named; exit 1 when the serial has no entry."""
    out = out or sys.stdout
    usage = f"gatehouse devices unassign SERIAL [EMAIL...] --config {config}"
    clean = _serial(serial, usage)
    owners = _emails(emails, usage)
    settings = load_config(config, environ)
    async with opened_store(settings, config, fix=f"no owner was ever assigned; see `gatehouse devices assign SERIAL EMAIL --config {config}`") as store:
        if await store.owners(clean) is None:
            raise Refused(f"`{clean}` has no owners in the inventory; see them with `gatehouse devices owners --config {config}`")
        edit = OwnerEdit(clean, owners, OwnerEditMode.REMOVE, by or operator_name(), clock(), OwnerSource.CLI)
        (record,) = await store.edit_owners([edit])
        revoked = () if record.owners else await store.revoke_certificates_of(clean, at=edit.set_at, by=f"device-removed:{edit.set_by}")
    print(f"unassigned: {_describe(record)}" if record.owners else f"unassigned: {clean} has no owners now", file=out)
    for cert in revoked:
        print(f"revoked certificate {cert.fingerprint} of {clean} (the device was removed)", file=out)
    return EXIT_OK


_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


@command
async def revoke_device_certificates(
    target: str, config: Path, *, clock: Callable[[], datetime], by: str | None = None,
    environ: Mapping[str, str] | None = None, out: TextIO | None = None, err: TextIO | None = None,
) -> int:
    """Revoke one device certificate (by SHA-256 fingerprint) or every certificate of a serial; exit 1 when none was revoked."""
    out = out or sys.stdout
    usage = f"gatehouse devices revoke-cert SERIAL|FINGERPRINT --config {config}"
    wanted = target.strip().lower().replace(":", "")
    by_fingerprint = _FINGERPRINT.fullmatch(wanted) is not None
    serial = target.strip() if by_fingerprint else _serial(target, usage)
    settings = load_config(config, environ)
    who, now = by or operator_name(), clock()
    async with opened_store(settings, config, fix="no certificate was ever issued with this store") as store:
        if by_fingerprint:
            record = await store.revoke_certificate(wanted, at=now, by=who)
            if record is None:
                raise Refused(f"no device certificate has fingerprint `{wanted}`; list a device's with "
                              f"`gatehouse devices certs SERIAL --config {config}`")
            if record.revoked_at != now or record.revoked_by != who:
                raise Refused(f"certificate `{wanted}` of {record.serial} was revoked already, at {record.revoked_at} by {record.revoked_by}")
            revoked: tuple[CertificateRecord, ...] = (record,)
        else:
            revoked = await store.revoke_certificates_of(serial, at=now, by=who)
            if not revoked:
                raise Refused(f"`{serial}` has no unrevoked device certificate; list them with `gatehouse devices certs {serial} --config {config}`")
    for cert in revoked:
        print(f"revoked certificate {cert.fingerprint} of {cert.serial} (owner {cert.owner}, valid until {cert.not_after.isoformat()})", file=out)
    print("every replica refuses it within a second (PostgreSQL NOTIFY), or at its next cache refresh (SQLite)", file=out)
    return EXIT_OK


@command
async def list_device_certificates(
    serial: str, config: Path, *, environ: Mapping[str, str] | None = None, out: TextIO | None = None, err: TextIO | None = None,
) -> int:
    """Print every certificate issued for a serial (revoked and expired ones too); exit 1 when there is none."""
    out = out or sys.stdout
    clean = _serial(serial, f"gatehouse devices certs SERIAL --config {config}")
    settings = load_config(config, environ)
    async with opened_store(settings, config, fix="no certificate was ever issued with this store") as store:
        records = await store.certificates_of(clean)
    if not records:
        raise Refused(f"`{clean}` has no device certificate; the laptop enrolls with `gatehouse-enroll https://<gatehouse>`")
    for c in records:
        state = f"revoked {c.revoked_at.isoformat()} by {c.revoked_by}" if c.revoked_at else f"valid until {c.not_after.isoformat()}"
        print(f"{c.fingerprint} {c.serial} owner {c.owner}, issued {c.issued_at.isoformat()}, {state}", file=out)
    return EXIT_OK


@command
async def list_owners(
    config: Path, serial: str | None = None, *, fmt: Literal["text", "json"] = "text",
    environ: Mapping[str, str] | None = None, out: TextIO | None = None, err: TextIO | None = None,
) -> int:
    """Print the inventory (one serial, or every serial with owners); exit 1 when the named serial has none."""
    out = out or sys.stdout
    settings = load_config(config, environ)
    async with opened_store(settings, config, fix=f"no owner was ever assigned; see `gatehouse devices assign SERIAL EMAIL --config {config}`") as store:
        if serial is not None:
            one = await store.owners(serial.strip())
            if one is None:
                raise Refused(f"`{serial.strip()}` has no owners in the inventory; assign some with "
                              f"`gatehouse devices assign {serial.strip()} EMAIL --config {config}`")
            records: tuple[OwnerRecord, ...] = (one,)
        else:
            records = tuple(sorted((await store.load_owners()).records, key=lambda r: r.serial))
    if fmt == "json":
        doc = {"devices": [{"serial": r.serial, "owners": list(r.owners), "set_by": r.set_by, "set_at": r.set_at.isoformat(),
                            "source": r.source.value} for r in records]}
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    for record in records:
        print(_describe(record), file=out)
    if not records:
        print("no device has owners in the inventory", file=out)
    return EXIT_OK


@command
async def import_owners(
    path: Path, config: Path, *, clock: Callable[[], datetime], dry_run: bool = False, by: str | None = None,
    environ: Mapping[str, str] | None = None, out: TextIO | None = None, err: TextIO | None = None,
) -> int:
    """Set each listed serial's owners to the file's (CSV or JSON); nothing is written when any row has a problem."""
    out, err = streams(out, err)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise Refused(f"cannot read `{path}`: {exc}\ngive a UTF-8 CSV (`serial,owner`) or JSON file") from None
    report = parse_owner_file(text, name=str(path))
    if report.problems:
        for problem in report.problems:
            print(problem, file=err)
        print(f"nothing was imported: {len(report.problems)} problem(s) in {path}; fix them, then run "
              f"`gatehouse devices import {path} --config {config} --dry-run` to check again", file=err)
        return EXIT_REFUSED
    settings = load_config(config, environ)
    who = by or f"import:{path.name}"
    now = clock()
    edits = [OwnerEdit(row.serial, row.owners, OwnerEditMode.REPLACE, who, now, OwnerSource.IMPORT) for row in report.rows]
    async with opened_store(settings, config, create=not dry_run,
                            fix="a dry run reads the store and there is none yet; run without `--dry-run` to create it") as store:
        if dry_run:
            changed = 0
            for row in report.rows:
                held = await store.owners(row.serial)
                if held is None or held.owners != row.owners:
                    changed += 1
                    before = ", ".join(held.owners) if held is not None else "nobody"
                    print(f"would set {row.serial}: {before} -> {', '.join(row.owners)}", file=out)
            print(f"dry run: {len(report.rows)} device(s) in {path}, {changed} would change; nothing was written", file=out)
            return EXIT_OK
        previous = {r.serial: r for r in (await store.load_owners()).records}
        records = await store.edit_owners(edits)
    changed = sum(1 for r in records if r.serial not in previous or previous[r.serial].owners != r.owners)
    print(f"imported {len(records)} device(s) from {path}: {changed} changed, {len(records) - changed} already so", file=out)
    return EXIT_OK
