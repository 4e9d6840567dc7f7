"""The compliance report as HTML (charts and tables), JSON and CSV.

Owns: render_report, report_page, report_to_dict, REPORT_FORMATS, CSV_COLUMNS.
Must not import: aiohttp (``Rendered.response`` imports it lazily), the stores, the clock.

HTML uses the one page shell (gateway.web.views.layout): no scripts, the strict CSP, charts as inline
SVG (gateway.web.views.charts) each followed by the same numbers in a table. JSON carries every number.
CSV is one long table, ``section,item,detail,time,count,total`` so a spreadsheet can pivot it;
cells a spreadsheet would run as a formula are prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime, timedelta
from urllib.parse import urlencode

import orjson

from gateway.report.build import (
    ComplianceReport,
    DayShare,
    NonCompliantAccess,
    Series,
    share_of,
)
from gateway.store.base import AccessVerdict
from gateway.web.views.charts import Line, bar_chart, line_chart, stacked_bar_chart
from gateway.web.views.html import Child, Markup, el, join
from gateway.web.views.layout import CSV, JSON, Rendered, format_duration, html_response, platform_name, respond, time_el

REPORT_FORMATS = ("html", "json", "csv")
CSV_COLUMNS = ("section", "item", "detail", "time", "count", "total")
COMPLIANCE_PATH = "/.gatehouse/admin/compliance"
HTML_ACCESS_ROWS = 300
"""Rows of access from non-compliant devices shown on the page; JSON and CSV carry all of them."""
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
VERDICT_COLOURS = {
    AccessVerdict.ALLOWED: "#146c2e",
    AccessVerdict.GRACE: "#d98e04",
    AccessVerdict.BREAK_GLASS: "#6a1b9a",
    AccessVerdict.MONITOR: "#0b57d0",
    AccessVerdict.DENIED: "#b3261e",
}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _series_dict(s: Series) -> dict[str, object]:
    return {"name": s.name, "passing": s.passing, "counted": s.counted,
            "days": [{"day": d.day.isoformat(), "passing": d.passing, "counted": d.counted} for d in s.days]}


def report_to_dict(report: ComplianceReport) -> dict[str, object]:
    """Every number of the report as JSON-ready data."""
    r = report
    return {
        "since": _iso(r.since), "until": _iso(r.until), "generated_at": _iso(r.generated_at),
        "policy_version": r.policy_version, "stale_after_s": int(r.stale_after.total_seconds()),
        "devices": r.devices, "ledger_available": r.ledger_available,
        "fleet": _series_dict(r.fleet),
        "per_check": [{**_series_dict(s), "nudge": s.name in r.nudge_checks} for s in r.per_check],
        "per_platform": [_series_dict(s) for s in r.per_platform],
        "controls": [{"framework": c.control.framework, "id": c.control.id, "title": c.control.title,
                      "checks": list(c.checks), "passing_device_days": c.passing, "device_days": c.counted,
                      "devices_failing": c.devices_failing} for c in r.controls],
        "longest_non_compliant": [{"device": s.serial, "owners": list(s.owners), "platform": s.platform,
                                   "started": _iso(s.started), "ended": _iso(s.ended),
                                   "duration_s": int(s.duration.total_seconds()), "checks": list(s.checks)}
                                  for s in r.longest],
        "remediation": {
            "median_s": None if r.remediation.median is None else r.remediation.median.total_seconds(),
            "unresolved": r.remediation.unresolved,
            "buckets": [{"label": label, "count": n} for label, n in r.remediation.buckets],
            "times": [{"device": t.serial, "denied_at": _iso(t.denied_at), "fixed_at": _iso(t.fixed_at),
                       "duration_s": t.duration.total_seconds()} for t in r.remediation.times],
        },
        "access": [{"tier": a.tier, "total": a.total, **{v.value: n for v, n in a.counts}} for a in r.access],
        "non_compliant_access": [_access_dict(a) for a in r.non_compliant_access],
        "break_glass": [{"user": u.user, "requested": u.requested, "issued": u.issued, "used": u.used,
                         "unreviewed": u.unreviewed, "requests": u.requests} for u in r.break_glass],
        "unreviewed_grants": r.unreviewed_grants,
        "stale": [{"device": s.serial, "owners": list(s.owners), "platform": s.platform,
                   "last_seen": _iso(s.last_seen)} for s in r.stale],
    }


def _access_dict(a: NonCompliantAccess) -> dict[str, object]:
    x = a.rollup
    return {"hour": _iso(x.hour), "route": x.route, "tier": x.tier, "user": x.user, "device": x.device,
            "verdict": x.verdict.value, "reason": x.reason, "count": x.count, "first_seen": _iso(x.first_seen),
            "last_seen": _iso(x.last_seen), "grant": a.grant_id or None, "grant_reason": a.grant_reason or None,
            "review": a.review or None, "reviewed_by": a.reviewed_by or None}


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv(report: ComplianceReport) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)

    def row(*values: object) -> None:
        w.writerow([_cell(v) for v in values])

    for kind, group in (("compliance-daily", (report.fleet,)), ("check-daily", report.per_check),
                        ("platform-daily", report.per_platform)):
        for s in group:
            for d in s.days:
                row(kind, s.name, "", d.day.isoformat(), d.passing, d.counted)
    for c in report.controls:
        row("control", f"{c.control.framework} {c.control.id}", ";".join(c.checks), "", c.passing, c.counted)
    for streak in report.longest:
        row("non-compliant-streak", streak.serial, ";".join(streak.checks), _iso(streak.started), int(streak.duration.total_seconds()),
            _iso(streak.ended) or "open")
    for t in report.remediation.times:
        row("remediation", t.serial, f"denied {_iso(t.denied_at)}", _iso(t.fixed_at), int(t.duration.total_seconds()), "")
    row("remediation-unresolved", "", "", "", report.remediation.unresolved, "")
    for a in report.access:
        for verdict, n in a.counts:
            row("access", a.tier, verdict.value, "", n, a.total)
    for access in report.non_compliant_access:
        x = access.rollup
        detail = f"route={x.route};tier={x.tier};user={x.user};verdict={x.verdict.value};reason={x.reason}"
        if access.review:
            detail += f";grant={access.grant_id};review={access.review}"
        row("non-compliant-access", x.device, detail, _iso(x.hour), x.count, "")
    for u in report.break_glass:
        row("break-glass", u.user, f"requested={u.requested};issued={u.issued};used={u.used}", "", u.requests, u.unreviewed)
    for stale in report.stale:
        row("stale", stale.serial, stale.platform, _iso(stale.last_seen) or "none in period", "", "")
    return out.getvalue()


def render_report(report: ComplianceReport, fmt: str) -> bytes:
    """The report as ``html``, ``json`` or ``csv`` bytes (UTF-8).

    Raises:
        ValueError: an unknown format.
    """
    if fmt == "json":
        return orjson.dumps(report_to_dict(report), option=orjson.OPT_INDENT_2)
    if fmt == "csv":
        return _csv(report).encode("utf-8")
    if fmt == "html":
        return report_page(report).body
    raise ValueError(f"format `{fmt}` is not supported; use {', '.join(f'`{f}`' for f in REPORT_FORMATS)}")


def report_response(report: ComplianceReport, fmt: str, *, viewer: str = "") -> Rendered:
    """The report as a response of the admin page, in ``fmt`` (``html``, ``json`` or ``csv``)."""
    stamp = f"{report.since:%Y%m%d}-{report.until:%Y%m%d}"
    if fmt == "json":
        return respond(200, JSON, render_report(report, "json"))
    if fmt == "csv":
        return respond(200, CSV, render_report(report, "csv"),
                       {"Content-Disposition": f'attachment; filename="gatehouse-compliance-{stamp}.csv"'})
    return report_page(report, viewer=viewer)


# --- HTML -------------------------------------------------------------------------------------


def _table(caption: str, head: Sequence[str], rows: Sequence[Sequence[Child]], *, numeric_from: int = 1) -> Markup:
    return el("div", el("table",
                        el("caption", caption, class_="small muted"),
                        el("thead", el("tr", [el("th", h, scope="col") for h in head])),
                        el("tbody", [el("tr", [el("th", r[0], scope="row"),
                                               *[el("td", c) for c in r[1:]]]) for r in rows])),
              class_="table-wrap")


def _numbers(summary: str, table: Markup) -> Markup:
    return el("details", el("summary", summary), table)


def _lines(series: Sequence[Series]) -> list[Line]:
    return [Line(s.name, tuple((d.day, d.share) for d in s.days)) for s in series]


def _floor(series: Sequence[Series]) -> float:
    shares = [d.share for s in series for d in s.days if d.share is not None]
    low = min(shares, default=1.0)
    # Zoom in when every line stays high, so a dip from 99 % to 95 % is visible; the axis says where it starts.
    return 0.8 if low >= 0.85 else 0.5 if low >= 0.55 else 0.0


def _daily_table(caption: str, series: Sequence[Series]) -> Markup:
    days = series[0].days if series else ()
    rows = []
    for i, d in enumerate(days):
        cells: list[Child] = [d.day.isoformat()]
        for s in series:
            x: DayShare = s.days[i]
            cells.append(f"{_share(x.share)} ({x.passing}/{x.counted})")
        rows.append(cells)
    return _table(caption, ["Day", *[s.name for s in series]], rows)


def _period_table(caption: str, series: Sequence[Series], nudges: frozenset[str] = frozenset()) -> Markup:
    rows = []
    for s in series:
        shares = [d.share for d in s.days if d.share is not None]
        last = next((d for d in reversed(s.days) if d.counted), None)
        name: Child = join(el("code", s.name), " ", el("span", "nudge", class_="badge muted")) if s.name in nudges else s.name
        rows.append([name, _share(share_of(s.passing, s.counted)), _share(min(shares) if shares else None),
                     f"{_share(last.share)} ({last.passing}/{last.counted})" if last else "—"])
    return _table(caption, ["", "Over the period (device-days)", "Worst day", "Last day"], rows)


def _section_fleet(r: ComplianceReport) -> Markup:
    series = [r.fleet, *r.per_platform]
    named = [Series("All devices", r.fleet.days), *[Series(platform_name(s.name), s.days) for s in r.per_platform]]
    floor = _floor(series)
    chart = line_chart("chart-fleet", "Share of devices compliant per day",
                       f"Daily share of evaluated devices passing every blocking check, {r.since:%d %b %Y} to "
                       f"{r.until:%d %b %Y}, for the whole fleet and per platform; y axis from {floor * 100:.0f}%.",
                       _lines(named), floor=floor)
    return join(
        el("h2", "Devices compliant per day", id="fleet"),
        el("div", chart, class_="card"),
        _period_table("Compliant share per platform", named),
        _numbers("Numbers per day", _daily_table("Compliant devices per day (share, compliant/counted)", named)),
    )


def _section_checks(r: ComplianceReport) -> Markup:
    floor = _floor(r.per_check)
    chart = line_chart("chart-checks", "Share of devices passing each check per day",
                       f"Daily share of evaluated devices passing each check; y axis from {floor * 100:.0f}%.",
                       _lines(r.per_check), floor=floor)
    return join(
        el("h2", "Checks", id="checks"),
        el("div", chart, class_="card"),
        _period_table("Passing share per check", r.per_check, r.nudge_checks),
        _numbers("Numbers per day", _daily_table("Devices passing each check per day", r.per_check)),
    )


def _section_controls(r: ComplianceReport) -> Markup:
    if not r.controls:
        return join(el("h2", "Results by control", id="controls"),
                    el("p", "The policy maps no check to a control; add a `controls:` section (see policy_engine/FORMAT.md).",
                       class_="card"))
    rows = []
    framework = ""
    for c in r.controls:
        label: Child = join(el("strong", c.control.framework) if c.control.framework != framework else c.control.framework,
                            " ", el("code", c.control.id))
        framework = c.control.framework
        rows.append([label, c.control.title or "—", join([join(" " if i else "", el("code", n)) for i, n in enumerate(c.checks)]),
                     f"{_share(c.share)} ({c.passing}/{c.counted})", str(c.devices_failing)])
    return join(
        el("h2", "Results by control", id="controls"),
        el("p", "Each control with the checks the policy names as its evidence: the share of device-days on which all of "
                "them passed, and how many devices failed one of them on at least one day.", class_="small muted"),
        _table("Results by control", ["Control", "Title", "Checks", "Passing device-days", "Devices failing"], rows),
    )


def _section_longest(r: ComplianceReport) -> Markup:
    if not r.longest:
        return join(el("h2", "Longest non-compliance", id="longest"), el("p", "No device was non-compliant in the period.", class_="card"))
    chart = bar_chart("chart-longest", "Devices non-compliant longest",
                      "Hours each device stayed non-compliant in its longest streak of the period.",
                      [(s.serial, round(s.duration.total_seconds() / 3600)) for s in r.longest], unit=" h")
    rows = [[el("code", s.serial), ", ".join(s.owners) or "—", platform_name(s.platform), time_el(s.started),
             time_el(s.ended) if s.ended else el("span", "still non-compliant", class_="badge bad"),
             format_duration(s.duration), join([join(" " if i else "", el("code", c)) for i, c in enumerate(s.checks)])]
            for s in r.longest]
    return join(
        el("h2", "Devices non-compliant longest", id="longest"),
        el("div", chart, class_="card"),
        _table("Longest streak per device", ["Device", "Owner", "Platform", "From", "Until", "For", "Failing checks"], rows),
    )


def _section_remediation(r: ComplianceReport) -> Markup:
    rem = r.remediation
    median = format_duration(rem.median) if rem.median is not None else "no remediation after a denial in the period"
    chart = bar_chart("chart-remediation", "Time from denial to remediation",
                      "How many devices were fixed within each span after their first denial.", list(rem.buckets))
    return join(
        el("h2", "Remediation after a denial", id="remediation"),
        el("p", el("strong", f"Median: {median}"), f" over {len(rem.times)} remediations; "
           f"{rem.unresolved} denied device(s) still non-compliant at the end of the period.", class_="lead"),
        el("div", chart, class_="card"),
        _table("Remediations per span", ["Time to remediate", "Devices"], [[label, str(n)] for label, n in rem.buckets]),
    )


def _section_access(r: ComplianceReport) -> Markup:
    head = el("h2", "Access by device state", id="access")
    if not r.ledger_available:
        return join(head, el("p", "This store keeps no access ledger, so access by device state cannot be shown.", class_="card warn"))
    segments = [(v.value, VERDICT_COLOURS[v]) for v in AccessVerdict]
    chart = stacked_bar_chart("chart-access", "Requests per tier by verdict",
                              "Requests to each tier's services in the period, split by how they were decided.",
                              [(a.tier, [n for _, n in a.counts]) for a in r.access if a.total], segments)
    rows = [[a.tier, *[str(n) for _, n in a.counts], str(a.total)] for a in r.access]
    listed = r.non_compliant_access[:HTML_ACCESS_ROWS]
    access_rows = []
    for a in listed:
        x = a.rollup
        review: Child = "—"
        if a.review == "reviewed":
            review = el("span", f"reviewed by {a.reviewed_by}" if a.reviewed_by else "reviewed", class_="badge ok")
        elif a.review == "unreviewed":
            review = el("span", "unreviewed", class_="badge warn")
        elif a.review:
            review = el("span", a.review, class_="badge bad")
        access_rows.append([time_el(x.hour), x.tier, x.route, x.user or "—", el("code", x.device) if x.device else "—",
                            x.verdict.value, str(x.count), el("code", a.grant_id) if a.grant_id else "—",
                            a.grant_reason or x.reason or "—", review])
    more = (el("p", f"Showing {len(listed)} of {len(r.non_compliant_access)}; the JSON and CSV list every one.", class_="small muted")
            if len(listed) < len(r.non_compliant_access) else None)
    high = r.access[0].tier if r.access else ""
    bg_high = sum(1 for a in r.non_compliant_access if a.rollup.tier == high and a.rollup.verdict is AccessVerdict.BREAK_GLASS)
    return join(
        head,
        el("div", chart, class_="card") if any(a.total for a in r.access) else None,
        _table("Requests per tier and verdict", ["Tier", *[v.value for v in AccessVerdict], "Total"], rows),
        el("h3", "Access from non-compliant devices"),
        el("p", f"{len(r.non_compliant_access)} ledger rows let a non-compliant device through (break-glass, grace or "
                f"monitor mode); {bg_high} of them break-glass into the most sensitive tier `{high}`." if high else "",
           class_="small"),
        _table("Every access from a non-compliant device", ["Hour", "Tier", "Route", "User", "Device", "Verdict", "Requests",
                                                             "Grant", "Reason", "Review"], access_rows) if access_rows
        else el("p", "No access from a non-compliant device in the period.", class_="card ok"),
        more,
    )


def _section_break_glass(r: ComplianceReport) -> Markup:
    rows = [[u.user, str(u.requested), str(u.issued), str(u.used), str(u.requests),
             el("span", str(u.unreviewed), class_="badge warn") if u.unreviewed else "0"] for u in r.break_glass]
    return join(
        el("h2", "Break-glass use", id="break-glass"),
        el("p", el("strong", f"{r.unreviewed_grants} grant(s) given in the period are not reviewed yet."), class_="lead")
        if r.unreviewed_grants else el("p", "Every grant given in the period has been reviewed.", class_="lead"),
        _table("Break-glass per user", ["User", "Requested", "Given", "Used", "Requests served", "Unreviewed"], rows)
        if rows else el("p", "No break-glass in the period.", class_="card ok"),
    )


def _section_stale(r: ComplianceReport) -> Markup:
    rows = [[el("code", s.serial), ", ".join(s.owners) or "—", platform_name(s.platform),
             time_el(s.last_seen) if s.last_seen else el("span", "none in the period", class_="badge bad")] for s in r.stale]
    return join(
        el("h2", "Stale devices", id="stale"),
        el("p", f"Devices with no evaluation in the last {format_duration(r.stale_after)} of the period.", class_="small muted"),
        _table("Stale devices", ["Device", "Owner", "Platform", "Last evaluation"], rows) if rows
        else el("p", "No stale device.", class_="card ok"),
    )


def _period_form(r: ComplianceReport) -> Markup:
    last = r.until - timedelta(microseconds=1)
    query = {"since": r.since.date().isoformat(), "until": r.until.date().isoformat()}
    return el(
        "form",
        el("div",
           el("div", el("label", "From (UTC day)", for_="f-since"),
              el("input", type="text", id="f-since", name="since", value=r.since.date().isoformat(), inputmode="numeric")),
           el("div", el("label", "Until (UTC day, exclusive)", for_="f-until"),
              el("input", type="text", id="f-until", name="until", value=r.until.date().isoformat(), inputmode="numeric")),
           class_="filters"),
        el("div", el("button", "Show period", type="submit"),
           el("a", "JSON", href=COMPLIANCE_PATH + "?" + urlencode({**query, "format": "json"}), class_="button secondary"),
           el("a", "CSV", href=COMPLIANCE_PATH + "?" + urlencode({**query, "format": "csv"}), class_="button secondary"),
           class_="actions"),
        method="get", action=COMPLIANCE_PATH, class_="card", aria_label=f"Period, now {r.since:%d %b %Y} to {last:%d %b %Y}",
    )


def report_page(report: ComplianceReport, *, viewer: str = "") -> Rendered:
    """The whole report as an HTML page in the shared shell."""
    r = report
    last = r.until - timedelta(microseconds=1)
    compliant_now = next((d for d in reversed(r.fleet.days) if d.counted), None)
    summary = (f"{r.devices} devices evaluated from {r.since:%d %b %Y} to {last:%d %b %Y} (UTC). "
               + (f"On the last day {_share(compliant_now.share)} were compliant. " if compliant_now else "")
               + f"{r.remediation.unresolved} denied device(s) still unremediated; {r.unreviewed_grants} unreviewed "
               f"break-glass grant(s); {len(r.stale)} stale device(s).")
    contents = el("nav", "Sections: ", join([join(" · " if i else "", el("a", text, href=f"#{anchor}")) for i, (anchor, text) in enumerate((
        ("fleet", "Compliant per day"), ("checks", "Checks"), ("controls", "By control"), ("longest", "Longest non-compliance"),
        ("remediation", "Remediation"), ("access", "Access by device state"), ("break-glass", "Break-glass"),
        ("stale", "Stale devices")))]), aria_label="Sections", class_="small")
    body = join(
        el("h1", "Compliance report"),
        el("p", summary, class_="lead"),
        _period_form(r),
        contents,
        _section_fleet(r),
        _section_checks(r),
        _section_controls(r),
        _section_longest(r),
        _section_remediation(r),
        _section_access(r),
        _section_break_glass(r),
        _section_stale(r),
        el("h2", "How these numbers are made"),
        el("p", "Days are UTC days. A device counts on a day when it was evaluated that day, or its last evaluation of "
                "the day before carries over. It is compliant on a day when every blocking check passed in every "
                "evaluation of that day; nudges never count against it. Remediation time runs from a device's first "
                "denial for failing checks to the evaluation that found it compliant again.", class_="small muted"),
    )
    footer = join(f"Policy version {r.policy_version}. Generated ", time_el(r.generated_at),
                  f" for {viewer}" if viewer else "", ".")
    return html_response(200, "Compliance report", body, wide=True, footer=footer)
