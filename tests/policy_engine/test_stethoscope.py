"""Stethoscope policy import: the converted policy gives Stethoscope's PASS/NUDGE/FAIL."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_engine import (
    CompiledPolicySet,
    DeviceSnapshot,
    OsFamily,
    PolicyParseError,
    Version,
    compile_policy_set,
    convert_stethoscope_policy,
    parse_policy_document,
)

from tests.policy_engine.factories import DEPLOY_POLICY, NOW, STETHOSCOPE_POLICY, make_snapshot
from tests.policy_engine.strategies import RELAXED

RAW = yaml.safe_load(STETHOSCOPE_POLICY.read_text())
SHIPPED = DEPLOY_POLICY.parent / "policy-stethoscope-default.yaml"
BOOLEAN_PRACTICES = ("firewall", "diskEncryption", "automaticUpdates", "screenLock", "remoteLogin", "openWifiConnections")


def converted(raw: dict[str, Any] = RAW) -> CompiledPolicySet:
    """Convert, round-trip through YAML text as the CLI does, then parse and compile."""
    text = yaml.safe_dump(convert_stethoscope_policy(raw), sort_keys=False)
    return compile_policy_set(parse_policy_document(yaml.safe_load(text), source="stethoscope.yaml"))


def _semver(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in text.split(".")][:3]
    return tuple(parts + [0] * (3 - len(parts)))


def stethoscope_status(policy: dict[str, Any], device: dict[str, Any]) -> str:
    """Stethoscope's own semantics, as its fixture header states them (an independent reference)."""
    results = []
    for practice, requirement in policy.items():
        if practice == "osVersion":
            brackets = requirement.get(device["platform"])
            version = device["osVersion"]
            if brackets is None or version is None:
                results.append("FAIL")
            elif _semver(version) >= _semver(brackets["ok"].lstrip(">=")):
                results.append("PASS")
            elif "nudge" in brackets and _semver(version) >= _semver(brackets["nudge"].lstrip(">=")):
                results.append("NUDGE")
            else:
                results.append("FAIL")
        elif practice == "screenIdle":
            # The app answers PASS/FAIL against the bound; one it cannot check passes (Policy.js).
            results.append("FAIL" if device.get("screenIdle") is False else "PASS")
        else:
            value = device.get(practice)
            results.append({
                "ALWAYS": "PASS" if value is True else "FAIL",
                "NEVER": "PASS" if value is False else "FAIL",
                "SUGGESTED": "PASS" if value is True else "NUDGE",
                "IF_SUPPORTED": "PASS" if value is None or value is True else "FAIL",
            }[requirement])
    if "FAIL" in results:
        return "FAIL"
    return "NUDGE" if "NUDGE" in results else "PASS"


FACTS = {"firewall": "firewall_enabled", "diskEncryption": "disk_encrypted", "automaticUpdates": "auto_updates_enabled",
         "screenLock": "screen_lock_enabled", "remoteLogin": "remote_login_enabled",
         "openWifiConnections": "custom.no_open_wifi_networks", "screenIdle": "custom.screen_idle_ok"}


def as_snapshot(device: dict[str, Any]) -> DeviceSnapshot:
    """The same device as Gatehouse's ingest would type it: a practice the app cannot measure (None) is named unmeasurable."""
    platform, distribution = {
        "darwin": (OsFamily.DARWIN, ""),
        "win32": (OsFamily.WINDOWS, ""),
        "awsWorkspace": (OsFamily.WINDOWS, ""),
        "ubuntu": (OsFamily.LINUX, "ubuntu"),
        "linux": (OsFamily.LINUX, "fedora"),
    }[device["platform"]]
    custom = {}
    if device.get("openWifiConnections") is not None:
        custom["no_open_wifi_networks"] = device["openWifiConnections"]
    if device.get("screenIdle") is not None:
        custom["screen_idle_ok"] = device["screenIdle"]
    return make_snapshot(
        platform=platform,
        distribution=distribution,
        os_version=Version.parse(device["osVersion"]) if device["osVersion"] else None,
        firewall_enabled=device.get("firewall"),
        disk_encrypted=device.get("diskEncryption"),
        auto_updates_enabled=device.get("automaticUpdates"),
        screen_lock_enabled=device.get("screenLock"),
        remote_login_enabled=device.get("remoteLogin"),
        custom=custom,
        unmeasurable=frozenset(fact for practice, fact in FACTS.items() if practice in device and device[practice] is None),
    )


def gatehouse_status(policies: CompiledPolicySet, snapshot: DeviceSnapshot) -> str:
    """Our decision in Stethoscope's words."""
    decision = policies.evaluate(snapshot, "default", now=NOW)
    if not decision.allowed:
        return "FAIL"
    return "NUDGE" if decision.nudges else "PASS"


OS_VERSIONS = ["10.15.6", "10.15.7", "11.0", "11.5.0", "11.5.1", "14.4", "18.04.4", "18.04.5", "20.04",
               "20.04.2", "22.04", "10.0.10240", "10.0.14393", "10.0.19041", "10.0.19042", "10.0.19043", "10.0.22631"]


