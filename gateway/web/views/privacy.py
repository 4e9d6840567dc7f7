"""``/.gatehouse/privacy``: what Gatehouse collects about a device, why, who sees it, how long.

Owns: PrivacyView, FactUse, render_privacy, SNAPSHOT_FIELDS.
Must not import: decision logic; the page is generated from the policy in force (which facts its
checks read, in which tiers) and from the snapshot's fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.web.views.html import Markup, el, join
from gateway.web.views.layout import Rendered, format_duration, html_response, time_el
from gateway.web.views.phrasing import fact_label
from policy_engine.evaluate import TierInfo

if TYPE_CHECKING:
    from policy_engine.evaluate import CompiledPolicySet

SNAPSHOT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("serial", "Hardware serial number", "Identifies the device; it is how Gatehouse tells your devices apart."),
    ("hostname", "Device name", "Shown to you and to IT so you can recognise the device."),
    ("owners", "Owner email addresses", "Links the device to you, so only you can use it to sign in."),
    ("platform", "Platform (macOS, Windows, Linux)", "Picks the right rules and fix-it steps for your device."),
    ("os_name", "Operating system name", "Shown on your pages; picks the right fix-it steps."),
    ("os_version", "Operating system version", "Old versions have known security flaws."),
    ("distribution", "Linux distribution", "Linux versions are compared per distribution."),
    ("os_build", "Operating system build", "Identifies the exact release installed."),
    ("agent_name", "Health agent name", "Only reports from the approved agent are trusted."),
    ("agent_version", "Health agent version", "Old agents may report facts wrongly."),
    ("collected_at", "When the report was collected", "Old reports are not trusted."),
    ("received_at", "When Gatehouse received it", "Old reports are not trusted."),
    ("source", "How the report arrived", "Shown to IT when a device stops reporting."),
    ("firewall_enabled", "Firewall on or off", "Blocks unexpected incoming connections."),
    ("disk_encrypted", "Disk encryption on or off", "Keeps data unreadable if the device is lost."),
    ("screen_lock_enabled", "Screen lock password on or off", "Stops others using an unattended device."),
    ("screen_lock_delay_s", "Idle time before the screen locks", "Shorter is safer for unattended devices."),
    ("remote_login_enabled", "Remote login (SSH / Remote Desktop) on or off", "Remote login exposes the device to the network."),
    ("auto_updates_enabled", "Automatic updates on or off", "Security fixes arrive sooner."),
    ("sip_enabled", "System Integrity Protection on or off (macOS)", "Protects macOS itself from malware."),
    ("gatekeeper_enabled", "Gatekeeper on or off (macOS)", "Keeps unsigned apps from running."),
)
"""Every snapshot field: name, what it is, why Gatehouse has it."""

NOT_COLLECTED = (
    "your files, documents, photos or email",
    "your browsing history or the websites you visit outside Gatehouse",
    "your location",
    "keystrokes, screenshots or what is on your screen",
    "the list of apps you have installed (unless a check listed above asks about one)",
)

DEFAULT_UPSTREAM_RECEIVES = (
    "who you are (your user name and email)",
    "which device you used (its serial number) and the tier it met",
)


@dataclass(frozen=True, slots=True)
class FactUse:
    """A fact the policy in force reads, and which checks and tiers read it."""

    fact: str
    checks: tuple[str, ...]
    tiers: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class PrivacyView:
    """Everything the privacy page shows; ``from_policies`` fills the facts from the policy in force."""

    facts_in_use: tuple[FactUse, ...]
    tiers: tuple[TierInfo, ...]
    retention_days: int
    """How long snapshot history is kept."""
    audit_retention_days: int | None = None
    """How long break-glass audit entries are kept; None: for as long as the audit log exists."""
    log_retention_days: int | None = None
    admin_groups: tuple[str, ...] = ()
    """Groups whose members see the fleet view."""
    reviewer_groups: tuple[str, ...] = ()
    upstream_receives: tuple[str, ...] = DEFAULT_UPSTREAM_RECEIVES
    contact: str = "your IT team"
    policy_version: str = ""
    now: datetime | None = None

    @classmethod
    def from_policies(cls, policies: CompiledPolicySet, *, retention_days: int, **options: object) -> PrivacyView:
        """Build the view from the compiled policy set in force; ``options`` are the other fields."""
        uses: dict[str, FactUse] = {}
        for check in policies.checks.values():
            tiers = tuple(t.name for t in policies.tiers if check.name in t.checks)
            old = uses.get(check.fact)
            if old is None:
                uses[check.fact] = FactUse(check.fact, (check.name,), tiers)
            else:
                merged = tuple(dict.fromkeys(old.tiers + tiers))
                uses[check.fact] = dataclasses.replace(old, checks=old.checks + (check.name,), tiers=merged)
        return cls(facts_in_use=tuple(uses.values()), tiers=policies.tiers, retention_days=retention_days,
                   policy_version=policies.version, **options)  # type: ignore[arg-type]


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _groups(names: tuple[str, ...]) -> Markup:
    return join([join(", " if i else "", el("code", n)) for i, n in enumerate(names)])


def render_privacy(view: PrivacyView) -> Rendered:
    """The privacy page, always HTML."""
    used = {u.fact: u for u in view.facts_in_use}
    field_names = {name for name, _, _ in SNAPSHOT_FIELDS}
    rows = []
    for name, what, why in SNAPSHOT_FIELDS:
        use = used.get(name)
        if use is not None:
            checked = join(el("span", "Checked", class_="badge warn"), " by ",
                           _groups(use.checks), el("div", "Tiers: " + ", ".join(use.tiers), class_="small muted")
                           if use.tiers else None)
        elif name in ("serial", "hostname", "owners", "platform", "collected_at", "received_at"):
            checked = el("span", "Always used", class_="badge info")
        else:
            checked = el("span", "Not checked by the current policy", class_="badge muted")
        rows.append(el("tr", el("th", what, el("div", el("code", name), class_="small"), scope="row"),
                       el("td", why, data_label="Why"), el("td", checked, data_label="Used by the current rules")))
    for use in view.facts_in_use:
        if use.fact in field_names:
            continue
        rows.append(el("tr", el("th", fact_label(use.fact).capitalize(), el("div", el("code", use.fact), class_="small"),
                                scope="row"),
                       el("td", "An extra fact the policy asks the agent to report.", data_label="Why"),
                       el("td", el("span", "Checked", class_="badge warn"), " by ", _groups(use.checks),
                          el("div", "Tiers: " + ", ".join(use.tiers), class_="small muted") if use.tiers else None,
                          data_label="Used by the current rules")))
    tier_items = [el("li", el("strong", t.name), f" — {t.description} " if t.description else " ",
                     f"(needs a report from the last {format_duration(t.max_snapshot_age)})")
                  for t in view.tiers]
    who = [el("li", el("strong", "You"), ": every fact about your own devices, on ",
              el("a", "your devices page", href="/.gatehouse/"), ".")]
    if view.admin_groups:
        who.append(el("li", el("strong", "Security and IT administrators"), " (members of ",
                      _groups(view.admin_groups), "): the device list with owner, platform, versions, "
                      "last report and failing checks, to find devices that need help."))
    else:
        who.append(el("li", el("strong", "Security and IT administrators"),
                      ": the device list with owner, platform, versions, last report and failing checks."))
    if view.reviewer_groups:
        who.append(el("li", el("strong", "Break-glass reviewers"), " (members of ", _groups(view.reviewer_groups),
                      "): when you ask for emergency access, your reason and your device's failing checks "
                      "at that moment."))
    who.append(el("li", el("strong", "The services you open through Gatehouse"), " receive only: ",
                  "; ".join(view.upstream_receives), ". They do not receive the health report."))
    keep = [
        el("li", "The latest health report of each device is kept while the device is enrolled."),
        el("li", f"Older reports are deleted after {_days(view.retention_days)}."),
        el("li", "Break-glass requests and grants are kept in a tamper-evident audit log "
           + (f"for {_days(view.audit_retention_days)}." if view.audit_retention_days is not None
              else "for as long as the audit log is kept.")),
    ]
    if view.log_retention_days is not None:
        keep.append(el("li", f"Request logs (which service, when, allowed or not) are kept for "
                             f"{_days(view.log_retention_days)}."))
    body = join(
        el("h1", "What Gatehouse knows about your device"),
        el("p", "Gatehouse lets your device in only when it meets the security rules of the service you open. "
           "To check that, your device's health agent reports the facts below. This page is generated from "
           "the rules in force", f" (policy {view.policy_version[:12]})" if view.policy_version else "", ".",
           class_="lead"),
        el("h2", "What is collected, and why"),
        el("div", el("table", el("thead", el("tr", el("th", "Fact", scope="col"), el("th", "Why", scope="col"),
                                              el("th", "Used by the current rules", scope="col"))),
                     el("tbody", rows), class_="stack"), class_="table-wrap"),
        el("h2", "What is not collected"),
        el("section", el("p", "Gatehouse does not collect:"), el("ul", [el("li", x) for x in NOT_COLLECTED]),
           class_="card", aria_label="What is not collected"),
        el("h2", "How the facts are used"),
        el("section", el("p", "Each service belongs to a security tier. A device may open a tier's services "
                         "when its latest report passes that tier's checks:"), el("ul", tier_items),
           class_="card", aria_label="How the facts are used"),
        el("h2", "Who can see it"),
        el("section", el("ul", who), class_="card", aria_label="Who can see it"),
        el("h2", "How long it is kept"),
        el("section", el("ul", keep), class_="card", aria_label="How long it is kept"),
        el("p", f"Questions? Contact {view.contact}.", class_="muted"),
    )
    footer = join("Generated ", time_el(view.now)) if view.now else None
    return html_response(200, "Privacy", body, footer=footer)

