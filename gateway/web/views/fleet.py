"""``/.gatehouse/admin/devices``: every device, its owner, health and reach, for reviewers and admins.

Owns: FleetRow, FleetFilter, FleetView, filter_rows, render_fleet, CSV_COLUMNS.
Must not import: decision logic or the store; the handler builds one FleetRow per device from its
snapshot and its Decision at every tier (``FleetRow.from_device``), then calls ``render_fleet``.

Answers "which people own devices that fail policy and can reach high-tier services" with
``?non_compliant=1&tier=high``, and "which devices does nobody own" with ``?unowned=1``. Owners
are the handler's (``SnapshotCache.owners_of``: the owner inventory, or trusted reported owners);
devices the inventory lists that never reported appear as never seen. The same rows come out as HTML, CSV (``format=csv`` or
``Accept: text/csv``) and JSON (``format=json`` or ``Accept: application/json``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Iterable, Mapping
from urllib.parse import urlencode

import orjson

from gateway.web.views.html import Markup, el, filter_select, join
from gateway.web.views.layout import (
    CSV, HTML, JSON, Rendered, format_relative, html_response, negotiate, platform_name, respond, time_el,
)
from policy_engine.decision import Decision, Reason
from policy_engine.model import DeviceSnapshot, OsFamily

FLEET_PATH = "/.gatehouse/admin/devices"
FLEET_REVOKE_PATH = "/.gatehouse/admin/devices/revoke-certificate"
CSV_COLUMNS = (
    "serial", "hostname", "owners", "platform", "os", "agent", "last_seen", "collected_at",
    "reachable_tiers", "failing_checks", "grace_deadlines", "nudges", "stale", "enrolled",
)
_TRUE = frozenset({"1", "true", "on", "yes"})
_SPREADSHEET_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One device as the fleet view lists it; plain values only."""

    serial: str
    hostname: str = ""
    owners: tuple[str, ...] = ()
    platform: OsFamily = OsFamily.UNKNOWN
    os: str = ""
    agent: str = ""
    last_seen: datetime | None = None
    """When Gatehouse last received a report (None: never)."""
    collected_at: datetime | None = None
    reachable_tiers: tuple[str, ...] = ()
    failing: tuple[str, ...] = ()
    """Checks blocking at one tier or more."""
    grace: tuple[tuple[str, datetime], ...] = ()
    """Checks failing within their grace period, with the earliest deadline."""
    nudges: tuple[str, ...] = ()
    stale_tiers: tuple[str, ...] = ()
    """Tiers refused because the report is too old."""
    certificate_until: datetime | None = None
    """End of validity of the device's newest unrevoked certificate from Gatehouse's device CA (None: it has none)."""

    @property
    def enrolled(self) -> bool:
        """Whether Gatehouse has ever had a report from the device."""
        return self.last_seen is not None

    @property
    def stale(self) -> bool:
        """The report is too old for at least one tier, or there is none."""
        return bool(self.stale_tiers) or not self.enrolled

    @property
    def non_compliant(self) -> bool:
        """A check fails (blocking or in grace), or the device cannot be judged (stale, unknown)."""
        return bool(self.failing or self.grace) or self.stale

    @classmethod
    def from_device(cls, serial: str, snapshot: DeviceSnapshot | None, decisions: Mapping[str, Decision], *,
                    owners: tuple[str, ...] = ()) -> FleetRow:
        """Summarise a device from its snapshot and its decision at every tier (least sensitive first)."""
        failing: dict[str, None] = {}
        nudges: dict[str, None] = {}
        grace: dict[str, datetime] = {}
        for decision in decisions.values():
            for f in decision.failing:
                failing[f.check] = None
            for f in decision.nudges:
                nudges[f.check] = None
            for f in decision.in_grace:
                if f.grace_deadline is not None and (f.check not in grace or f.grace_deadline < grace[f.check]):
                    grace[f.check] = f.grace_deadline
        for name in failing:
            grace.pop(name, None)
        reachable = tuple(t for t, d in decisions.items() if d.allowed)
        stale = tuple(t for t, d in decisions.items() if d.reason is Reason.SNAPSHOT_STALE)
        if snapshot is None:
            return cls(serial=serial, owners=owners, reachable_tiers=reachable, stale_tiers=stale)
        os_text = " ".join(x for x in (snapshot.os_name or platform_name(snapshot.platform),
                                       str(snapshot.os_version) if snapshot.os_version else "") if x)
        agent = " ".join(x for x in (snapshot.agent_name,
                                     str(snapshot.agent_version) if snapshot.agent_version else "") if x)
        return cls(
            serial=serial, hostname=snapshot.hostname, owners=owners,
            platform=snapshot.platform, os=os_text, agent=agent, last_seen=snapshot.received_at,
            collected_at=snapshot.collected_at, reachable_tiers=reachable, failing=tuple(failing),
            grace=tuple(sorted(grace.items(), key=lambda kv: (kv[1], kv[0]))), nudges=tuple(nudges),
            stale_tiers=stale,
        )

    def to_dict(self) -> dict[str, object]:
        """Plain data for JSON."""
        return {
            "serial": self.serial,
            "hostname": self.hostname,
            "owners": list(self.owners),
            "platform": self.platform.value,
            "os": self.os,
            "agent": self.agent,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "collected_at": self.collected_at.isoformat() if self.collected_at else None,
            "reachable_tiers": list(self.reachable_tiers),
            "failing_checks": list(self.failing),
            "grace_deadlines": [{"check": c, "deadline": d.isoformat()} for c, d in self.grace],
            "nudges": list(self.nudges),
            "stale_tiers": list(self.stale_tiers),
            "stale": self.stale,
            "enrolled": self.enrolled,
            "non_compliant": self.non_compliant,
            "certificate_until": self.certificate_until.isoformat() if self.certificate_until else None,
        }


