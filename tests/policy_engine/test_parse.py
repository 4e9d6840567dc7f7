"""Parsing policy documents: every problem reported with its path, unknown keys refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from policy_engine import (
    BreakGlassMode,
    ControlRef,
    DeviceRequirement,
    IfUnknown,
    Operator,
    OsFamily,
    PolicyParseError,
    Severity,
    Version,
    VersionFloor,
    compile_policy_set,
    format_duration,
    parse_duration,
    parse_policy_document,
)

from tests.policy_engine.factories import DEPLOY_POLICY, load_yaml

MINIMAL = """
format: 1
checks:
  disk:
    fact: disk_encrypted
    equals: true
tiers:
  low:
    checks: [disk]
    max_snapshot_age: 24h
    break_glass: never
"""


def problems_of(text: str) -> dict[str, str]:
    """Parse YAML text that must fail; the problems as {path: code}."""
    with pytest.raises(PolicyParseError) as caught:
        parse_policy_document(load_yaml(text), source="t.yaml")
    return {p.path: p.code for p in caught.value.problems}


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [("72h", timedelta(hours=72)), ("15m", timedelta(minutes=15)), ("7d", timedelta(days=7)),
         ("1h30m", timedelta(minutes=90)), ("90s", timedelta(seconds=90))],
    )
    def test_durations_parse(self, text: str, expected: timedelta) -> None:
        """Durations are a number and a unit, units combinable largest first."""
        value = parse_duration(text)

        assert expected == value

    @pytest.mark.parametrize("text", ["", "72", "h", "1.5h", "30m1h", "-1h"])
    def test_bad_durations_are_refused(self, text: str) -> None:
        """Text that is not ``<number><unit>...`` raises ValueError naming it."""
        with pytest.raises(ValueError) as caught:
            parse_duration(text)

        assert f"`{text}` is not a duration" in str(caught.value)

    def test_format_duration_round_trips(self) -> None:
        """A formatted duration parses back to itself."""
        value = timedelta(days=1, hours=2, minutes=3, seconds=4)

        text = format_duration(value)

        assert ("1d2h3m4s", value) == (text, parse_duration(text))


class TestValidDocuments:
    def test_minimal_document_parses(self) -> None:
        """A document with one check and one tier parses to its typed form."""
        raw = load_yaml(MINIMAL)

        doc = parse_policy_document(raw, source="t.yaml")

        assert ("t.yaml", ("disk",), ("low",)) == (doc.source, tuple(c.name for c in doc.checks), tuple(t.name for t in doc.tiers))
        assert (Operator.EQUALS, True, Severity.FAIL, IfUnknown.FAIL) == (
            doc.checks[0].operator, doc.checks[0].value, doc.checks[0].severity, doc.checks[0].if_unknown)

    def test_deploy_policy_parses(self) -> None:
        """The example deploy/policy.yaml is valid, with three tiers in order."""
        raw = load_yaml(DEPLOY_POLICY.read_text())

        doc = parse_policy_document(raw, source="deploy/policy.yaml")

        assert ("low", "medium", "high") == tuple(t.name for t in doc.tiers)
        assert (BreakGlassMode.ALLOWED, BreakGlassMode.APPROVAL, BreakGlassMode.NEVER) == tuple(
            t.break_glass.mode for t in doc.tiers)
        assert timedelta(hours=4) == doc.tiers[1].break_glass.max_duration

    def test_version_floor_per_platform_and_distribution(self) -> None:
        """``min_version`` may give one floor per platform and per Linux distribution."""
        text = MINIMAL.replace(
            "    fact: disk_encrypted\n    equals: true",
            "    fact: os_version\n    min_version:\n      darwin: '14.4'\n      windows: 10.0.19045\n"
            "      linux: {ubuntu: '22.04', default: '6'}",
        )

        doc = parse_policy_document(load_yaml(text), source="t")

        assert VersionFloor(
            darwin=Version.parse("14.4"),
            windows=Version.parse("10.0.19045"),
            linux=Version.parse("6"),
            linux_distributions=(("ubuntu", Version.parse("22.04")),),
        ) == doc.checks[0].value

    def test_check_options_parse(self) -> None:
        """Severity, grace, if_unknown, platforms and remediation are read from a check."""
        text = MINIMAL.replace(
            "    equals: true",
            "    equals: true\n    severity: fail\n    grace: 72h\n    if_unknown: pass\n"
            "    platforms: [darwin, windows]\n    remediation: firewall",
        )

        check = parse_policy_document(load_yaml(text), source="t").checks[0]

        assert (timedelta(hours=72), IfUnknown.PASS, frozenset({OsFamily.DARWIN, OsFamily.WINDOWS}), "firewall") == (
            check.grace, check.if_unknown, check.platforms, check.remediation)


class TestProblems:
    def test_unknown_check_in_tier_is_reported_with_index_and_suggestion(self) -> None:
        """``tiers.high.checks[2]: unknown check `fire_wall`; did you mean `firewall`? ...``."""
        text = """