@st.composite
def devices(draw: st.DrawFn, platforms: tuple[str, ...] = ("darwin", "win32", "ubuntu", "linux")) -> dict[str, Any]:
    """Stethoscope device reports: each setting on, off or not measurable (None); screenIdle within the bound, not, or not measurable."""
    device: dict[str, Any] = {
        "platform": draw(st.sampled_from(platforms)),
        "osVersion": draw(st.one_of(st.none(), st.sampled_from(OS_VERSIONS))),
    }
    for practice in (*BOOLEAN_PRACTICES, "screenIdle"):
        device[practice] = draw(st.sampled_from([True, False, None]))
    return device


POLICIES = converted()


class TestDefaultPolicy:
    @settings(RELAXED, max_examples=500)
    @given(devices())
    def test_conversion_reproduces_stethoscope_semantics(self, device: dict[str, Any]) -> None:
        """On Stethoscope's default policy, every device gets the same PASS/NUDGE/FAIL from us."""
        expected = stethoscope_status(RAW, device)

        actual = gatehouse_status(POLICIES, as_snapshot(device))

        assert expected == actual

    @RELAXED
    @given(devices(platforms=("awsWorkspace",)))
    def test_workspaces_are_never_laxer_than_stethoscope(self, device: dict[str, Any]) -> None:
        """WorkSpaces get the win32 brackets, which are stricter: we never pass what Stethoscope fails."""
        expected = stethoscope_status(RAW, device)

        actual = gatehouse_status(POLICIES, as_snapshot(device))

        assert not (expected == "FAIL" and actual != "FAIL")

    @pytest.mark.parametrize(
        ("overrides", "expected"),
        [
            ({}, "PASS"),
            ({"automaticUpdates": False}, "NUDGE"),
            ({"osVersion": "11.0"}, "NUDGE"),
            ({"osVersion": "10.15.6"}, "FAIL"),
            ({"screenLock": None}, "PASS"),
            ({"screenLock": False}, "FAIL"),
            ({"remoteLogin": True}, "FAIL"),
            ({"firewall": None}, "FAIL"),
            ({"screenIdle": False}, "FAIL"),
            ({"screenIdle": None}, "PASS"),
        ],
    )
    def test_examples(self, overrides: dict[str, Any], expected: str) -> None:
        """Hand-picked macOS devices around each rule."""
        device = {"platform": "darwin", "osVersion": "14.4", "screenIdle": True, "firewall": True, "diskEncryption": True,
                  "automaticUpdates": True, "screenLock": True, "remoteLogin": False, "openWifiConnections": True}
        device.update(overrides)

        actual = gatehouse_status(POLICIES, as_snapshot(device))

        assert expected == actual

    @pytest.mark.parametrize("practice", ["screenLock", "screenIdle"])
    def test_a_practice_the_answer_lacks_is_not_unsupported(self, practice: str) -> None:
        """IF_SUPPORTED and screenIdle pass only what the app cannot measure; a practice simply missing from the answer fails."""
        device = {"platform": "darwin", "osVersion": "14.4", "screenIdle": True, "firewall": True, "diskEncryption": True,
                  "automaticUpdates": True, "screenLock": True, "remoteLogin": False, "openWifiConnections": True}
        del device[practice]

        actual = gatehouse_status(POLICIES, as_snapshot(device))

        assert "FAIL" == actual

    def test_converted_document_shape(self) -> None:
        """The converted document is one tier with every check, and says what it dropped."""
        document = convert_stethoscope_policy(RAW)

        assert ["default"] == list(document["tiers"])  # type: ignore[arg-type]
        assert "awsWorkspace" in str(document["description"])
        assert {"os_version", "os_version_recommended", "firewall", "screen_idle", "open_wifi_connections"} <= set(
            document["checks"])  # type: ignore[arg-type]


class TestProblems:
    def test_unsupported_practices_and_values_are_all_reported(self) -> None:
        """Values with no Gatehouse equivalent are refused with their paths."""
        raw = {
            "firewall": "SOMETIMES",
            "applications": [{"name": "bash"}],
            "screenIdle": "about two minutes",
            "osVersion": {"beos": {"ok": ">=5"}, "darwin": {"ok": "^14"}, "win32": {"nudge": ">=10.0.1"}},
        }

        with pytest.raises(PolicyParseError) as caught:
            convert_stethoscope_policy(raw)

        assert ["firewall", "applications", "screenIdle", "osVersion.beos", "osVersion.darwin.ok", "osVersion.win32"] == [
            p.path for p in caught.value.problems]


class TestShippedConversion:
    def test_deploy_copy_matches_the_converter(self) -> None:
        """deploy/policy-stethoscope-default.yaml is exactly the conversion of the fixture."""
        shipped = yaml.safe_load(SHIPPED.read_text())

        expected = convert_stethoscope_policy(RAW)

        assert expected == shipped