@dataclass(frozen=True, slots=True)
class FleetFilter:
    """The fleet view's filters, as GET parameters; empty means "any"."""

    non_compliant: bool = False
    stale: bool = False
    check: str = ""
    """Only devices failing this check (blocking or in grace)."""
    tier: str = ""
    """Only devices that can reach this tier now."""
    owner: str = ""
    """Case-insensitive substring of an owner's address."""
    platform: str = ""
    unowned: bool = False
    """Only devices nobody owns (no owner inventory entry, and no trusted reported owner)."""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> FleetFilter:
        """Read the filters from a request's query (unknown keys are ignored)."""
        def text(name: str) -> str:
            return str(query.get(name, "")).strip()[:200]

        platform = text("platform").lower()
        return cls(
            non_compliant=text("non_compliant").lower() in _TRUE,
            stale=text("stale").lower() in _TRUE,
            check=text("check"),
            tier=text("tier"),
            owner=text("owner"),
            platform=platform if platform in {p.value for p in OsFamily} else "",
            unowned=text("unowned").lower() in _TRUE,
        )

    def to_query(self) -> dict[str, str]:
        """The non-empty filters as GET parameters."""
        out = {k: ("1" if v is True else str(v)) for k, v in asdict(self).items() if v}
        return out

    @property
    def active(self) -> bool:
        """Whether any filter is set."""
        return bool(self.to_query())


def filter_rows(rows: Iterable[FleetRow], f: FleetFilter) -> tuple[FleetRow, ...]:
    """The rows that match every set filter, in their original order."""
    owner = f.owner.lower()
    out = []
    for row in rows:
        if f.non_compliant and not row.non_compliant:
            continue
        if f.stale and not row.stale:
            continue
        if f.check and f.check not in row.failing and all(c != f.check for c, _ in row.grace):
            continue
        if f.tier and f.tier not in row.reachable_tiers:
            continue
        if owner and not any(owner in o.lower() for o in row.owners):
            continue
        if f.platform and row.platform.value != f.platform:
            continue
        if f.unowned and row.owners:
            continue
        out.append(row)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class FleetView:
    """Every device row, the filters asked for, and the choices the filter form offers."""

    rows: tuple[FleetRow, ...]
    filter: FleetFilter
    tiers: tuple[str, ...]
    """Tier names, least sensitive first."""
    checks: tuple[str, ...]
    now: datetime
    limit: int = 500
    """Rows shown on the HTML page; CSV and JSON always carry every matching row."""
    viewer: str = ""
    csrf_token: str = ""
    """For the per-device "Revoke certificate" forms (the viewer's token)."""
    two_agents: frozenset[str] = frozenset()
    """Serials a second osquery node enrolled under another host identity (marked "two agents report this serial")."""


