"""Sentences for humans: actual vs required per fact kind, and where a health report came from.

Owns: describe_finding, fact_label, source_label, describe_source, vendor_label.
Must not import: aiohttp or any decision logic; it only rewords what the engine already decided.

The engine's ``Finding.actual``/``required`` are short display strings (``13.2.1`` / ``>= 14.4``,
``off`` / ``on``, ``900`` / ``<= 600``). This module turns them into a sentence such as
"Your macOS is 13.2.1; this service needs at least 14.4". Anything it does not recognise is
still shown, verbatim, in a generic sentence.

``describe_source`` names the system a snapshot came from and how old its data is ("Jamf Pro,
inventory from 3 hours ago"); the denial, the status page and their JSON all use it.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Mapping

from datetime import datetime

from gateway.web.views.layout import format_relative, format_seconds, platform_name
from policy_engine.decision import Finding
from policy_engine.document import Severity
from policy_engine.model import DeviceSnapshot, OsFamily

NOT_REPORTED = "not reported"

_SOURCE_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "osquery": "osquery",
        "stethoscope": "Stethoscope",
        "api": "the ingest API",
        "import": "an import",
        "fleet": "Fleet",
        "jamf": "Jamf Pro",
    }
)
"""A snapshot's ``source`` (before any ``:<connector name>``) -> the system as users know it."""
_SOURCE_AGE_WORDS: Mapping[str, str] = MappingProxyType({"jamf": "inventory from ", "fleet": "from "})
"""How a vendor's data is dated: Jamf Pro's is its last inventory update, Fleet's its last detail query."""
_VENDOR_SOURCES = frozenset({"fleet", "jamf"})
"""Sources that are a vendor's record of the device (pull connectors), not an agent on it."""


def source_label(source: str) -> str:
    """The system a snapshot came from: ``Fleet`` for ``fleet:corp``, ``the ingest API`` for ``api``."""
    kind = source.split(":", 1)[0]
    return _SOURCE_LABELS.get(kind) or source or "an unnamed source"


def vendor_label(snapshot: DeviceSnapshot | None) -> str:
    """``Fleet`` or ``Jamf Pro`` when the snapshot came from a vendor's record (a pull connector); else ``""``."""
    if snapshot is None or snapshot.source.split(":", 1)[0] not in _VENDOR_SOURCES:
        return ""
    return source_label(snapshot.source)


def describe_source(snapshot: DeviceSnapshot, *, now: datetime | None) -> str:
    """Which system reported the snapshot and how old its data is: ``Jamf Pro, inventory from 3 hours ago``.

    The age is the collection time's (when the agent read the device, or the vendor's last
    inventory of it), not when Gatehouse fetched it.
    """
    label = source_label(snapshot.source)
    if now is None:
        return label
    ago = format_relative(snapshot.collected_at, now=now)
    if ago.startswith("in "):
        return f"{label}, dated {ago[3:]} in the future"
    if ago.endswith(" ago"):
        return f"{label}, {_SOURCE_AGE_WORDS.get(snapshot.source.split(':', 1)[0], '')}{ago}"
    return f"{label}, {ago}"

_BOOL_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "firewall_enabled": "firewall",
        "disk_encrypted": "disk encryption",
        "screen_lock_enabled": "screen lock password",
        "remote_login_enabled": "remote login",
        "auto_updates_enabled": "automatic updates",
        "sip_enabled": "System Integrity Protection",
        "gatekeeper_enabled": "Gatekeeper",
    }
)
_STR_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "platform": "device's platform",
        "os_name": "operating system",
        "distribution": "Linux distribution",
        "os_build": "OS build",
        "agent_name": "device health agent",
        "source": "health report source",
        "agent_version": "device health agent",
        "os_version": "operating system",
        "screen_lock_delay_s": "screen lock delay",
    }
)
_BOUND = re.compile(r"(<=|>=|<|>)\s*(.+)")
_SET = re.compile(r"(one of|none of)\s+(.+)")
_PLATFORM_VALUES = {p.value: platform_name(p) for p in OsFamily if p is not OsFamily.UNKNOWN}


def fact_label(fact: str) -> str:
    """A short human name for a fact: ``firewall``, ``screen lock delay``, ``build channel``."""
    if fact in _BOOL_LABELS:
        return _BOOL_LABELS[fact]
    if fact in _STR_LABELS:
        return _STR_LABELS[fact]
    name = fact.removeprefix("custom.")
    return name.replace("_", " ").replace(".", " ").replace("-", " ").strip() or fact


