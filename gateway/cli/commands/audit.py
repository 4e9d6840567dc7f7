"""`gatehouse audit verify|export` and `gatehouse break-glass list`: the break-glass audit log from a shell.

Owns: audit_verify, audit_export, break_glass_list.
Must not import: argparse, cli. The work is gateway.cli.audit_cli's; these open the audit log the
gateway writes for a configuration and print what comes back.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TextIO

from breakglass import AuditIntegrityError, AuditWriteError, BreakglassService
from gateway.cli.audit_cli import export_audit, list_grants, verify_audit
from gateway.cli.commands.common import EXIT_OK, Refused, command, load_config, opened_audit_sink, output_to, streams


@command
async def audit_verify(
    config: Path,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Check the whole hash chain against its stored head; exit 1 listing every modified, deleted, inserted or reordered entry."""
    out, err = streams(out, err)
    settings = load_config(config, environ)
    async with opened_audit_sink(settings, config) as sink:
        code, text = await verify_audit(sink)
    text = text.replace("`gatehouse audit verify`", f"`gatehouse audit verify --config {config}`")
    (out if code == EXIT_OK else err).write(text)
    return code


@command
async def audit_export(
    config: Path,
    *,
    since: datetime,
    fmt: str = "jsonl",
    output: Path | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Write the audit entries at or after ``since`` as JSON lines or CSV, to ``output`` or ``out``."""
    out, err = streams(out, err)
    settings = load_config(config, environ)
    async with opened_audit_sink(settings, config) as sink:
        with output_to(output, out) as handle:
            code, summary = await export_audit(sink, since, fmt, handle)
            if code != EXIT_OK:
                raise Refused(summary.replace("gatehouse audit export", f"gatehouse audit export --config {config}"), code)
    where = f" to {output}" if output else ""
    err.write(summary.replace("\n", f"{where}\n", 1))
    return code


@command
async def break_glass_list(
    config: Path,
    *,
    now: datetime,
    user: str | None = None,
    status: str | None = None,
    tier: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    unreviewed: bool = False,
    flagged: bool = False,
    fmt: str = "text",
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """The break-glass grants matching the filters, newest first, as a table (``text``) or JSON lines."""
    out, err = streams(out, err)
    settings = load_config(config, environ)
    async with opened_audit_sink(settings, config) as sink:
        try:
            service = await BreakglassService.open(sink, config=settings.breakglass.to_config())
        except AuditIntegrityError as exc:
            raise Refused(f"the audit log fails verification, so its grants cannot be trusted: {exc}\n"
                          f"see every problem with `gatehouse audit verify --config {config}`") from None
        except AuditWriteError as exc:
            raise Refused(f"the audit log could not be read: {exc}\n"
                          f"check `store:` in {config}, then run `gatehouse check-config {config}`") from None
    code, text = list_grants(service, now=now, user=user, status=status, tier=tier, since=since, until=until,
                             unreviewed=unreviewed, flagged=flagged, fmt="table" if fmt == "text" else fmt)
    if code != EXIT_OK:
        raise Refused(text.replace("gatehouse break-glass list", f"gatehouse break-glass list --config {config}"), code)
    out.write(text)
    return code
