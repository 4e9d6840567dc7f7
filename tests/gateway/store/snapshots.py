"""Snapshot builders shared by the store, cache, ingest and evidence tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from policy_engine.model import DeviceSnapshot, OsFamily, Version

T0 = datetime(2026, 11, 22, 14, 0, 0, tzinfo=UTC)


def make_snapshot(serial: str = "C02XK0AAJGH6", *, minutes: float = 0, **overrides: Any) -> DeviceSnapshot:
    """A macOS snapshot collected ``minutes`` after T0, with every fact reported."""
    fields: dict[str, Any] = {
        "serial": serial,
        "platform": OsFamily.DARWIN,
        "os_name": "macOS",
        "os_version": Version.parse("15.6"),
        "collected_at": T0 + timedelta(minutes=minutes),
        "received_at": T0 + timedelta(minutes=minutes, seconds=5),
        "source": "api",
        "hostname": "bobs-mbp",
        "owners": ("bob@example.com",),
        "os_build": "24G84",
        "agent_name": "kolide",
        "agent_version": Version.parse("1.5.3"),
        "firewall_enabled": True,
        "disk_encrypted": True,
        "screen_lock_enabled": True,
        "screen_lock_delay_s": 300,
        "remote_login_enabled": False,
        "auto_updates_enabled": True,
        "sip_enabled": True,
        "gatekeeper_enabled": None,
        "custom": {"crowdstrike_running": True, "edr.version": "7.1"},
    }
    fields.update(overrides)
    return DeviceSnapshot(**fields)
