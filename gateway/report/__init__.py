"""The compliance report for a period: what the fleet's health, access and break-glass looked like, for auditors.

Owns: nothing itself; re-exports build_report / compute_report (gateway.report.build), render_report /
report_response (gateway.report.render) and the generated fleet history (gateway.report.synthetic).
Must not import: aiohttp at module level, gateway.app, gateway.cli.

    report = await build_report(history=store, ledger=ledger, policies=policies, grants=grants,
                                devices=devices, since=since, until=until, now=now)
    data = render_report(report, "html")   # or "json", "csv"
"""

from __future__ import annotations

from gateway.report.build import (
    DEFAULT_STALE_AFTER,
    ComplianceReport,
    DeviceInfo,
    build_report,
    compute_report,
)
from gateway.report.render import COMPLIANCE_PATH, REPORT_FORMATS, render_report, report_response

__all__ = [
    "COMPLIANCE_PATH",
    "DEFAULT_STALE_AFTER",
    "REPORT_FORMATS",
    "ComplianceReport",
    "DeviceInfo",
    "build_report",
    "compute_report",
    "render_report",
    "report_response",
]
