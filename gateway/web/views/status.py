"""``/.gatehouse/``: the signed-in user's own devices, each check's state, what each can reach now.

Owns: StatusView, DeviceStatus, ServiceLink, CheckRef, GrantLine, EnrolledCertificate,
CertificateDirectory (the read-only seam to Gatehouse's issued device certificates), render_status.
Must not import: decision logic; the handler evaluates every tier for every device and passes the
Decisions in (``policies.evaluate(snapshot, tier, now=now)`` per tier name).

Enrolled laptops (a device certificate Gatehouse issued to this user) are listed with the
certificate's expiry or revocation and their health agent's last report; one enrolled but never
reported says so instead of looking like a device nobody knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Mapping, Protocol

from gateway.web.views.common import device_facts, remediation_entry
from gateway.web.views.enroll import enroll_card
import orjson

from gateway.web.views.html import Markup, el, join
from gateway.web.views.layout import (
    HTML, JSON, Rendered, format_relative, html_response, negotiate, platform_name, respond, time_el,
)
from gateway.web.views.markdown import render_markdown
from gateway.web.views.phrasing import describe_finding, describe_source, fact_label
from policy_engine.decision import Decision, Finding, Reason
from policy_engine.defaults import DEFAULT_REMEDIATION
from policy_engine.document import Severity
from policy_engine.evaluate import TierInfo
from policy_engine.model import DeviceSnapshot, OsFamily
from policy_engine.remediation import Remediation

if TYPE_CHECKING:
    from policy_engine.evaluate import CompiledPolicySet

_REASON_LABEL = {
    Reason.DEVICE_UNKNOWN: "No health report yet",
    Reason.SNAPSHOT_STALE: "Health report too old",
    Reason.SNAPSHOT_FROM_FUTURE: "Device clock is ahead",
    Reason.CHECKS_FAILED: "Blocked by failing checks",
    Reason.CHECK_UNMEASURABLE: "Blocked by checks the agent cannot measure",
    Reason.TIER_UNKNOWN: "Tier not defined",
    Reason.CHECK_ERROR: "Could not be checked",
}


_EXPLAINED = (Reason.OK, Reason.CHECKS_FAILED, Reason.CHECK_UNMEASURABLE)
"""Reasons whose decision lists every check's outcome."""


@dataclass(frozen=True, slots=True)
class ServiceLink:
    """A service behind Gatehouse, for "this device can reach …" lists."""

    route_id: str
    tier: str
    name: str = ""
    url: str = ""


@dataclass(frozen=True, slots=True)
class CheckRef:
    """A check of the policy in force: its fact, severity and remediation key."""

    name: str
    fact: str
    severity: Severity = Severity.FAIL
    remediation: str = ""