def _os_label(snapshot: DeviceSnapshot | None) -> str:
    if snapshot is None:
        return "operating system"
    if snapshot.os_name:
        return snapshot.os_name
    if snapshot.platform is not OsFamily.UNKNOWN:
        return platform_name(snapshot.platform)
    return "operating system"


def _seconds(text: str) -> str:
    try:
        return format_seconds(float(text))
    except ValueError:
        return text


def _value(fact: str, text: str) -> str:
    if fact == "screen_lock_delay_s":
        return _seconds(text)
    if fact == "platform":
        return _PLATFORM_VALUES.get(text, text)
    return text


def _listed(fact: str, items: str) -> str:
    values = [_value(fact, v.strip()) for v in items.split(",") if v.strip()]
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + " or " + values[-1]


def _requirement(fact: str, required: str) -> str:
    """``at least 14.4``, ``10 minutes or less``, ``one of macOS or Windows``, ``exactly x``."""
    bound = _BOUND.fullmatch(required.strip())
    if bound:
        symbol, raw = bound.groups()
        value = _value(fact, raw.strip())
        return {
            "<=": f"{value} or less",
            ">=": f"at least {value}",
            "<": f"less than {value}",
            ">": f"more than {value}",
        }[symbol]
    listed = _SET.fullmatch(required.strip())
    if listed:
        kind, items = listed.groups()
        joined = _listed(fact, items)
        return f"one of {joined}" if kind == "one of" else f"anything but {joined}"
    return f"it to be {_value(fact, required)}"


_PLURAL = frozenset({"automatic updates"})


def describe_finding(finding: Finding, snapshot: DeviceSnapshot | None) -> str:
    """One sentence: what the device has and what the service needs (or, for a nudge, recommends)."""
    text = _describe(finding, snapshot)
    if finding.severity is Severity.NUDGE:
        for old, new in (("needs it ", "recommends turning it "), ("needs them ", "recommends turning them ")):
            text = text.replace("; this service " + old, "; Gatehouse " + new)
        text = text.replace("; this service needs ", "; Gatehouse recommends ")
    return text


def _describe(finding: Finding, snapshot: DeviceSnapshot | None) -> str:
    fact, actual, required = finding.fact, finding.actual.strip(), finding.required.strip()
    if finding.unmeasurable:
        # ``actual`` is "not measurable by <source> on <platform>" (CompiledCheck.unmeasurable_finding).
        label = fact_label(fact)
        if vendor := vendor_label(snapshot):
            # The vendor's record has no such field (gateway/ingest/connectors): not the device's doing.
            return (f"Gatehouse could not check your {label}: {vendor} does not report it, so there is nothing "
                    "for you to change here")
        return (f"Gatehouse could not check your {label}: it is {actual}, so there is nothing for you "
                "to change here")
    unreported = actual == NOT_REPORTED
    if fact in ("os_version", "agent_version"):
        label = _os_label(snapshot) if fact == "os_version" else "device health agent"
        if not required.startswith(">="):
            if fact == "os_version" and snapshot is not None:
                where = snapshot.distribution or platform_name(snapshot.platform)
                return f"Your device runs {label} {actual}; this service does not accept {where} devices"
            return f"Your {label} is {actual}; this service needs {required}"
        need = required[2:].strip()
        if unreported:
            return f"Your device did not report its {label} version; this service needs at least {need}"
        return f"Your {label} is {actual}; this service needs at least {need}"
    if fact in _BOOL_LABELS:
        label = _BOOL_LABELS[fact]
        if unreported:
            return f"Your device did not report whether its {label} is on; this service needs it {required}"
        verb = "are" if label in _PLURAL else "is"
        return f"Your {label} {verb} {actual}; this service needs {'them' if label in _PLURAL else 'it'} {required}"
    if fact == "screen_lock_delay_s":
        if unreported:
            return f"Your device did not report when its screen locks; this service needs {_requirement(fact, required)}"
        return f"Your screen locks after {_seconds(actual)}; this service needs {_requirement(fact, required)}"
    label = fact_label(fact)
    need = _requirement(fact, required)
    if unreported:
        return f"Your device did not report its {label}; this service needs {need}"
    return f"Your {label} is {_value(fact, actual)}; this service needs {need}"
