"""Realistic inputs for the page renderers: the deploy policy, a few devices, their decisions.

Shared by the unit tests here and the browser test in tests/browser/test_views_pages.py.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.web.views import (
    BreakglassOffer, DenyView, DeviceStatus, FleetFilter, FleetRow, FleetView, PrivacyView, ServiceLink, StatusView,
)
from policy_engine import CompiledPolicySet, DeviceSnapshot, OsFamily, Version
from policy_engine.decision import Decision
from tests.policy_engine.factories import deploy_policies, make_snapshot

NOW = datetime(2026, 11, 22, 15, 0, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=30)

_POLICIES: list[CompiledPolicySet] = []


def policies() -> CompiledPolicySet:
    """The example policy in deploy/policy.yaml, compiled once."""
    if not _POLICIES:
        _POLICIES.append(deploy_policies())
    return _POLICIES[0]


def outdated_mac(**overrides: Any) -> DeviceSnapshot:
    """A Mac on 13.2.1 with its firewall off, a 15-minute screen lock and auto-updates off."""
    base = make_snapshot(
        os_version=Version.parse("13.2.1"), firewall_enabled=False, screen_lock_delay_s=900,
        auto_updates_enabled=False, hostname="alice-mbp", serial="C02XK1JHJG5J",
        collected_at=NOW - timedelta(minutes=4), received_at=NOW - timedelta(minutes=3),
    )
    return dataclasses.replace(base, **overrides)


FAILING_SINCE = {
    "os_current": LONG_AGO,
    "firewall": LONG_AGO,
    "screen_lock_delay": NOW - timedelta(hours=23),
    "agent_current": LONG_AGO,
}
"""Firewall and OS past their grace; the screen-lock delay is still in grace (until 24 Nov 14:00)."""


def decide(snapshot: DeviceSnapshot | None, tier: str, failing_since: dict[str, datetime] | None = None) -> Decision:
    """The real engine's decision at NOW."""
    return policies().evaluate(snapshot, tier, now=NOW, failing_since=failing_since or FAILING_SINCE)


def offer_for(tier: str) -> BreakglassOffer | None:
    """The break-glass offer the tier's rule allows, or None."""
    info = policies().tier(tier)
    assert info is not None
    spec = info.break_glass
    if spec.mode.value == "never" or spec.max_duration is None:
        return None
    return BreakglassOffer.up_to(spec.max_duration, default=timedelta(hours=1),
                                 needs_approval=spec.mode.value == "approval")


def deny_view(snapshot: DeviceSnapshot | None = None, *, tier: str = "medium", serial: str | None = "C02XK1JHJG5J",
              decision: Decision | None = None, **overrides: Any) -> DenyView:
    """A denial of the `source` route for the given device (an outdated Mac by default)."""
    if snapshot is None and "snapshot" not in overrides and serial == "C02XK1JHJG5J":
        snapshot = outdated_mac()
    snapshot = overrides.pop("snapshot", snapshot)
    p = policies()
    fields: dict[str, Any] = {
        "decision": decision or decide(snapshot, tier),
        "snapshot": snapshot,
        "device_serial": serial,
        "route_id": "source",
        "tier": p.tier(tier),
        "return_to": "/repos/gatehouse?tab=code",
        "csrf_token": "csrf-token-123",
        "now": NOW,
        "remediation": p.remediation,
        "breakglass": offer_for(tier),
        "refresh_eta_s": 20,
        "service_name": "Source code (git.example.com)",
        "user": "alice@example.com",
        "request_id": "req-7f3a9c",
    }
    fields.update(overrides)
    return DenyView(**fields)


def all_decisions(snapshot: DeviceSnapshot | None) -> dict[str, Decision]:
    """The device's decision at every tier, least sensitive first."""
    return {t: decide(snapshot, t) for t in policies().tier_names}


SERVICES = (
    ServiceLink("wiki", "low", "Wiki", "https://wiki.example.com/"),
    ServiceLink("chat", "low", "Chat", "https://chat.example.com/"),
    ServiceLink("source", "medium", "Source code", "https://git.example.com/"),
    ServiceLink("grafana", "medium", "Dashboards", "https://grafana.example.com/"),
    ServiceLink("prod-console", "high", "Production console", "https://console.example.com/"),
)


def healthy_linux() -> DeviceSnapshot:
    """A healthy Ubuntu 24.04 laptop."""
    return make_snapshot(
        serial="PF3ABCD1", hostname="alice-thinkpad", platform=OsFamily.LINUX, os_name="Ubuntu",
        distribution="ubuntu", os_version=Version.parse("24.04"), sip_enabled=None, gatekeeper_enabled=None,
        collected_at=NOW - timedelta(minutes=2), received_at=NOW - timedelta(minutes=2),
    )


def status_view() -> StatusView:
    """Alice's two devices: an outdated Mac and a healthy Linux laptop."""
    devices = tuple(DeviceStatus(s.serial, s, all_decisions(s)) for s in (outdated_mac(), healthy_linux()))
    return StatusView.from_policies(policies(), user="alice@example.com", devices=devices, now=NOW, services=SERVICES)


def privacy_view() -> PrivacyView:
    """The privacy page for the deploy policy."""
    return PrivacyView.from_policies(policies(), retention_days=90, audit_retention_days=400,
                                     log_retention_days=30, admin_groups=("security-team",),
                                     reviewer_groups=("eng-managers",), now=NOW)


def fleet_rows() -> tuple[FleetRow, ...]:
    """Five devices: outdated Mac, healthy Linux, stale Windows, never-seen serial, healthy Mac (bob)."""
    windows = make_snapshot(
        serial="5CG1234XYZ", hostname="carol-surface", platform=OsFamily.WINDOWS, os_name="Windows 11 Pro",
        os_version=Version.parse("10.0.22631"), owners=("carol@example.com",), sip_enabled=None,
        gatekeeper_enabled=None, collected_at=NOW - timedelta(hours=30), received_at=NOW - timedelta(hours=30),
    )
    bob = make_snapshot(serial="FVFZ9XYZQ6L4", hostname="bob-mba", owners=("bob@example.com",),
                        collected_at=NOW - timedelta(minutes=1), received_at=NOW - timedelta(minutes=1))
    rows = [FleetRow.from_device(s.serial, s, all_decisions(s), owners=s.owners) for s in (outdated_mac(), healthy_linux(), windows, bob)]
    rows.append(FleetRow.from_device("NEVERSEEN01", None, all_decisions(None), owners=("dave@example.com",)))
    return tuple(rows)


def fleet_view(filter: FleetFilter | None = None) -> FleetView:
    """The fleet view over fleet_rows()."""
    p = policies()
    return FleetView(rows=fleet_rows(), filter=filter or FleetFilter(), tiers=p.tier_names,
                     checks=tuple(p.checks), now=NOW, viewer="sec-admin@example.com")


def platform_label(platform: OsFamily) -> str:
    """How the pages name a platform."""
    return {OsFamily.DARWIN: "macOS", OsFamily.WINDOWS: "Windows", OsFamily.LINUX: "Linux"}[platform]