format: 1
checks:
  firewall: {fact: firewall_enabled, equals: true}
  disk: {fact: disk_encrypted, equals: true}
tiers:
  high:
    checks: [disk, firewall, fire_wall]
    max_snapshot_age: 15m
    break_glass: never
"""
        with pytest.raises(PolicyParseError) as caught:
            parse_policy_document(load_yaml(text), source="t")

        assert [
            "tiers.high.checks[2]: unknown check `fire_wall`; did you mean `firewall`? known checks: `firewall`, `disk`"
        ] == [str(p) for p in caught.value.problems]

    def test_every_problem_in_a_file_is_reported(self) -> None:
        """Several problems across checks, tiers and remediation are all reported at once."""
        text = """
format: 2
colour: blue
checks:
  firewall:
    fact: fire_wall_enabled
    equals: true
  lock:
    fact: screen_lock_delay_s
    at_most: ten minutes
  os:
    fact: os_version
    min_version: {darwin: 14.4, beos: '5'}
  agent:
    fact: agent_version
    at_least: 3
  both:
    fact: disk_encrypted
    equals: true
    severity: nudge
    grace: 72h
    colour: red
  none:
    fact: disk_encrypted
tiers:
  low:
    checks: [firewall, firewal]
    max_snapshot_age: 1 day
    break_glass: {mode: allowed}
  high:
    extends: higher
    checks: [firewall, firewall]
    break_glass: sometimes
remediation:
  custom_thing:
    why: because
    doc_url: wiki/page
"""
        found = problems_of(text)

        assert {
            "format": "bad-value",
            "colour": "unknown-key",
            "checks.firewall.fact": "unknown-fact",
            "checks.lock.at_most": "wrong-type",
            "checks.os.min_version.darwin": "bad-version",
            "checks.os.min_version.beos": "unknown-key",
            "checks.agent.at_least": "bad-comparison",
            "checks.both.grace": "conflict",
            "checks.both.colour": "unknown-key",
            "checks.none": "missing-key",
            "tiers.low.checks[1]": "unknown-check",
            "tiers.low.max_snapshot_age": "bad-duration",
            "tiers.low.break_glass": "missing-key",
            "tiers.high.extends": "unknown-tier",
            "tiers.high.checks[1]": "duplicate",
            "tiers.high": "missing-key",
            "tiers.high.break_glass": "wrong-type",
            "remediation.custom_thing": "missing-key",
            "remediation.custom_thing.doc_url": "bad-value",
        } == found

    def test_unquoted_float_version_is_refused_with_a_hint(self) -> None:
        """``min_version: 10.10`` reads as the number 10.1, so it must be quoted."""
        text = MINIMAL.replace("    fact: disk_encrypted\n    equals: true", "    fact: os_version\n    min_version: 10.10")

        with pytest.raises(PolicyParseError) as caught:
            parse_policy_document(load_yaml(text), source="t")

        assert ["checks.disk.min_version: `10.1` is read as a number, not a version; quote it: `\"10.1\"`"] == [
            str(p) for p in caught.value.problems]

    def test_two_comparisons_in_one_check_conflict(self) -> None:
        """A check takes exactly one comparison."""
        text = MINIMAL.replace("    equals: true", "    equals: true\n    one_of: [true]")

        found = problems_of(text)

        assert {"checks.disk": "conflict"} == found

    def test_extending_a_later_tier_is_refused(self) -> None:
        """A tier extends only a less sensitive tier listed before it, so cycles cannot exist."""
        text = MINIMAL + """
    extends: high
  high:
    extends: low
    checks: []
    max_snapshot_age: 15m
    break_glass: never
