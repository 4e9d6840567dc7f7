"""The 403 denial: an HTML page that teaches, or RFC 9457 problem+json for API clients and CLIs.

Owns: DenyView, BreakglassOffer, SourceRefresh, render_deny, platform_from_user_agent, DEFAULT_ENROLL_HELP,
DEFAULT_AGENT_HELP, REGISTER_HELP, NO_DEVICE_HELP.
Must not import: decision logic (it renders a Decision, it never makes one), the clock, I/O.

The problem+json is ``gateway.web.problem``'s one document (``urn:gatehouse:problem:<reason>``, with
the page's content as extension members). Content negotiation is ``gateway.web.pages.wants_html``, the
same as the error pages: a browser (``text/html`` listed explicitly, preferred at least as much as
JSON) gets HTML; ``*/*`` alone (curl's default), no Accept header, ``application/json`` or
``application/problem+json`` get problem+json, because a command-line client reads fields better
than markup.

``device-unknown`` has three cases, each with its own help: the request names no device and
Gatehouse enrolls laptops (``DenyView.enroll_origin`` set: the enrollment commands for the browser's
platform, ``gateway.web.views.enroll``); it names no device and enrollment is off (ask IT how devices
identify themselves here); it names a device whose health agent has never reported (install and
start the agent, ``enroll_help``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Mapping, Union

from breakglass.model import TierMode, TierRule
from gateway.web.pages import wants_html
from gateway.web.views.common import device_facts, finding_card, finding_data
from gateway.web.views.enroll import enroll_card, enroll_data
from gateway.web.views.html import Markup, el, join
from gateway.web.views.layout import (
    Rendered, format_duration, format_relative, html_response, platform_name, time_el,
)
from gateway.web.views.markdown import render_markdown
from gateway.web.views.phrasing import describe_source
from gateway.web.problem import ProblemDetails, problem
from policy_engine.decision import Decision, Reason
from policy_engine.defaults import DEFAULT_REMEDIATION
from policy_engine.evaluate import TierInfo
from policy_engine.model import DeviceSnapshot, OsFamily
from policy_engine.remediation import Remediation

RECHECK_PATH = "/.gatehouse/recheck"
BREAK_GLASS_PATH = "/.gatehouse/break-glass"
BREAK_GLASS_API_PATH = "/.gatehouse/api/v1/break-glass"

HelpText = Union[str, Mapping[OsFamily, str]]
"""Markdown shown on the page: one text for every platform, or one per platform."""

_ASK_IT = "Can't do this on this device? Contact IT and give them the serial number shown below."

DEFAULT_ENROLL_HELP: Mapping[OsFamily, str] = MappingProxyType({
    OsFamily.DARWIN: f"""
Gatehouse lets a device in once its health agent (osquery) reports to Gatehouse.

