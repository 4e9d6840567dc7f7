"""`gatehouse report`: the compliance report for a period, from the store, the policy and the audit log.

Owns: compliance_report, configured_report.
Must not import: argparse, cli. The work is gateway.report's; this opens what the gateway keeps for a
configuration and writes the rendered report.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TextIO

from breakglass import AuditIntegrityError, AuditWriteError, BreakglassService
from gateway.cli.commands.common import (
    EXIT_OK, EXIT_USAGE, Refused, check_period, command, load_config, opened_audit_sink, opened_gateway_store, output_to, streams,
)
from gateway.errors import ConfigError
from gateway.report import ComplianceReport, DeviceInfo, build_report
from gateway.web.views.report import REPORT_FORMATS, render_report
from gateway.config.settings import Settings
from gateway.store.base import LedgerStore


@command
async def compliance_report(
    config: Path,
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    fmt: str = "html",
    output: Path | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Write the compliance report for [since, until) as HTML, JSON or CSV, to ``output`` or ``out``."""
    out, err = streams(out, err)
    example = f"gatehouse report --config {config} --since {since.date()} --until {until.date()} --format html"
    if fmt not in REPORT_FORMATS:
        raise Refused(f"--format `{fmt}` is not supported; use html, json or csv\n  {example}", EXIT_USAGE)
    check_period(since, until, example)
    settings = load_config(config, environ)
    report = await configured_report(settings, config, since=since, until=until, now=now)
    with output_to(output, out) as handle:
        handle.write(render_report(report, fmt).decode("utf-8"))
    ledger_note = "" if report.ledger_available else "; this store keeps no access ledger, so access sections are empty"
    where = f" to {output}" if output else ""
    print(f"reported {report.devices} devices from {since.isoformat()} to {until.isoformat()} as {fmt}{where}{ledger_note}",
          file=err)
    return EXIT_OK


async def configured_report(settings: Settings, config: Path, *, since: datetime, until: datetime, now: datetime) -> ComplianceReport:
    """The compliance report of [since, until) from what the gateway of ``settings`` keeps: store, policy, audit log.

    Shared by `gatehouse report` and `gatehouse evidence bundle`.

    Raises:
        Refused: no policy, a policy or audit log that cannot be read.
    """
    if settings.policy is None:
        raise Refused(f"{config} names no `policy:`; the report needs the policy for its checks and controls\n"
                      f"add `policy: FILE`, then run `gatehouse check-config {config}`")
    from gateway.config.policy_file import PolicyHolder

    try:
        policies = PolicyHolder.load(settings.policy).current
    except ConfigError as exc:
        raise Refused(f"{exc}\nfix the policy, then run `gatehouse policy check {settings.policy}`") from None
    async with opened_audit_sink(settings, config) as sink:
        try:
            service = await BreakglassService.open(sink, config=settings.breakglass.to_config())
        except AuditIntegrityError as exc:
            raise Refused(f"the audit log fails verification, so its grants cannot be reported: {exc}\n"
                          f"see every problem with `gatehouse audit verify --config {config}`") from None
        except AuditWriteError as exc:
            raise Refused(f"the audit log could not be read: {exc}\n"
                          f"check `store:` in {config}, then run `gatehouse check-config {config}`") from None
    grants = service.list_grants(now=now)
    async with opened_gateway_store(settings, config) as store:
        latest = await store.load_latest()
        devices = {s.serial: DeviceInfo(s.platform.value, min(s.collected_at, s.received_at))
                   for s in latest.snapshots}
        ledger = store if isinstance(store, LedgerStore) else None
        return await build_report(history=store, ledger=ledger, policies=policies, grants=grants, devices=devices,
                                  since=since, until=until, now=now)