"""
        with pytest.raises(PolicyParseError) as caught:
            parse_policy_document(load_yaml(text), source="t")

        assert ["tiers.low.extends: `high` is listed after it; extend a less sensitive tier listed before `low`: none"] == [
            str(p) for p in caught.value.problems]

    @pytest.mark.parametrize("raw", [None, [], "policy", 3])
    def test_non_mapping_document_is_one_problem(self, raw: object) -> None:
        """A document that is not a mapping is refused with one problem."""
        with pytest.raises(PolicyParseError) as caught:
            parse_policy_document(raw, source="t")  # type: ignore[arg-type]

        assert 1 == len(caught.value.problems)

    def test_unknown_remediation_key_is_reported(self) -> None:
        """A check naming a remediation entry that exists nowhere is a problem."""
        text = MINIMAL.replace("    equals: true", "    equals: true\n    remediation: disk_encrpytion")

        found = problems_of(text)

        assert {"checks.disk.remediation": "unknown-remediation"} == found

    def test_messages_are_one_lowercase_line_without_final_period(self) -> None:
        """Every message follows the house style."""
        text = "format: 1\nchecks: {a: {fact: x, equals: 1}}\ntiers: {Low: {checks: [b], max_snapshot_age: 5, break_glass: {}}}"

        with pytest.raises(PolicyParseError) as caught:
            parse_policy_document(load_yaml(text), source="t")

        messages = [p.message for p in caught.value.problems]
        assert [] == [m for m in messages if "\n" in m or m.endswith(".") or not (m[0].islower() or m[0] == "`")]


class TestFormatDocumentation:
    def test_format_md_example_compiles(self) -> None:
        """The example in policy_engine/FORMAT.md is a valid policy."""
        text = (DEPLOY_POLICY.parents[1] / "policy_engine" / "FORMAT.md").read_text()
        example = text.split("```yaml\n", 1)[1].split("```", 1)[0]

        policies = compile_policy_set(parse_policy_document(load_yaml(example), source="FORMAT.md"))

        assert ("low", "medium", "high") == policies.tier_names


def messages_of(text: str) -> dict[str, str]:
    """Parse YAML text that must fail; the problems as {path: message}."""
    with pytest.raises(PolicyParseError) as caught:
        parse_policy_document(load_yaml(text), source="t.yaml")
    return {p.path: p.message for p in caught.value.problems}


class TestControls:
    def test_controls_map_checks_to_framework_controls(self) -> None:
        """Each check's controls come out in file order with framework, id and title."""
        text = MINIMAL + """
controls:
  disk:
    - {framework: HIPAA, id: "164.312(a)(2)(iv)", title: Encryption and decryption}
    - {framework: SOC 2, id: CC6.7}
"""

        policies = compile_policy_set(parse_policy_document(load_yaml(text), source="t"))

        assert {"disk": (ControlRef("HIPAA", "164.312(a)(2)(iv)", "Encryption and decryption"),
                         ControlRef("SOC 2", "CC6.7", ""))} == dict(policies.controls)

    def test_every_control_problem_is_reported_with_its_path(self) -> None:
        """Unknown checks, unknown keys, missing ids, duplicates and non-lists are all reported at once."""
        text = MINIMAL + """
controls:
  disc:
    - {framework: HIPAA, id: "164.312(a)(2)(iv)"}
  disk:
    - {framework: HIPAA, idd: x}
    - {framework: SOC 2, id: CC6.7}
    - {framework: SOC 2, id: CC6.7}
"""

        problems = messages_of(text)

        assert "unknown check `disc`; did you mean `disk`?" in problems["controls.disc"]
        assert "unknown key `idd`; did you mean `id`?" in problems["controls.disk[0].idd"]
        assert "missing `id`" in problems["controls.disk[0]"]
        assert "control `SOC 2 CC6.7` is listed twice for `disk`" in problems["controls.disk[2]"]

    def test_controls_must_be_a_list(self) -> None:
        """A check mapped to a bare string is refused with the shape to write instead."""
        problems = messages_of(MINIMAL + "controls:\n  disk: CC6.7\n")

        assert "expected a list of controls such as `[{framework: SOC2, id: CC6.7}]`" in problems["controls.disk"]

    def test_controls_leave_decisions_and_old_versions_alone(self) -> None:
        """A policy without controls keeps its version; adding controls changes it but no decision."""
        plain = compile_policy_set(parse_policy_document(load_yaml(MINIMAL), source="t"))
        mapped = compile_policy_set(parse_policy_document(
            load_yaml(MINIMAL + "controls:\n  disk: [{framework: SOC 2, id: CC6.7}]\n"), source="t"))

        assert {} == dict(plain.controls)
        assert plain.version != mapped.version
        assert plain.tier("low") == mapped.tier("low")

    def test_example_policy_maps_hipaa_soc2_and_hitrust(self) -> None:
        """The shipped example maps checks to controls of all three frameworks."""
        policies = compile_policy_set(parse_policy_document(load_yaml(DEPLOY_POLICY.read_text()), source="policy.yaml"))

        frameworks = {ref.framework for refs in policies.controls.values() for ref in refs}

        assert {"HIPAA", "SOC 2", "HITRUST CSF"} == frameworks
        assert ControlRef("HIPAA", "164.312(a)(2)(iv)", "Encryption and decryption") in policies.controls["disk_encryption"]


