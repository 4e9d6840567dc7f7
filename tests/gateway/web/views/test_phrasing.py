"""Actual vs required reads as a sentence for every built-in fact kind; a snapshot's source and age read as words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.ingest.connectors import FleetConnector, JamfConnector
from gateway.web.views.phrasing import describe_finding, describe_source, fact_label, source_label
from policy_engine.decision import Finding
from policy_engine.document import Severity
from policy_engine.facts import BUILTIN_FACTS
from policy_engine.model import OsFamily, Version
from tests.gateway.web.views import samples
from tests.policy_engine.factories import make_snapshot


def finding(fact: str, actual: str, required: str, severity: Severity = Severity.FAIL) -> Finding:
    return Finding(fact, fact, actual, required, severity, None, "")


MAC = make_snapshot(os_version=Version.parse("13.2.1"))


@pytest.mark.parametrize(
    ("fact", "actual", "required", "expected"),
    [
        ("os_version", "13.2.1", ">= 14.4", "Your macOS is 13.2.1; this service needs at least 14.4"),
        ("agent_version", "5.1", ">= 5.10", "Your device health agent is 5.1; this service needs at least 5.10"),
        ("firewall_enabled", "off", "on", "Your firewall is off; this service needs it on"),
        ("disk_encrypted", "off", "on", "Your disk encryption is off; this service needs it on"),
        ("screen_lock_enabled", "off", "on", "Your screen lock password is off; this service needs it on"),
        ("remote_login_enabled", "on", "off", "Your remote login is on; this service needs it off"),
        ("auto_updates_enabled", "off", "on", "Your automatic updates are off; this service needs them on"),
        ("sip_enabled", "off", "on", "Your System Integrity Protection is off; this service needs it on"),
        ("gatekeeper_enabled", "off", "on", "Your Gatekeeper is off; this service needs it on"),
        ("screen_lock_delay_s", "900", "<= 600",
         "Your screen locks after 15 minutes; this service needs 10 minutes or less"),
        ("screen_lock_delay_s", "90", "< 60", "Your screen locks after 1 minute 30 seconds; this service needs less than 1 minute"),
        ("platform", "linux", "one of darwin, windows",
         "Your device's platform is Linux; this service needs one of macOS or Windows"),
        ("os_name", "Windows 10 Home", "none of Windows 10 Home",
         "Your operating system is Windows 10 Home; this service needs anything but Windows 10 Home"),
        ("distribution", "arch", "one of ubuntu, debian, fedora",
         "Your Linux distribution is arch; this service needs one of ubuntu, debian or fedora"),
        ("os_build", "22D68", "one of 23E224", "Your OS build is 22D68; this service needs one of 23E224"),
        ("agent_name", "santa", "osquery", "Your device health agent is santa; this service needs it to be osquery"),
        ("source", "import", "one of osquery, api",
         "Your health report source is import; this service needs one of osquery or api"),
        ("custom.edr_running", "off", "on", "Your edr running is off; this service needs it to be on"),
        ("custom.build_channel", "beta", "one of stable", "Your build channel is beta; this service needs one of stable"),
    ],
)
def test_each_fact_kind_reads_as_a_sentence(fact: str, actual: str, required: str, expected: str) -> None:
    """Every built-in fact (and a custom one) says what the device has and what the service needs."""
    text = describe_finding(finding(fact, actual, required), MAC)

    assert expected == text


def test_every_builtin_fact_has_a_human_label() -> None:
    """No built-in fact falls back to its raw field name."""
    raw = [f for f in BUILTIN_FACTS if fact_label(f) == f]

    assert [] == raw


@pytest.mark.parametrize(
    ("fact", "required", "expected"),
    [
        ("os_version", ">= 14.4", "Your device did not report its macOS version; this service needs at least 14.4"),
        ("firewall_enabled", "on", "Your device did not report whether its firewall is on; this service needs it on"),
        ("screen_lock_delay_s", "<= 600",
         "Your device did not report when its screen locks; this service needs 10 minutes or less"),
    ],
)
def test_unreported_facts_say_so(fact: str, required: str, expected: str) -> None:
    """A fact the agent did not report is described as missing, not as a value."""
    text = describe_finding(finding(fact, "not reported", required), MAC)

    assert expected == text


def test_a_nudge_recommends_rather_than_requires() -> None:
    """Nudges never block, so they do not say the service needs anything."""
    text = describe_finding(finding("auto_updates_enabled", "off", "on", Severity.NUDGE), MAC)

    assert "Your automatic updates are off; Gatehouse recommends turning them on" == text


def test_a_platform_without_a_minimum_is_not_accepted() -> None:
    """A version floor with no entry for the device says the platform is not accepted."""
    linux = make_snapshot(platform=OsFamily.LINUX, os_name="Arch Linux", distribution="arch",
                          os_version=Version.parse("6.1"))

    text = describe_finding(finding("os_version", "6.1", "a supported platform (no minimum for `arch`)"), linux)

    assert "Your device runs Arch Linux 6.1; this service does not accept arch devices" == text


def test_engine_findings_for_the_outdated_mac() -> None:
    """The real engine's findings for an outdated Mac read as the issue's example sentences."""
    decision = samples.decide(samples.outdated_mac(), "medium")

    texts = {describe_finding(f, samples.outdated_mac()) for f in decision.failing + decision.in_grace}

    assert {
        "Your macOS is 13.2.1; this service needs at least 14.4",
        "Your firewall is off; this service needs it on",
        "Your screen locks after 15 minutes; this service needs 10 minutes or less",
    } == texts


SOURCE_NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("source", "age", "expected"),
    [
        ("jamf:macs", timedelta(hours=3), "Jamf Pro, inventory from 3 hours ago"),
        ("fleet:corp-fleet", timedelta(minutes=5), "Fleet, from 5 minutes ago"),
        ("osquery", timedelta(minutes=2), "osquery, 2 minutes ago"),
        ("stethoscope", timedelta(days=3), "Stethoscope, 3 days ago"),
        ("api", timedelta(seconds=10), "the ingest API, just now"),
        ("import", timedelta(minutes=-10), "an import, dated 10 minutes in the future"),
        ("custom-relay", timedelta(hours=1), "custom-relay, 1 hour ago"),
    ],
)
def test_the_source_and_its_age_read_as_words(source: str, age: timedelta, expected: str) -> None:
    """A snapshot's source is named as users know it, with how old its data is."""
    snapshot = make_snapshot(source=source, collected_at=SOURCE_NOW - age)

    assert expected == describe_source(snapshot, now=SOURCE_NOW)


def test_without_a_clock_only_the_source_is_named() -> None:
    """With no time to compare against, the phrase is the source's name alone."""
    assert "Jamf Pro" == describe_source(make_snapshot(source="jamf:macs"), now=None)


def test_every_connector_is_named_as_its_vendor() -> None:
    """The pages name a connector-fed snapshot's source as the connector itself names its vendor."""
    assert ("Fleet", "Jamf Pro") == (source_label("fleet:x"), source_label("jamf:x"))
    assert (FleetConnector.label, JamfConnector.label) == (source_label("fleet:x"), source_label("jamf:x"))
