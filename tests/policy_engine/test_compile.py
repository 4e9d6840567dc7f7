"""Compiling documents: references resolved, problems reported, tiers inherited and ordered."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given

from policy_engine import (
    BreakGlassMode,
    BreakGlassSpec,
    CheckSpec,
    DeviceRequirement,
    DeviceSnapshot,
    Operator,
    PolicyCompileError,
    PolicyDocument,
    RemediationSpec,
    TierSpec,
    compile_policy_set,
    parse_policy_document,
)

from tests.policy_engine.factories import DEPLOY_POLICY, deploy_policies, load_yaml
from tests.policy_engine.strategies import RELAXED, snapshots

NEVER = BreakGlassSpec(BreakGlassMode.NEVER)
DISK = CheckSpec("disk", "disk_encrypted", Operator.EQUALS, True)
DEPLOY = deploy_policies()


class TestProblems:
    def test_every_reference_problem_is_reported(self) -> None:
        """Typed documents built in code get the same cross-checks as parsed ones, all at once."""
        doc = PolicyDocument(
            source="code",
            checks=(DISK, DISK, CheckSpec("fw", "firewall_enabled", Operator.EQUALS, True, remediation="nope")),
            tiers=(
                TierSpec("low", ("disk", "missing"), timedelta(hours=1), BreakGlassSpec(BreakGlassMode.ALLOWED)),
                TierSpec("high", ("fw",), timedelta(minutes=5), NEVER, extends="top"),
            ),
            remediation=(RemediationSpec("mine"),),
        )

        with pytest.raises(PolicyCompileError) as caught:
            compile_policy_set(doc)

        assert [
            "checks.disk",
            "checks.fw.remediation",
            "remediation.mine",
            "tiers.low.checks[1]",
            "tiers.low.break_glass",
            "tiers.high.extends",
        ] == [p.path for p in caught.value.problems]

    def test_check_that_cannot_compile_is_a_problem(self) -> None:
        """A fact/comparison pair the parser would refuse is reported, not crashed on."""
        doc = PolicyDocument(
            source="code",
            checks=(CheckSpec("odd", "no_such_fact", Operator.EQUALS, True),),
            tiers=(TierSpec("low", ("odd",), timedelta(hours=1), NEVER),),
        )

        with pytest.raises(PolicyCompileError) as caught:
            compile_policy_set(doc)

        assert ["checks.odd"] == [p.path for p in caught.value.problems]


class TestTiers:
    def test_tiers_inherit_checks_in_order(self) -> None:
        """``extends`` puts the lower tier's checks first, then the tier's own."""
        tiers = DEPLOY.tiers

        low, medium, high = (t.checks for t in tiers)

        assert low == medium[: len(low)] and medium == high[: len(medium)]
        assert ("remote_login_off", "sip", "gatekeeper") == high[len(medium):]

    def test_checks_run_cheapest_first(self) -> None:
        """Inside a tier, boolean checks run before version checks."""
        tier = DEPLOY._by_name["high"]

        costs = [c.cost for c in tier.checks]

        assert sorted(costs) == costs

    @RELAXED
    @given(snapshots())
    def test_generated_function_agrees_with_the_checks(self, snapshot: DeviceSnapshot) -> None:
        """A tier's generated function lists exactly the checks whose closure fails."""
        for tier in DEPLOY._by_name.values():
            expected = [i for i, c in enumerate(tier.checks) if not c.passes(snapshot)]

            indices = tier.failing(snapshot)

            assert expected == indices

    def test_fingerprint_ignores_source_and_tracks_content(self) -> None:
        """The same content from two paths has one version; a changed value changes it."""
        raw = load_yaml(DEPLOY_POLICY.read_text())
        a = compile_policy_set(parse_policy_document(raw, source="a.yaml"))
        b = compile_policy_set(parse_policy_document(raw, source="b.yaml"))
        raw["tiers"]["high"]["max_snapshot_age"] = "10m"

        c = compile_policy_set(parse_policy_document(raw, source="a.yaml"))

        assert (a.version, True) == (b.version, a.version != c.version)

    def test_device_requirement_reaches_the_compiled_tier(self) -> None:
        """A tier's `device` is in its TierInfo (and its JSON); tiers that do not say it require a device."""
        doc = PolicyDocument(
            source="code",
            checks=(DISK,),
            tiers=(
                TierSpec("lobby", ("disk",), timedelta(hours=1), NEVER, device=DeviceRequirement.OPTIONAL),
                TierSpec("low", (), timedelta(hours=1), NEVER, extends="lobby"),
            ),
        )

        policies = compile_policy_set(doc)

        assert [DeviceRequirement.OPTIONAL, DeviceRequirement.REQUIRED] == [t.device for t in policies.tiers]
        assert ["optional", "required"] == [t.to_dict()["device"] for t in policies.tiers]

    def test_fingerprint_of_a_policy_without_device_is_unchanged_and_optional_changes_it(self) -> None:
        """Writing the default `device: required` keeps a policy's version; `device: optional` gives a new one."""
        raw = load_yaml(DEPLOY_POLICY.read_text())
        before = compile_policy_set(parse_policy_document(raw, source="a.yaml")).version
        raw["tiers"]["low"]["device"] = "required"
        spelled_out = compile_policy_set(parse_policy_document(raw, source="a.yaml")).version
        raw["tiers"]["low"]["device"] = "optional"

        optional = compile_policy_set(parse_policy_document(raw, source="a.yaml")).version

        assert (before, True) == (spelled_out, optional != before)

    def test_custom_check_without_remediation_gets_a_generic_entry(self) -> None:
        """A custom fact check with no catalog entry still has a remediation key that resolves."""
        doc = PolicyDocument(
            source="code",
            checks=(CheckSpec("mdm_enrolled", "custom.mdm", Operator.EQUALS, True, description="Enroll in MDM"),),
            tiers=(TierSpec("low", ("mdm_enrolled",), timedelta(hours=1), NEVER),),
        )

        policies = compile_policy_set(doc)

        assert "Enroll in MDM" == policies.remediation_for(policies.checks["mdm_enrolled"].remediation).title
