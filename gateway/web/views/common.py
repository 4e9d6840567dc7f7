"""Pieces the deny, status and fleet pages share: remediation lookup and the finding card.

Owns: remediation_entry, finding_card, finding_data, device_facts.
Must not import: aiohttp or any decision logic.
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping

from gateway.web.views.html import Markup, el, join
from gateway.web.views.layout import format_relative, platform_name, time_el
from gateway.web.views.markdown import render_markdown, safe_href
from gateway.web.views.phrasing import describe_finding, describe_source, vendor_label
from policy_engine.decision import Finding
from policy_engine.defaults import DEFAULT_REMEDIATION
from policy_engine.model import DeviceSnapshot, OsFamily
from policy_engine.remediation import Remediation


def remediation_entry(finding: Finding, catalog: Mapping[str, Remediation]) -> Remediation:
    """The catalog entry for a finding, the built-in default, or a bare title from the check name."""
    entry = catalog.get(finding.remediation) or DEFAULT_REMEDIATION.get(finding.remediation)
    if entry is not None:
        return entry
    return Remediation(key=finding.remediation or finding.check,
                       title=finding.check.replace("_", " ").capitalize())


def steps_markdown(entry: Remediation, platform: OsFamily) -> str:
    """The Markdown steps for the device's own platform (every platform's when unknown)."""
    return entry.steps_for(platform)


def finding_data(finding: Finding, snapshot: DeviceSnapshot | None,
                 catalog: Mapping[str, Remediation]) -> dict[str, object]:
    """A finding with its human sentence and remediation, as plain data for JSON."""
    entry = remediation_entry(finding, catalog)
    platform = snapshot.platform if snapshot is not None else OsFamily.UNKNOWN
    return {
        "check": finding.check,
        "fact": finding.fact,
        "title": entry.title,
        "message": describe_finding(finding, snapshot),
        "actual": finding.actual,
        "required": finding.required,
        "severity": finding.severity.value,
        "grace_deadline": finding.grace_deadline.isoformat() if finding.grace_deadline else None,
        "why": entry.why,
        "platform": platform.value,
        "steps": "" if finding.unmeasurable else steps_markdown(entry, platform),
        "doc_url": entry.doc_url if safe_href(entry.doc_url) and not finding.unmeasurable else "",
        "remediation": finding.remediation,
        "unmeasurable": finding.unmeasurable,
    }


def finding_card(finding: Finding, snapshot: DeviceSnapshot | None, catalog: Mapping[str, Remediation],
                 *, kind: str, now: datetime | None, heading: str = "h3") -> Markup:
    """One failing check as a card: title, actual vs required, why, own-platform steps, doc link."""
    entry = remediation_entry(finding, catalog)
    platform = snapshot.platform if snapshot is not None else OsFamily.UNKNOWN
    steps = steps_markdown(entry, platform)
    title = f"Not checked: {entry.title[0].lower()}{entry.title[1:]}" if finding.unmeasurable else entry.title
    badge = {
        "bad": el("span", "Blocking", class_="badge bad"),
        "warn": el("span", "Fix soon", class_="badge warn"),
        "info": el("span", "Recommended", class_="badge info"),
    }[kind]
    deadline = None
    if finding.grace_deadline is not None:
        if kind == "warn":
            relative = f" ({format_relative(finding.grace_deadline, now=now)})" if now else ""
            deadline = el("p", "This will block access from ", time_el(finding.grace_deadline, now=now),
                          relative + ".", class_="deadline")
        elif kind == "bad":
            deadline = el("p", "The grace period to fix this ended ", time_el(finding.grace_deadline, now=now),
                          ".", class_="small muted")
    if finding.unmeasurable and (vendor := vendor_label(snapshot)):
        how = el("p", vendor, " does not report this setting to Gatehouse, so Gatehouse could not check it. Nothing"
                 " on this page will change that; if this blocks you, ask IT to measure it another way (for"
                 " example with a health agent on the device) or to change the policy.", class_="small")
    elif finding.unmeasurable:
        # Never ask the user to fix what the agent cannot see: say what was not checked and why.
        how = el("p", "Your device's health agent cannot see this setting on ", platform_name(platform),
                 ", so Gatehouse could not check it. Nothing on this page will change that; if this blocks "
                 "you, ask IT to measure it another way (for example with a configuration profile) or to "
                 "change the policy.", class_="small")
    elif steps:
        where = "your device" if platform is OsFamily.UNKNOWN else platform_name(platform)
        how = join(el(f"h{int(heading[1]) + 1}", f"How to fix it on {where}"),
                   el("div", render_markdown(steps), class_="steps"))
    else:
        how = el("p", "Ask IT how to fix this on ", platform_name(platform), ".", class_="small")
    doc = "" if finding.unmeasurable else safe_href(entry.doc_url)
    return el(
        "section",
        el(heading, title, " ", badge),
        el("p", describe_finding(finding, snapshot) + ".", class_="compare"),
        deadline,
        el("p", entry.why, class_="why") if entry.why and not finding.unmeasurable else None,
        how,
        el("p", el("a", "Read the full guide", href=doc)) if doc else None,
        el("p", "Check ", el("code", finding.check), class_="small muted"),
        class_=f"card {kind}",
        aria_label=title,
    )


def device_facts(snapshot: DeviceSnapshot | None, serial: str | None, *, now: datetime | None) -> list[Markup]:
    """``<dt>/<dd>`` pairs describing a device: name, serial, platform and OS, agent, who reported it, report times."""
    rows: list[tuple[str, object]] = []
    if snapshot is not None and snapshot.hostname:
        rows.append(("Name", snapshot.hostname))
    rows.append(("Serial number", serial or (snapshot.serial if snapshot else None) or "not identified"))
    if snapshot is not None:
        family = platform_name(snapshot.platform)
        os_text = " ".join(p for p in (snapshot.os_name or family,
                                       str(snapshot.os_version) if snapshot.os_version else "") if p)
        if snapshot.os_name and family.lower() not in snapshot.os_name.lower():
            os_text += f" ({family})"
        rows.append(("Operating system", os_text))
        if snapshot.agent_name:
            agent = snapshot.agent_name + (f" {snapshot.agent_version}" if snapshot.agent_version else "")
            rows.append(("Health agent", agent))
        rows.append(("Reported by", describe_source(snapshot, now=now)))
        rel = f" ({format_relative(snapshot.collected_at, now=now)})" if now else ""
        rows.append(("Health report collected", join(time_el(snapshot.collected_at, now=now), rel)))
        rel = f" ({format_relative(snapshot.received_at, now=now)})" if now else ""
        rows.append(("Last heard from", join(time_el(snapshot.received_at, now=now), rel)))
    return [join(el("dt", k), el("dd", v)) for k, v in rows]  # type: ignore[arg-type]