1. Install **osquery** from Self Service (or your MDM's app catalog).
2. Put the flags file IT publishes at `/var/osquery/osquery.flags` (it sets `--tls_hostname`, `--enroll_secret_path` and the other Gatehouse endpoints), then run `sudo osqueryctl start`.
3. Wait a minute for the first report, then press **I fixed it, check again**.

{_ASK_IT}
""".strip(),
    OsFamily.WINDOWS: f"""
Gatehouse lets a device in once its health agent (osquery) reports to Gatehouse.

1. Install **osquery** from Software Center (or your MDM's app catalog).
2. Put the flags file IT publishes at `C:\\Program Files\\osquery\\osquery.flags` (it sets `--tls_hostname`, `--enroll_secret_path` and the other Gatehouse endpoints), then run `Start-Service osqueryd` in PowerShell as administrator.
3. Wait a minute for the first report, then press **I fixed it, check again**.

{_ASK_IT}
""".strip(),
    OsFamily.LINUX: f"""
Gatehouse lets a device in once its health agent (osquery) reports to Gatehouse.

1. Install the **osquery** package IT publishes for your distribution.
2. Put the flags file IT publishes at `/etc/osquery/osquery.flags` (it sets `--tls_hostname`, `--enroll_secret_path` and the other Gatehouse endpoints), then run `sudo systemctl enable --now osqueryd`.
3. Wait a minute for the first report, then press **I fixed it, check again**.

{_ASK_IT}
""".strip(),
})
"""Shown for ``device-unknown`` when the request names a device whose agent never reported; a deployment may pass its own text."""

DEFAULT_AGENT_HELP: Mapping[OsFamily, str] = MappingProxyType({
    OsFamily.DARWIN: f"""
1. Make sure the Mac is online and awake.
2. Restart the agent: open Terminal and run `sudo launchctl kickstart -k system/io.osquery.agent`.
3. Wait a minute for a new report, then press **I fixed it, check again**.

{_ASK_IT}
""".strip(),
    OsFamily.WINDOWS: f"""
1. Make sure the PC is online and awake.
2. Restart the agent: run `Restart-Service osqueryd` in PowerShell as administrator.
3. Wait a minute for a new report, then press **I fixed it, check again**.

{_ASK_IT}
""".strip(),
    OsFamily.LINUX: f"""
1. Make sure the device is online and awake.
2. Restart the agent: run `sudo systemctl restart osqueryd`.
3. Wait a minute for a new report, then press **I fixed it, check again**.

{_ASK_IT}
""".strip(),
})
"""Shown for ``snapshot-stale``, per platform; a deployment may pass its own text instead."""

REGISTER_HELP = """
Gatehouse learns who owns a device from IT's owner inventory, not from the device itself: a device's own agent cannot vouch for whose it is, so a device is registered to nobody until IT records its owner.

1. Ask IT to register this device to you. They run `gatehouse devices assign SERIAL your@email`, import it from the MDM or HR export with `gatehouse devices import`, or use the owner API (`PUT /.gatehouse/api/v1/devices/SERIAL/owners`).
2. Then press **I fixed it, check again**.

Give IT the serial number shown below and the email address you are signed in with.
""".strip()
"""Shown for ``device-unowned`` and ``device-not-owned``: how a device gets registered to its user."""


NO_DEVICE_HELP = """
Gatehouse knows a device only from a source IT sets up: a device certificate, a signed device assertion or a device claim in your sign-in. This request carried none of them, so installing a health agent alone will not help.

1. Ask IT how laptops are enrolled with Gatehouse here, and whether this device may be used for this service.
2. Once it is set up, press **I fixed it, check again**.

Tell IT the service you tried to open and the reference shown at the bottom of this page.
""".strip()
"""Shown for ``device-unknown`` without a device when Gatehouse does not enroll laptops itself."""


def help_for(text: HelpText, platform: OsFamily) -> str:
    """The Markdown for the device's platform; every platform's, labelled, when it is unknown."""
    if isinstance(text, str):
        return text
    own = text.get(platform)
    if own is not None:
        return own
    return "\n\n".join(f"**{platform_name(p)}**\n\n{t}" for p, t in text.items())

_CLOCK_HELP = {
    OsFamily.DARWIN: "Open [System Settings → General → Date & Time](x-apple.systempreferences:com.apple.Date-Time-Settings.extension) and turn on **Set time and date automatically**.",
    OsFamily.WINDOWS: "Open [Settings → Time & language → Date & time](ms-settings:dateandtime) and turn on **Set time automatically**, then **Sync now**.",
    OsFamily.LINUX: "Run `sudo timedatectl set-ntp true`.",
}

_DURATION_CHOICES = tuple(timedelta(minutes=m) for m in (15, 30, 60, 120, 240, 480, 720, 1440))


@dataclass(frozen=True, slots=True)
class BreakglassOffer:
    """The tier allows an emergency grant; what the request form offers."""

    durations: tuple[timedelta, ...]
    """Choices for the duration select, shortest first."""
    default_duration: timedelta | None = None
    min_reason_length: int = 20
    needs_approval: bool = False
    """True when the tier's rule is ``approval``: the grant waits for an approver."""
    action: str = BREAK_GLASS_PATH
    max_reason_length: int = 2000

    @classmethod
    def from_rule(cls, rule: TierRule, *, min_reason_length: int = 20,
                  max_reason_length: int = 2000) -> BreakglassOffer | None:
        """The offer for a tier's break-glass rule (``gateway.config.breakglass.tier_rule``); None for ``never``."""
        if rule.mode is TierMode.NEVER:
            return None
        offer = cls.up_to(rule.max_duration, default=rule.default_duration, min_reason_length=min_reason_length,
                          needs_approval=rule.mode is TierMode.APPROVAL)
        return dataclasses.replace(offer, max_reason_length=max_reason_length)

    @classmethod
    def up_to(cls, max_duration: timedelta, *, default: timedelta | None = None, min_reason_length: int = 20,
              needs_approval: bool = False) -> BreakglassOffer:
        """Offer the usual choices (15 min … 24 h) that do not exceed ``max_duration``, plus the maximum."""
        choices = [d for d in _DURATION_CHOICES if d < max_duration] + [max_duration]
        if default is not None and default not in choices:
            choices = sorted({*choices, default})
        return cls(durations=tuple(choices), default_duration=default or choices[0],
                   min_reason_length=min_reason_length, needs_approval=needs_approval)


@dataclass(frozen=True, slots=True)
class SourceRefresh:
    """The device's snapshot comes from a system Gatehouse polls (Fleet, Jamf Pro): what "check again" does with it."""

    vendor: str
    """``Fleet``, ``Jamf Pro``."""
    hint: str
    """How soon that system's data about a device changes, in a sentence."""
    asked: bool = False
    """This page answers "check again", and the vendor was asked for the device just now."""
    unreachable: bool = False
    """This page answers "check again", and the vendor could not be read; the decision used what Gatehouse had."""


@dataclass(frozen=True, slots=True)
class DenyView:
    """Everything the denial shows; the handler fills it from the request and the decision."""

    decision: Decision
    snapshot: DeviceSnapshot | None
    device_serial: str | None
    """The verified serial (None when the request carried no device identity)."""
    route_id: str
    tier: TierInfo | None
    """The route's tier as compiled (None when the tier is unknown to the policy)."""
    return_to: str
    """Where to send the user once access is restored (a path on this host)."""
    csrf_token: str
    now: datetime | None = None
    """Defaults to ``decision.evaluated_at``; used for "3 hours ago" and deadlines."""
    owners: tuple[str, ...] = ()
    """Who owns the device (the owner inventory, or trusted reported owners); named on ``device-not-owned``."""
    remediation: Mapping[str, Remediation] = field(default_factory=lambda: DEFAULT_REMEDIATION)
    """The compiled set's catalog (``policies.remediation``); built-in entries fill the gaps."""
    breakglass: BreakglassOffer | None = None
    """Set only when the tier allows break-glass and the user may ask."""
    refresh_eta_s: int | None = None
    """When the agent can be asked for a fresh snapshot: about how long that takes."""
    source_refresh: SourceRefresh | None = None
    """When the snapshot comes from a polled system: which, and what "check again" did with it."""
    service_name: str = ""
    """A human name for the route; the route id is used when empty."""
    user: str = ""
    request_id: str = ""
    platform_hint: OsFamily = OsFamily.UNKNOWN
    """Used only without a snapshot, to pick help text (``platform_from_user_agent``)."""
    enroll_help: HelpText = field(default_factory=lambda: DEFAULT_ENROLL_HELP)
    """Markdown for ``device-unknown``: one text, or one per platform."""
    agent_help: HelpText = field(default_factory=lambda: DEFAULT_AGENT_HELP)
    """Markdown for ``snapshot-stale``: one text, or one per platform."""
    enroll_origin: str | None = None
    """Gatehouse's address (``https://host[:port]``) for the enrollment commands; None when Gatehouse
    does not enroll laptops (no ``identity.device.ca``)."""


def _service(view: DenyView) -> str:
    return view.service_name or view.route_id


def _now(view: DenyView) -> datetime | None:
    return view.now or view.decision.evaluated_at


def _platform(view: DenyView) -> OsFamily:
    return view.snapshot.platform if view.snapshot is not None else view.platform_hint


def platform_from_user_agent(user_agent: str) -> OsFamily:
    """A best guess at the platform from a browser's User-Agent, for help text only (never for policy)."""
    ua = user_agent.lower()
    if "windows" in ua:
        return OsFamily.WINDOWS
    if "iphone" in ua or "ipad" in ua or "android" in ua:
        return OsFamily.UNKNOWN
    if "mac os x" in ua or "macintosh" in ua:
        return OsFamily.DARWIN
    if "linux" in ua or "x11" in ua:
        return OsFamily.LINUX
    return OsFamily.UNKNOWN


def _title_and_detail(view: DenyView) -> tuple[str, str]:
    """The h1 / problem title and a one-paragraph detail, per reason."""
    d, service = view.decision, _service(view)
    reason = d.reason
    if reason is Reason.DEVICE_UNKNOWN:
        if not view.device_serial and view.enroll_origin is not None:
            return ("Enroll this laptop to open " + service,
                    f"{service} only opens from laptops enrolled with Gatehouse, and this browser did not "
                    "present this laptop's Gatehouse certificate. Enroll this laptop once, or use one that is enrolled.")
        if not view.device_serial:
            return ("Gatehouse could not identify this device",
                    f"{service} only opens from devices Gatehouse can identify, and this request did "
                    "not say which device it came from. Ask IT how devices are enrolled here.")
        return ("Gatehouse has never received a health report from this device",
                f"{service} only opens from devices that report their health to Gatehouse. Gatehouse knows "
                "which device this is, but its health agent has never sent a report.")
    if reason is Reason.SNAPSHOT_STALE:
        age = format_duration(d.snapshot_age) if d.snapshot_age is not None else "a while"
        limit = (f" This service needs a report from the last {format_duration(view.tier.max_snapshot_age)}."
                 if view.tier is not None else "")
        return ("Gatehouse has not heard from this device recently",
                f"The newest health report from this device is {age} old.{limit}")
    if reason is Reason.SNAPSHOT_FROM_FUTURE:
        ahead = format_duration(-d.snapshot_age) if d.snapshot_age is not None else "too far"
        return ("Your device's clock is ahead",
                f"The health report is dated {ahead} in the future, so Gatehouse cannot tell how recent it "
                "is. Set the clock to update automatically, then check again.")
    if reason is Reason.CHECKS_FAILED:
        n = len(d.failing)
        things = "1 setting needs" if n == 1 else f"{n} settings need"
        return (f"Your device needs attention before you can open {service}",
                f"{things} fixing on this device. Each one below says what is wrong and how to fix it; "
                "then press “I fixed it, check again”.")
    if reason is Reason.CHECK_UNMEASURABLE:
        n = len(d.failing)
        things = "1 setting" if n == 1 else f"{n} settings"
        return (f"Gatehouse could not check this device for {service}",
                f"{service} requires {things} that this device's health agent cannot see, so Gatehouse could "
                "not check them. This is not something you can fix on the device: ask IT, and give them the "
                "serial number shown below.")
    if reason is Reason.TIER_UNKNOWN:
        return (f"{service} is not available right now",
                f"The service is set up with a security tier (“{d.tier}”) that the policy in force does "
                "not define. This is not a problem with your device; IT needs to fix the configuration.")
    if reason is Reason.DEVICE_NOT_OWNED:
        owners = ", ".join(view.owners) or "someone else"
        return ("This device belongs to someone else",
                f"{service} only opens from a device registered to you, and this device is registered to "
                f"{owners}. Use your own enrolled device, or ask IT to register this one to you.")
    if reason is Reason.DEVICE_UNOWNED:
        return ("This device is not registered to anyone",
                f"{service} only opens from a device registered to you, and Gatehouse has no owner on record "
                "for this device. Ask IT to register it to you, then check again.")
    if reason is Reason.CHECK_ERROR:
        return ("Gatehouse could not check your device",
                "Something went wrong while checking this device's health report. This is usually not a "
                "problem with your device: try again in a minute, and contact IT if it keeps happening.")
    return (f"Access to {service} was denied", f"Access was denied ({reason.value}).")


def _reason_section(view: DenyView) -> Markup | None:
    d, snapshot, now = view.decision, view.snapshot, _now(view)
    if d.reason is Reason.DEVICE_UNKNOWN:
        if not view.device_serial and view.enroll_origin is not None:
            return enroll_card(view.enroll_origin, _platform(view))
        if not view.device_serial:
            return el("section", el("h2", "Ask IT how this device is identified"),
                      el("div", render_markdown(NO_DEVICE_HELP), class_="steps"),
                      class_="card info", aria_label="Ask IT how this device is identified")
        return el("section", el("h2", "Install and start the health agent"),
                  el("div", render_markdown(help_for(view.enroll_help, _platform(view))), class_="steps"),
                  class_="card info", aria_label="Install and start the health agent")
    if d.reason is Reason.SNAPSHOT_STALE and view.source_refresh is not None and snapshot is not None:
        vendor = view.source_refresh.vendor
        return el("section", el("h2", f"Get {vendor}'s data about this device updated"),
                  el("p", "Gatehouse gets this device's health from ", el("strong", vendor), ", and the newest it has is ",
                     describe_source(snapshot, now=now) + "."),
                  el("p", view.source_refresh.hint),
                  class_="card warn", aria_label=f"Get {vendor}'s data about this device updated")
    if d.reason is Reason.SNAPSHOT_STALE:
        last: list[Markup | str] = []
        if snapshot is not None:
            rel = f" ({format_relative(snapshot.received_at, now=now)})" if now else ""
            last = [el("p", "Gatehouse last heard from this device on ",
                       el("strong", time_el(snapshot.received_at, now=now)), rel + ".")]
        return el("section", el("h2", "Get the health agent reporting again"), last,
                  el("p", "The device's health agent has stopped sending reports. Usually it is enough to:"),
                  el("div", render_markdown(help_for(view.agent_help, _platform(view))), class_="steps"),
                  class_="card warn", aria_label="Get the health agent reporting again")
    if d.reason is Reason.SNAPSHOT_FROM_FUTURE:
        platform = _platform(view)
        steps = _CLOCK_HELP.get(platform) or "\n\n".join(
            f"**{platform_name(p)}**: {t}" for p, t in _CLOCK_HELP.items())
        collected = [el("p", "The report says it was collected ", time_el(snapshot.collected_at, now=now), ".")
                     ] if snapshot is not None else []
        return el("section", el("h2", "Set the clock automatically"), collected,
                  el("div", render_markdown(steps), class_="steps"), class_="card bad",
                  aria_label="Set the clock automatically")
    if d.reason in (Reason.DEVICE_UNOWNED, Reason.DEVICE_NOT_OWNED):
        return el("section", el("h2", "How a device is registered to you"),
                  el("div", render_markdown(REGISTER_HELP), class_="steps"),
                  class_="card info", aria_label="How a device is registered to you")
    if d.reason in (Reason.CHECK_ERROR, Reason.TIER_UNKNOWN):
        ref = [el("p", "Reference for IT: ", el("code", view.request_id))] if view.request_id else []
        detail = [el("p", "Detail: ", el("code", d.detail))] if d.detail else []
        return el("section", el("h2", "What to tell IT"), ref, detail,
                  el("p", "Reason code: ", el("code", d.reason.value)), class_="card info",
                  aria_label="What to tell IT")
    return None


_RECHECK_HEADING = {
    Reason.DEVICE_UNKNOWN: "Enrolled it?",
    Reason.SNAPSHOT_STALE: "Agent reporting again?",
    Reason.SNAPSHOT_FROM_FUTURE: "Clock fixed?",
    Reason.TIER_UNKNOWN: "Try again",
    Reason.CHECK_ERROR: "Try again",
    Reason.CHECK_UNMEASURABLE: "IT changed how it is measured?",
    Reason.DEVICE_UNOWNED: "Registered it to you?",
    Reason.DEVICE_NOT_OWNED: "Registered it to you?",
}


def _source_text(view: DenyView, source: SourceRefresh) -> str:
    """What "check again" does for a device whose health comes from a polled system, and how soon that changes."""
    vendor, now = source.vendor, _now(view)
    had = f" ({describe_source(view.snapshot, now=now)})" if view.snapshot is not None else ""
    if source.unreachable:
        return (f"Gatehouse could not reach {vendor} just now, so this decision uses the data it already had{had}. "
                f"Try again in a few minutes; if this keeps happening, tell IT.")
    if source.asked:
        return (f"Gatehouse just asked {vendor} for this device's newest data{had}, and it still shows what is listed "
                f"here. {source.hint}")
    return f"Gatehouse gets this device's health from {vendor}, and asks {vendor} for the newest before deciding. {source.hint}"


def _recheck_form(view: DenyView) -> Markup:
    if view.source_refresh is not None:
        eta = _source_text(view, view.source_refresh)
    elif view.refresh_eta_s is not None:
        eta = (f"Gatehouse will ask your device for a fresh health report first; that takes about "
               f"{format_duration(timedelta(seconds=view.refresh_eta_s))}.")
    else:
        eta = ("Gatehouse checks the newest report from your device. Its agent reports every few minutes, "
               "so right after a fix you may need to wait a moment before checking again.")
    heading = _RECHECK_HEADING.get(view.decision.reason, "Fixed it?")
    return el(
        "section",
        el("h2", heading),
        el("p", eta),
        el(
            "form",
            el("input", type="hidden", name="return_to", value=view.return_to),
            el("input", type="hidden", name="csrf_token", value=view.csrf_token),
            el("div", el("button", "I fixed it, check again", type="submit"), class_="actions"),
            method="post",
            action=RECHECK_PATH,
        ),
        class_="card",
        aria_label=heading,
    )


def _breakglass_form(view: DenyView, offer: BreakglassOffer) -> Markup:
    default = offer.default_duration or (offer.durations[0] if offer.durations else None)
    options = [
        el("option", format_duration(d), value=str(int(d.total_seconds())), selected=d == default)
        for d in offer.durations
    ]
    approval = (" An approver has to approve the request before it takes effect."
                if offer.needs_approval else " Access starts as soon as you submit.")
    return el(
        "section",
        el("h2", "Need access right now?"),
        el("p", "In an emergency you can get temporary access from this device without fixing it first."
           + approval + " Every request is logged with your reason and reviewed by the security team."),
        el(
            "form",
            el("input", type="hidden", name="csrf_token", value=view.csrf_token),
            el("input", type="hidden", name="return_to", value=view.return_to),
            el("input", type="hidden", name="route", value=view.route_id),
            el("label", "Why do you need access now?", for_="bg-reason"),
            el("p", f"At least {offer.min_reason_length} characters, for example the incident or ticket.",
               class_="hint", id="bg-reason-hint"),
            el("textarea", "", id="bg-reason", name="reason", required=True,
               minlength=str(offer.min_reason_length), maxlength=str(offer.max_reason_length), aria_describedby="bg-reason-hint"),
            el("label", "For how long?", for_="bg-duration"),
            el("select", options, id="bg-duration", name="duration"),
            el("div", el("button", "Request emergency access" if not offer.needs_approval
                         else "Ask for emergency access", type="submit", class_="secondary"),
               class_="actions"),
            method="post",
            action=offer.action,
        ),
        class_="card",
        aria_label="Need access right now?",
    )


def _html(view: DenyView) -> Rendered:
    d, snapshot, now = view.decision, view.snapshot, _now(view)
    title, detail = _title_and_detail(view)
    catalog = view.remediation
    failing = [finding_card(f, snapshot, catalog, kind="bad", now=now) for f in d.failing]
    grace = [finding_card(f, snapshot, catalog, kind="warn", now=now) for f in d.in_grace]
    # A nudge with the same fix as a card already shown (an OS update both required and recommended)
    # would repeat the same steps under two headings; the blocking or grace card says it first.
    shown = {f.remediation for f in (*d.failing, *d.in_grace)}
    nudges = [finding_card(f, snapshot, catalog, kind="info", now=now) for f in d.nudges if f.remediation not in shown]
    tier = view.tier
    tier_rows = [join(el("dt", "Service"), el("dd", _service(view))),
                 join(el("dt", "Security tier required"),
                      el("dd", el("strong", d.tier), f" — {tier.description}" if tier and tier.description else ""))]
    if view.user:
        tier_rows.insert(0, join(el("dt", "Signed in as"), el("dd", view.user)))
    body = join(
        el("h1", title),
        el("p", detail, class_="lead"),
        _reason_section(view),
        join(el("h2", "What Gatehouse could not check" if d.reason is Reason.CHECK_UNMEASURABLE else "What to fix"),
             failing) if failing else None,
        join(el("h2", "Fix soon"),
             el("p", "These do not block you yet, but will once their grace period ends.", class_="muted"),
             grace) if grace else None,
        _recheck_form(view),
        _breakglass_form(view, view.breakglass) if view.breakglass and view.device_serial else None,
        join(el("h2", "Recommended"),
             el("p", "These never block access; fixing them keeps your device safer.", class_="muted"),
             nudges) if nudges else None,
        el("h2", "About this request"),
        el("section", el("dl", tier_rows, device_facts(snapshot, view.device_serial, now=now), class_="facts"),
           class_="card", aria_label="About this request"),
    )
    footer = join("Reason code ", el("code", d.reason.value),
                  [" · Reference ", el("code", view.request_id)] if view.request_id else None)
    return html_response(403, title, body, footer=footer, extra=_extra(view))


def _extra(view: DenyView) -> dict[str, str]:
    return {"X-Gatehouse-Denied-Reason": view.decision.reason.value, "Vary": "Accept"}


def deny_problem(view: DenyView) -> ProblemDetails:
    """The problem document of the denial (``gateway.web.problem``), with the page's content as extension members."""
    d, snapshot, now = view.decision, view.snapshot, _now(view)
    title, detail = _title_and_detail(view)
    catalog = view.remediation
    device: dict[str, object] | None = None
    if snapshot is not None or view.device_serial:
        device = {"serial": view.device_serial or (snapshot.serial if snapshot else None)}
        if snapshot is not None:
            device.update({
                "name": snapshot.hostname,
                "platform": snapshot.platform.value,
                "os_name": snapshot.os_name,
                "os_version": str(snapshot.os_version) if snapshot.os_version else None,
                "agent": snapshot.agent_name,
                "agent_version": str(snapshot.agent_version) if snapshot.agent_version else None,
                "collected_at": snapshot.collected_at.isoformat(),
                "received_at": snapshot.received_at.isoformat(),
                "source": snapshot.source,
                "reported_by": describe_source(snapshot, now=now),
            })
    doc: dict[str, object] = {
        "instance": view.return_to,
        "reason": d.reason.value,
        "service": {"route": view.route_id, "name": _service(view)},
        "tier": {
            "name": d.tier,
            "description": view.tier.description if view.tier else "",
            "max_snapshot_age_s": view.tier.max_snapshot_age.total_seconds() if view.tier else None,
        },
        "device": device,
        "snapshot_age_s": d.snapshot_age.total_seconds() if d.snapshot_age is not None else None,
        "evaluated_at": now.isoformat() if now else None,
        "failing": [finding_data(f, snapshot, catalog) for f in d.failing],
        "in_grace": [finding_data(f, snapshot, catalog) for f in d.in_grace],
        "nudges": [finding_data(f, snapshot, catalog) for f in d.nudges],
        "recheck": {"url": RECHECK_PATH, "method": "POST", "refresh_eta_s": view.refresh_eta_s, "source": _source_data(view)},
        "break_glass": None,
    }
    if d.reason is Reason.DEVICE_UNKNOWN and not view.device_serial:
        if view.enroll_origin is not None:
            doc["enroll"] = enroll_data(view.enroll_origin, _platform(view))
            doc["help"] = "Enroll this laptop: download the client (`enroll.commands[].install`), then run it once (`enroll.commands[].enroll`)."
        else:
            doc["help"] = NO_DEVICE_HELP
    elif d.reason is Reason.DEVICE_UNKNOWN:
        doc["help"] = help_for(view.enroll_help, _platform(view))
    elif d.reason is Reason.SNAPSHOT_STALE:
        doc["help"] = view.source_refresh.hint if view.source_refresh is not None else help_for(view.agent_help, _platform(view))
    elif d.reason is Reason.SNAPSHOT_FROM_FUTURE:
        doc["help"] = _CLOCK_HELP.get(_platform(view), "Set the device clock to update automatically.")
    elif d.reason in (Reason.DEVICE_UNOWNED, Reason.DEVICE_NOT_OWNED):
        doc["help"] = REGISTER_HELP
    if d.detail:
        doc["error_detail"] = d.detail
    if view.breakglass is not None and view.device_serial:
        offer = view.breakglass
        doc["break_glass"] = {
            "url": BREAK_GLASS_API_PATH,
            "min_reason_length": offer.min_reason_length,
            "durations_s": [int(x.total_seconds()) for x in offer.durations],
            "default_duration_s": int(offer.default_duration.total_seconds()) if offer.default_duration else None,
            "needs_approval": offer.needs_approval,
        }
    return problem(403, d.reason.value, detail, title=title, request_id=view.request_id, extra=doc)


def problem_document(view: DenyView) -> dict[str, object]:
    """The denial's RFC 9457 problem document as plain data."""
    return deny_problem(view).document()


def _source_data(view: DenyView) -> dict[str, object] | None:
    source = view.source_refresh
    if source is None:
        return None
    return {"vendor": source.vendor, "asked": source.asked, "unreachable": source.unreachable,
            "text": _source_text(view, source)}


def render_deny(view: DenyView, *, accept: str | None) -> Rendered:
    """The 403 for a denied request: HTML for browsers, problem+json for everything else."""
    if wants_html(accept or ""):
        return _html(view)
    return deny_problem(view).rendered(_extra(view), indent=True)