OPTIONAL_TIER = """
format: 1
checks:
  disk: {fact: disk_encrypted, equals: true}
tiers:
  lobby:
    device: optional
    checks: [disk]
    max_snapshot_age: 24h
    break_glass: never
  low:
    extends: lobby
    max_snapshot_age: 24h
    break_glass: never
"""


class TestDeviceRequirement:
    def test_device_defaults_to_required_and_is_not_inherited(self) -> None:
        """A tier without `device` needs one, even when it extends a `device: optional` tier."""
        doc = parse_policy_document(load_yaml(OPTIONAL_TIER), source="t.yaml")

        devices = {t.name: t.device for t in doc.tiers}

        assert {"lobby": DeviceRequirement.OPTIONAL, "low": DeviceRequirement.REQUIRED} == devices

    def test_unknown_device_value_is_an_error_with_its_path(self) -> None:
        """`device: sometimes` is refused at `tiers.lobby.device`, naming the values it may take."""
        text = OPTIONAL_TIER.replace("device: optional", "device: sometimes")

        messages = messages_of(text)

        assert {"tiers.lobby.device": "`sometimes` is not allowed here; write one of `required`, `optional`"} == messages

    def test_a_boolean_device_value_is_an_error(self) -> None:
        """`device: false` (YAML's boolean) is not read as optional; it is refused like any other unknown value."""
        text = OPTIONAL_TIER.replace("device: optional", "device: false")

        problems = problems_of(text)

        assert {"tiers.lobby.device": "bad-value"} == problems