def _revoke_form(serial: str, csrf_token: str) -> Markup:
    """POST form revoking every certificate the device CA issued for ``serial``."""
    return el("form",
              el("input", type="hidden", name="csrf_token", value=csrf_token),
              el("input", type="hidden", name="serial", value=serial),
              el("button", "Revoke certificate", type="submit", class_="secondary"),
              method="post", action=FLEET_REVOKE_PATH)


def _safe_cell(value: str) -> str:
    # A cell starting with = + - @ would run as a formula in a spreadsheet; quote it.
    return "'" + value if value.startswith(_SPREADSHEET_FORMULA) else value


def _csv(rows: tuple[FleetRow, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([_safe_cell(x) for x in (
            r.serial, r.hostname, ";".join(r.owners), r.platform.value, r.os, r.agent,
            r.last_seen.isoformat() if r.last_seen else "", r.collected_at.isoformat() if r.collected_at else "",
            ";".join(r.reachable_tiers), ";".join(r.failing),
            ";".join(f"{c}@{d.isoformat()}" for c, d in r.grace), ";".join(r.nudges),
            "yes" if r.stale else "no", "yes" if r.enrolled else "no",
        )])
    return buffer.getvalue()


def _form(view: FleetView) -> Markup:
    f = view.filter
    return el(
        "form",
        el("fieldset",
           el("legend", "Show only"),
           el("label", el("input", type="checkbox", name="non_compliant", value="1", checked=f.non_compliant,
                          id="f-non_compliant"), "Non-compliant devices", class_="check", for_="f-non_compliant"),
           el("label", el("input", type="checkbox", name="stale", value="1", checked=f.stale, id="f-stale"),
              "Stale or never reported", class_="check", for_="f-stale"),
           el("label", el("input", type="checkbox", name="unowned", value="1", checked=f.unowned, id="f-unowned"),
              "Owned by nobody", class_="check", for_="f-unowned")),
        el("div",
           filter_select("check", "Failing check", [(c, c) for c in view.checks], f.check),
           filter_select("tier", "Can reach tier now", [(t, t) for t in view.tiers], f.tier),
           filter_select("platform", "Platform", [(p.value, platform_name(p)) for p in OsFamily
                                            if p is not OsFamily.UNKNOWN], f.platform),
           el("div", el("label", "Owner contains", for_="f-owner"),
              el("input", type="search", id="f-owner", name="owner", value=f.owner, autocomplete="off")),
           class_="filters"),
        el("div", el("button", "Apply filters", type="submit"),
           el("a", "Clear", href=FLEET_PATH, class_="button secondary"), class_="actions"),
        method="get",
        action=FLEET_PATH,
        class_="card",
        aria_label="Filter devices",
    )


def _list(items: Iterable[Markup | str], empty: str | Markup = "—") -> Markup:
    parts = list(items)
    if not parts:
        return empty if isinstance(empty, Markup) else el("span", empty, class_="muted")
    return el("ul", [el("li", p) for p in parts], class_="plain")


def _html(view: FleetView, rows: tuple[FleetRow, ...]) -> Rendered:
    now = view.now
    shown = rows[: max(0, view.limit)]
    table_rows = []
    for r in shown:
        seen = (join(time_el(r.last_seen, now=now), el("div", format_relative(r.last_seen, now=now), class_="small muted"))
                if r.last_seen else el("span", "never", class_="badge bad"))
        if r.stale_tiers and r.last_seen:
            seen = join(seen, el("span", "stale", class_="badge warn"))
        table_rows.append(el(
            "tr",
            el("th", el("strong", r.hostname) if r.hostname else el("span", "No report yet", class_="muted"),
               el("div", el("code", r.serial), class_="small"),
               el("div", "Certificate until ", time_el(r.certificate_until, now=now), _revoke_form(r.serial, view.csrf_token),
                  class_="small") if r.certificate_until else None,
               el("span", "two agents report this serial", class_="badge bad") if r.serial in view.two_agents else None,
               scope="row"),
            el("td", _list(r.owners, empty=el("span", "unowned", class_="badge warn")), data_label="Owner"),
            el("td", r.os or el("span", "—", class_="muted"), data_label="OS"),
            el("td", r.agent or el("span", "—", class_="muted"), data_label="Agent"),
            el("td", seen, data_label="Last report"),
            el("td", join([join(" " if i else "", el("span", t, class_="badge ok"))
                           for i, t in enumerate(r.reachable_tiers)]) if r.reachable_tiers
               else el("span", "none", class_="muted"), data_label="Can reach now"),
            el("td", _list([el("code", c) for c in r.failing]), data_label="Failing checks"),
            el("td", _list([join(el("code", c), el("div", time_el(d, now=now), class_="small deadline"))
                            for c, d in r.grace]), data_label="Grace deadlines"),
        ))
    query = view.filter.to_query()
    csv_href = FLEET_PATH + "?" + urlencode({**query, "format": "csv"})
    json_href = FLEET_PATH + "?" + urlencode({**query, "format": "json"})
    non_compliant = sum(1 for r in view.rows if r.non_compliant)
    unowned = sum(1 for r in view.rows if not r.owners)
    summary = (f"{len(view.rows)} devices, {non_compliant} non-compliant, {unowned} owned by nobody. "
               + (f"{len(rows)} match the filters." if view.filter.active else ""))
    more = (el("p", f"Showing the first {len(shown)} of {len(rows)}; download the CSV for all of them.",
               class_="muted") if len(shown) < len(rows) else None)
    table = (el("div", el("table",
                          el("thead", el("tr", [el("th", h, scope="col") for h in (
                              "Device", "Owner", "OS", "Agent", "Last report", "Can reach now",
                              "Failing checks", "Grace deadlines")])),
                          el("tbody", table_rows), class_="stack"), class_="table-wrap")
             if rows else el("p", "No device matches these filters.", class_="card"))
    body = join(
        el("h1", "Devices"),
        el("p", summary, class_="lead"),
        el("h2", "Filters"),
        _form(view),
        el("h2", "Matching devices"),
        el("p", "Export for auditors: ", el("a", "CSV", href=csv_href), " · ", el("a", "JSON", href=json_href),
           class_="small"),
        more,
        table,
    )
    footer = join("Generated ", time_el(now, now=now), f" for {view.viewer}" if view.viewer else "")
    return html_response(200, "Devices", body, wide=True, footer=footer, extra={"Vary": "Accept"})


def render_fleet(view: FleetView, *, accept: str | None, format: str | None = None) -> Rendered:
    """The filtered device list as HTML, CSV or JSON (``format`` beats the Accept header)."""
    rows = filter_rows(view.rows, view.filter)
    chosen = {"csv": CSV, "json": JSON, "html": HTML}.get((format or "").lower()) or negotiate(
        accept, (HTML, JSON, CSV))
    if chosen == CSV:
        stamp = view.now.strftime("%Y%m%dT%H%MZ")
        return respond(200, CSV, _csv(rows), {
            "Content-Disposition": f'attachment; filename="gatehouse-devices-{stamp}.csv"', "Vary": "Accept"})
    if chosen == JSON:
        doc = {"generated_at": view.now.isoformat(), "filter": view.filter.to_query(), "total": len(view.rows),
               "count": len(rows), "devices": [r.to_dict() for r in rows]}
        return respond(200, JSON, orjson.dumps(doc), {"Vary": "Accept"})
    return _html(view, rows)
