"""The compliance report for a period: what the fleet's health, access and break-glass looked like, for auditors.

Owns: nothing itself; re-exports build_report / compute_report (gateway.report.build). The renderers
(render_report, report_response) are pages: import them from gateway.web.views.report, which this package
does not import (the report's numbers never depend on the pages).
Must not import: aiohttp at module level, gateway.web.views.report, gateway.app, gateway.cli.main.

    report = await build_report(history=store, ledger=ledger, policies=policies, grants=grants,
                                devices=devices, since=since, until=until, now=now)
    data = render_report(report, "html")   # gateway.web.views.report; or "json", "csv"
"""

from __future__ import annotations

from gateway.report.build import (
    DEFAULT_STALE_AFTER,
    ComplianceReport,
    DeviceInfo,
    build_report,
    compute_report,
)

__all__ = [
    "DEFAULT_STALE_AFTER",
    "ComplianceReport",
    "DeviceInfo",
    "build_report",
    "compute_report",
]
