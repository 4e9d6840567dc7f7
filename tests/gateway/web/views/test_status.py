"""The user's own status page: devices, check states, reach per tier, upcoming deadlines."""

from __future__ import annotations

import json
import re

from gateway.web.views import DeviceStatus, StatusView, render_status
from tests.gateway.web.views import samples

BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"


def test_shows_each_device_and_what_it_can_reach() -> None:
    """Each device has its section; the outdated Mac reaches only low, the Linux laptop every tier."""
    html = render_status(samples.status_view(), accept=BROWSER).text

    mac, linux = html.split('id="device-0"', 1)[1].split('id="device-1"', 1)
    assert "alice-mbp" in html and "alice-thinkpad" in html
    assert 1 == mac.count("Can reach now")
    assert 2 == mac.count("Blocked by failing checks")
    assert 3 == linux.count("Can reach now")
    assert "Production console" in linux
    assert "Ubuntu 24.04 (Linux)" in linux


def test_check_states_and_steps() -> None:
    """Failing checks say whether they block, which tiers, and offer the steps; passing ones are folded."""
    html = render_status(samples.status_view(), accept=BROWSER).text

    mac = html.split('id="device-0"', 1)[1].split('id="device-1"', 1)[0]
    assert "Your firewall is off; this service needs it on." in mac
    assert "Blocking access to: medium, high" in mac
    assert "How to fix it" in mac
    assert "<summary>7 checks pass</summary>" in mac


def test_upcoming_grace_deadlines_are_listed_first() -> None:
    """Coming up lists each check in grace with its deadline, before the device sections."""
    html = render_status(samples.status_view(), accept=BROWSER).text

    coming = html.split("<h2>Coming up</h2>", 1)[1].split('id="device-0"', 1)[0]
    assert "Lock the screen sooner when idle" in coming
    assert ">24 Nov 16:00 UTC</time> (in 2 days 1 hour)" in coming


def test_no_devices_explains_enrollment() -> None:
    """A user without devices is told how to enroll one."""
    view = StatusView.from_policies(samples.policies(), user="new@example.com", devices=(), now=samples.NOW,
                                    enroll_help="Install the agent from **Self Service**.")

    html = render_status(view, accept=BROWSER).text

    assert "No device is registered to you yet." in html
    assert "Install the agent from <strong>Self Service</strong>." in html


def test_a_device_without_a_report_is_not_checked() -> None:
    """A device Gatehouse never heard from shows no check results, only that there is no report."""
    device = DeviceStatus("NEVERSEEN01", None, samples.all_decisions(None))
    view = StatusView.from_policies(samples.policies(), user="a@example.com", devices=(device,), now=samples.NOW)

    html = render_status(view, accept=BROWSER).text

    assert "its checks could not be run" in html
    assert 3 == html.count("No health report yet")


def test_json_has_the_same_content() -> None:
    """Accept: application/json returns devices, tiers and check states as data."""
    rendered = render_status(samples.status_view(), accept="application/json")

    doc = json.loads(rendered.body)
    mac = doc["devices"][0]
    assert "application/json" == rendered.content_type
    assert {"low": True, "medium": False, "high": False} == {t: v["allowed"] for t, v in mac["tiers"].items()}
    assert "blocking" == next(c["state"] for c in mac["checks"] if c["check"] == "firewall")
    assert "2026-11-24T16:00:00+00:00" == next(c["grace_deadline"] for c in mac["checks"]
                                               if c["check"] == "screen_lock_delay")


def test_page_structure_and_escaping() -> None:
    """One h1, the CSP header, and hostile hostnames and user names escaped."""
    hostile = "<script>alert(1)</script>"
    snapshot = samples.outdated_mac(hostname=hostile)
    device = DeviceStatus(snapshot.serial, snapshot, samples.all_decisions(snapshot))
    view = StatusView.from_policies(samples.policies(), user=f'"{hostile}', devices=(device,), now=samples.NOW)

    rendered = render_status(view, accept=BROWSER)

    assert 1 == len(re.findall(r"<h1[ >]", rendered.text))
    assert "<script" not in rendered.text
    assert "default-src 'none'" in rendered.headers["Content-Security-Policy"]