class CertificateRecordLike(Protocol):
    """The fields of a device certificate record the status page reads (the store's ``CertificateRecord``)."""

    @property
    def fingerprint(self) -> str: ...
    @property
    def serial(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def not_after(self) -> datetime: ...
    @property
    def revoked_at(self) -> datetime | None: ...


class CertificateDirectory(Protocol):
    """Read-only: the device certificates Gatehouse issued to a user, from memory."""

    def certificates_of_user(self, email: str) -> Sequence[CertificateRecordLike]:
        """Every certificate whose owner is ``email`` (lowercase), revoked and expired ones included."""
        ...


RENEW_WITHIN = timedelta(days=10)
"""The client renews a certificate with less than this left; a certificate still inside it is late."""


@dataclass(frozen=True, slots=True)
class EnrolledCertificate:
    """The newest device certificate Gatehouse issued for one of the user's laptops."""

    fingerprint: str
    not_after: datetime
    revoked_at: datetime | None = None

    @classmethod
    def newest(cls, records: Sequence[CertificateRecordLike]) -> EnrolledCertificate | None:
        """The record that expires last (a re-enrollment's), or None when there is none."""
        if not records:
            return None
        r = max(records, key=lambda c: c.not_after)
        return cls(r.fingerprint, r.not_after, r.revoked_at)

    def state(self, now: datetime) -> str:
        """``revoked``, ``expired``, ``renewal-due`` (renewal should have happened) or ``valid``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.not_after <= now:
            return "expired"
        if self.not_after - now < RENEW_WITHIN - timedelta(days=1):
            return "renewal-due"
        return "valid"


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One of the user's devices and its decision at every tier (keyed by tier name)."""

    serial: str
    snapshot: DeviceSnapshot | None
    decisions: Mapping[str, Decision]
    certificate: EnrolledCertificate | None = None
    """Set for a laptop enrolled with Gatehouse (its newest device certificate)."""


@dataclass(frozen=True, slots=True)
class GrantLine:
    """One of the user's break-glass grants that is in force or waiting for an approver."""

    grant_id: str
    status: str
    """``active`` or ``pending``."""
    device_serial: str
    scope: str
    """What it opens, in words: ``every medium service`` or the route ids."""
    expires_at: datetime | None
    href: str
    """The grant's own page, where the user can end it (or withdraw the request)."""


@dataclass(frozen=True, slots=True)
class StatusView:
    """Everything the status page shows."""

    user: str
    devices: tuple[DeviceStatus, ...]
    tiers: tuple[TierInfo, ...]
    """Least sensitive first (``policies.tiers``)."""
    checks: tuple[CheckRef, ...]
    now: datetime
    services: tuple[ServiceLink, ...] = ()
    remediation: Mapping[str, Remediation] = field(default_factory=lambda: DEFAULT_REMEDIATION)
    enroll_help: str = ""
    """Markdown shown when the user has no device and Gatehouse does not enroll laptops itself."""
    grants: tuple[GrantLine, ...] = ()
    """The user's break-glass grants in force or pending, newest first."""
    enroll_origin: str | None = None
    """Gatehouse's address for the enrollment commands; None when Gatehouse does not enroll laptops."""
    platform_hint: OsFamily = OsFamily.UNKNOWN
    """The browser's platform, to pick the enrollment commands (``platform_from_user_agent``)."""

    @classmethod
    def from_policies(cls, policies: CompiledPolicySet, *, user: str, devices: tuple[DeviceStatus, ...],
                      now: datetime, services: tuple[ServiceLink, ...] = (), enroll_help: str = "",
                      grants: tuple[GrantLine, ...] = (), enroll_origin: str | None = None,
                      platform_hint: OsFamily = OsFamily.UNKNOWN) -> StatusView:
        """Build the view from the compiled policy set in force."""
        checks = tuple(CheckRef(c.name, c.fact, c.severity, c.remediation) for c in policies.checks.values())
        return cls(user=user, devices=devices, tiers=policies.tiers, checks=checks, now=now,
                   services=services, remediation=policies.remediation, enroll_help=enroll_help, grants=grants,
                   enroll_origin=enroll_origin, platform_hint=platform_hint)


@dataclass(frozen=True, slots=True)
class _CheckState:
    check: CheckRef
    state: str
    """``blocking``, ``grace``, ``nudge``, ``ok``, ``unknown``, ``not-required``."""
    finding: Finding | None
    blocks: tuple[str, ...]


def _used_checks(view: StatusView) -> tuple[CheckRef, ...]:
    wanted: list[str] = []
    for tier in view.tiers:
        for name in tier.checks:
            if name not in wanted:
                wanted.append(name)
    by_name = {c.name: c for c in view.checks}
    return tuple(by_name.get(n, CheckRef(n, n)) for n in wanted)


def _check_states(view: StatusView, device: DeviceStatus) -> list[_CheckState]:
    states: list[_CheckState] = []
    decisions = device.decisions
    explained = any(d.reason in _EXPLAINED for d in decisions.values())
    for check in _used_checks(view):
        blocks = tuple(t for t, d in decisions.items() if any(f.check == check.name for f in d.failing))
        grace = [f for d in decisions.values() for f in d.in_grace if f.check == check.name]
        nudge = [f for d in decisions.values() for f in d.nudges if f.check == check.name]
        failing = [f for d in decisions.values() for f in d.failing if f.check == check.name]
        required_by = [t.name for t in view.tiers if check.name in t.checks]
        evaluated = any(decisions.get(t) is not None and decisions[t].reason in _EXPLAINED
                        for t in required_by)
        if failing:
            states.append(_CheckState(check, "blocking", failing[0], blocks))
        elif grace:
            states.append(_CheckState(check, "grace", min(grace, key=lambda f: f.grace_deadline or view.now), ()))
        elif nudge:
            states.append(_CheckState(check, "nudge", nudge[0], ()))
        elif evaluated or (explained and not required_by):
            states.append(_CheckState(check, "ok", None, ()))
        else:
            states.append(_CheckState(check, "unknown", None, ()))
    return states


def _reachable(view: StatusView, device: DeviceStatus) -> list[tuple[TierInfo, Decision | None]]:
    return [(t, device.decisions.get(t.name)) for t in view.tiers]


def _deadlines(view: StatusView) -> list[tuple[datetime, DeviceStatus, Finding]]:
    seen: dict[tuple[str, str], tuple[datetime, DeviceStatus, Finding]] = {}
    for device in view.devices:
        for decision in device.decisions.values():
            for f in decision.in_grace:
                if f.grace_deadline is None:
                    continue
                key = (device.serial, f.check)
                if key not in seen or f.grace_deadline < seen[key][0]:
                    seen[key] = (f.grace_deadline, device, f)
    return sorted(seen.values(), key=lambda item: (item[0], item[1].serial, item[2].check))


def _device_name(device: DeviceStatus) -> str:
    if device.snapshot is not None and device.snapshot.hostname:
        return device.snapshot.hostname
    return device.serial


_BADGES = {
    "blocking": ("bad", "Blocking"),
    "grace": ("warn", "Fix soon"),
    "nudge": ("info", "Recommended"),
    "ok": ("ok", "OK"),
    "unknown": ("muted", "Not checked"),
}


def _services_for(view: StatusView, tier: str) -> list[Markup]:
    out = []
    for s in view.services:
        if s.tier == tier:
            out.append(el("a", s.name or s.route_id, href=s.url) if s.url.startswith(("https://", "http://", "/"))
                       else el("span", s.name or s.route_id))
    return out


NEVER_REPORTED = "Enrolled, but its health agent has never reported"


def _certificate_cell(cert: EnrolledCertificate, now: datetime) -> Markup:
    state, until = cert.state(now), cert.not_after
    if state == "revoked" and cert.revoked_at is not None:
        return join(el("span", "Revoked", class_="badge bad"), " on ", time_el(cert.revoked_at, now=now),
                    ". Ask IT why, or enroll the laptop again.")
    if state == "expired":
        return join(el("span", "Expired", class_="badge bad"), " on ", time_el(until, now=now),
                    ". It was not renewed in time: enroll the laptop again.")
    if state == "renewal-due":
        return join(el("span", "Renew now", class_="badge warn"), " valid until ", time_el(until, now=now),
                    f" ({format_relative(until, now=now)}). Automatic renewal has not run on this laptop; "
                    "run the enrollment program with ", el("code", "--renew"), ".")
    return join(el("span", "Valid", class_="badge ok"), " until ", time_el(until, now=now),
                f" ({format_relative(until, now=now)}); it renews itself before then.")


def _agent_cell(snapshot: DeviceSnapshot | None, now: datetime) -> Markup:
    if snapshot is None:
        return el("span", NEVER_REPORTED, class_="badge warn")
    return join("Last report ", time_el(snapshot.received_at, now=now),
                f" ({format_relative(snapshot.received_at, now=now)}), through ", el("code", snapshot.source),
                f" from {platform_name(snapshot.platform)}")


def _enrolled_section(view: StatusView) -> Markup | None:
    enrolled = [d for d in view.devices if d.certificate is not None]
    if not enrolled:
        return None
    rows = [el("tr", el("th", el("strong", _device_name(d)), el("div", d.serial, class_="small muted"),
                        scope="row", class_="col-main"),
                  el("td", _certificate_cell(d.certificate, view.now), data_label="Certificate"),
                  el("td", _agent_cell(d.snapshot, view.now), data_label="Health agent"))
            for d in enrolled if d.certificate is not None]
    return el("section", el("h2", "Enrolled laptops"),
              el("p", "Laptops you enrolled with Gatehouse: their certificate names the laptop's serial number and "
                      "you, and their health agent reports to Gatehouse.", class_="muted"),
              el("div", el("table", el("thead", el("tr", el("th", "Laptop", scope="col"),
                                                    el("th", "Certificate", scope="col"),
                                                    el("th", "Health agent", scope="col"))),
                           el("tbody", rows), class_="stack"), class_="table-wrap"),
              class_="card", aria_label="Enrolled laptops")


def _device_section(view: StatusView, device: DeviceStatus, index: int) -> Markup:
    snapshot, now = device.snapshot, view.now
    reach_rows = []
    for tier, decision in _reachable(view, device):
        if decision is None:
            badge = el("span", "Unknown", class_="badge muted")
        elif decision.allowed:
            badge = el("span", "Can reach now", class_="badge ok")
        else:
            badge = el("span", _REASON_LABEL.get(decision.reason, decision.reason.value), class_="badge bad")
        services = _services_for(view, tier.name)
        reach_rows.append(el(
            "tr",
            el("th", el("strong", tier.name), el("div", tier.description, class_="small muted") if tier.description else None,
               scope="row", class_="col-main"),
            el("td", badge, data_label="Status"),
            el("td", join([join(", " if i else "", s) for i, s in enumerate(services)]) if services else
               el("span", "—", class_="muted"), data_label="Services"),
        ))
    check_rows = []
    passing: list[Markup] = []
    order = {"blocking": 0, "grace": 1, "nudge": 2, "unknown": 3, "ok": 4}
    for st in sorted(_check_states(view, device), key=lambda x: order[x.state]):
        tone, label = _BADGES[st.state]
        entry = remediation_entry(
            Finding(st.check.name, st.check.fact, "", "", st.check.severity, None, st.check.remediation),
            view.remediation)
        name = join(fact_label(st.check.fact)[:1].upper() + fact_label(st.check.fact)[1:], " ",
                    el("code", st.check.name, class_="small"))
        if st.state == "ok":
            passing.append(el("li", name))
            continue
        if st.finding is not None:
            detail: list[Markup | str] = [describe_finding(st.finding, snapshot) + "."]
            if st.state == "grace" and st.finding.grace_deadline is not None:
                detail += [el("div", "Blocks access from ", time_el(st.finding.grace_deadline, now=now),
                              f" ({format_relative(st.finding.grace_deadline, now=now)}).", class_="deadline")]
            if st.blocks:
                detail += [el("div", "Blocking access to: " + ", ".join(st.blocks), class_="small muted")]
            steps = entry.steps_for(snapshot.platform) if snapshot is not None else ""
            if steps:
                detail += [el("details", el("summary", "How to fix it"),
                              el("div", render_markdown(steps), class_="steps small"))]
        else:
            detail = [el("span", "Not checked: no current health report", class_="muted")]
        check_rows.append(el("tr", el("th", el("strong", entry.title), el("div", name, class_="small muted"),
                                      scope="row", class_="col-main"),
                             el("td", el("span", label, class_=f"badge {tone}"), data_label="State"),
                             el("td", detail, data_label="Details")))
    states = {st.state for st in _check_states(view, device)}
    if states == {"unknown"}:
        checks_block: Markup = el("p", "No current health report from this device, so its checks could not be run.",
                                  class_="muted")
    elif check_rows:
        checks_block = el("div", el("table", el("thead", el("tr", el("th", "Needs attention", scope="col"),
                                                                     el("th", "State", scope="col"),
                                                                     el("th", "Details", scope="col"))),
                                            el("tbody", check_rows), class_="stack"), class_="table-wrap")
    else:
        checks_block = el("p", el("span", "All checks pass", class_="badge ok"))
    if passing:
        checks_block = join(checks_block, el("details", el("summary", f"{len(passing)} checks pass"),
                                             el("ul", passing)))
    heading_id = f"device-{index}"
    never = (el("p", el("strong", NEVER_REPORTED + "."), " Gatehouse cannot check this laptop until its health agent "
                     "(osquery) sends a first report: install and start it as IT describes, then reload this page.",
                class_="compare") if snapshot is None and device.certificate is not None else None)
    return el(
        "section",
        el("h2", _device_name(device), id=heading_id),
        never,
        el("dl", device_facts(snapshot, device.serial, now=now), class_="facts"),
        el("h3", "What this device can reach now"),
        el("div", el("table", el("thead", el("tr", el("th", "Tier", scope="col"), el("th", "Status", scope="col"),
                                              el("th", "Services", scope="col"))),
                     el("tbody", reach_rows), class_="stack"), class_="table-wrap"),
        el("h3", "Checks"),
        checks_block,
        class_="card",
        aria_labelledby=heading_id,
    )


def _html(view: StatusView) -> Rendered:
    deadlines = _deadlines(view)
    coming: Markup | None = None
    if deadlines:
        items = []
        for when, device, f in deadlines:
            entry = remediation_entry(f, view.remediation)
            items.append(el("li", el("strong", entry.title), f" on {_device_name(device)}: ",
                            "blocks access from ", time_el(when, now=view.now),
                            f" ({format_relative(when, now=view.now)})."))
        coming = el("section", el("h2", "Coming up"),
                    el("p", "Fix these before their deadline to keep access.", class_="muted"),
                    el("ul", items), class_="card warn", aria_label="Coming up")
    emergency: Markup | None = None
    if view.grants:
        lines = []
        for grant in view.grants:
            if grant.status == "active" and grant.expires_at is not None:
                state = join("Active until ", time_el(grant.expires_at, now=view.now), f" ({format_relative(grant.expires_at, now=view.now)})")
            else:
                state = Markup("Waiting for an approver")
            lines.append(el("li", el("strong", state), f": {grant.scope} from {grant.device_serial}. ",
                            el("a", "Details, or end it", href=grant.href)))
        emergency = el("section", el("h2", "Emergency access"),
                       el("p", "Break-glass access you asked for. It is logged and reviewed; end it as soon as you are done.",
                          class_="muted"),
                       el("ul", lines), class_="card warn", aria_label="Emergency access")
    if view.devices:
        lead = (f"{len(view.devices)} device{'s' if len(view.devices) != 1 else ''} registered to you. "
                "This page shows each device's health checks and what it can reach right now.")
        devices = [_device_section(view, d, i) for i, d in enumerate(view.devices)]
    elif view.enroll_origin is not None:
        lead = "No device is registered to you yet."
        devices = [enroll_card(view.enroll_origin, view.platform_hint)]
    else:
        lead = "No device is registered to you yet."
        devices = [el("section", el("h2", "Enroll a device"),
                      el("div", render_markdown(view.enroll_help), class_="steps") if view.enroll_help else
                      el("p", "Ask IT how to enroll your laptop with Gatehouse."), class_="card info",
                      aria_label="Enroll a device")]
    body = join(el("h1", "Your devices"),
                el("p", "Signed in as ", el("strong", view.user), ". ", lead, class_="lead"),
                emergency, coming, _enrolled_section(view), devices)
    return html_response(200, "Your devices", body, extra={"Vary": "Accept"})


def status_document(view: StatusView) -> dict[str, object]:
    """The same content as JSON."""
    devices = []
    for d in view.devices:
        s = d.snapshot
        cert = d.certificate
        devices.append({
            "certificate": {"fingerprint": cert.fingerprint, "not_after": cert.not_after.isoformat(),
                            "revoked_at": cert.revoked_at.isoformat() if cert.revoked_at else None,
                            "state": cert.state(view.now)} if cert is not None else None,
            "agent": {"last_report": s.received_at.isoformat(), "source": s.source} if s is not None else None,
            "serial": d.serial,
            "name": s.hostname if s else "",
            "platform": s.platform.value if s else None,
            "os": f"{s.os_name} {s.os_version}".strip() if s else None,
            "collected_at": s.collected_at.isoformat() if s else None,
            "received_at": s.received_at.isoformat() if s else None,
            "source": s.source if s else None,
            "reported_by": describe_source(s, now=view.now) if s else None,
            "tiers": {t: {"allowed": dec.allowed, "reason": dec.reason.value} for t, dec in d.decisions.items()},
            "checks": [{"check": st.check.name, "state": st.state,
                        "message": describe_finding(st.finding, s) if st.finding else "",
                        "grace_deadline": st.finding.grace_deadline.isoformat()
                        if st.finding and st.finding.grace_deadline else None,
                        "blocks": list(st.blocks)} for st in _check_states(view, d)],
        })
    grants = [{"id": g.grant_id, "status": g.status, "device": g.device_serial, "scope": g.scope,
               "expires_at": g.expires_at.isoformat() if g.expires_at else None, "href": g.href} for g in view.grants]
    return {"user": view.user, "generated_at": view.now.isoformat(), "devices": devices,
            "services": [{"route": s.route_id, "name": s.name, "tier": s.tier} for s in view.services],
            "grants": grants}


def render_status(view: StatusView, *, accept: str | None) -> Rendered:
    """The user's status page: HTML by default, JSON when asked for it."""
    if negotiate(accept, (HTML, JSON)) == JSON:
        return respond(200, JSON, orjson.dumps(status_document(view), option=orjson.OPT_INDENT_2),
                       {"Vary": "Accept"})
    return _html(view)
