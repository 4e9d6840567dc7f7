"""`gatehouse import` (back-fill snapshots from files) and `gatehouse evidence export` (compliance history).

Owns: import_snapshots, export_evidence_to.
Must not import: argparse, cli. The work is gateway.ingest.importer's and gateway.report.evidence's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, TextIO

from gateway.cli.commands.common import (
    EXIT_OK, EXIT_REFUSED, Progress, Refused, check_period, command, load_config, opened_gateway_store, opened_store, output_to, streams,
)
from gateway.errors import ConfigError
from gateway.report.evidence import export_evidence
from gateway.ingest.importer import ImportReport, import_files


def _summary(report: ImportReport) -> str:
    return (f"{report.items} items in {report.files} file(s): {report.stored} stored, {report.duplicate} already stored, "
            f"{report.older} older than the device's latest, {report.rejected} rejected")


@command
async def import_snapshots(
    paths: Sequence[Path],
    config: Path,
    *,
    clock: Callable[[], datetime],
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Store the snapshots in osquery result files and JSON arrays; exit 1 when any item was rejected.

    With a policy in the configuration, each stored snapshot's checks also go into the compliance
    history (as on ingest), so evidence exports cover back-filled devices.
    """
    out, err = streams(out, err)
    settings = load_config(config, environ)
    recorder = None
    if settings.policy is not None:
        from gateway.app import ComplianceFromPolicy
        from gateway.config.policy_file import PolicyHolder

        try:
            recorder = ComplianceFromPolicy(PolicyHolder.load(settings.policy))
        except ConfigError as exc:
            raise Refused(f"{exc}\nthe policy decides what the compliance history records; fix it, then run "
                          f"`gatehouse policy check {settings.policy}`") from None
    progress = Progress(err)

    def show(report: ImportReport) -> None:
        progress.update(f"importing: {report.items} items read, {report.stored} stored, {report.rejected} rejected")

    async with opened_store(settings, config, create=True) as store:
        report = await import_files(paths, store, clock=clock, recorder=recorder, progress=show if progress.live else None,
                                    max_future_skew=timedelta(seconds=settings.ingest.max_future_skew_s))
    progress.done()
    print(f"imported {_summary(report)}", file=out)
    if not report.rejected:
        return EXIT_OK
    for problem in report.problems:
        print(problem, file=err)
    if report.rejected > len(report.problems):
        print(f"... and {report.rejected - len(report.problems)} more rejected item(s)", file=err)
    files = " ".join(str(p) for p in paths)
    print(f"fix or remove the items above, then run `gatehouse import {files} --config {config}` again "
          "(items already stored are skipped)", file=err)
    return EXIT_REFUSED


@command
async def export_evidence_to(
    config: Path,
    *,
    since: datetime,
    until: datetime | None = None,
    fmt: Literal["csv", "jsonl"] = "csv",
    output: Path | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Write the compliance history recorded in [since, until) as CSV or JSON lines, to ``output`` or ``out``."""
    out, err = streams(out, err)
    check_period(since, until, f"gatehouse evidence export --config {config} --since {since.date()} --format {fmt}")
    settings = load_config(config, environ)
    async with opened_gateway_store(settings, config) as store:
        with output_to(output, out) as handle:
            written = await export_evidence(store, since, fmt, handle, until=until)
    window = f"from {since.isoformat()}" + (f" to {until.isoformat()}" if until else "")
    where = f" to {output}" if output else ""
    print(f"exported {written} evaluations {window} as {fmt}{where}", file=err)
    return EXIT_OK
