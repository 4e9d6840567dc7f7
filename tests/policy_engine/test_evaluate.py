"""Evaluating snapshots: decisions, reasons, findings, grace and staleness boundaries."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest

from policy_engine import CompiledPolicySet, Decision, OsFamily, Reason, Severity, Version

from tests.policy_engine.factories import NOW, deploy_policies, make_snapshot, policies_from

TICK = timedelta(microseconds=1)

GRACE_POLICY = """
format: 1
checks:
  firewall: {fact: firewall_enabled, equals: true, grace: 72h}
  disk: {fact: disk_encrypted, equals: true}
  updates: {fact: auto_updates_enabled, equals: true, severity: nudge}
tiers:
  low:
    checks: [disk, firewall, updates]
    max_snapshot_age: 1h
    break_glass: never
"""


OPTIONAL_POLICY = """
format: 1
checks:
  disk: {fact: disk_encrypted, equals: true}
tiers:
  lobby:
    device: optional
    checks: [disk]
    max_snapshot_age: 1h
    break_glass: never
  low:
    checks: [disk]
    max_snapshot_age: 1h
    break_glass: never
"""


@pytest.fixture(scope="module")
def policies() -> CompiledPolicySet:
    """The example three-tier policy."""
    return deploy_policies()


class TestOutcomes:
    def test_healthy_device_is_allowed_at_every_tier(self, policies: CompiledPolicySet) -> None:
        """A healthy fresh snapshot passes low, medium and high with reason ok."""
        snapshot = make_snapshot()

        decisions = [policies.evaluate(snapshot, t, now=NOW) for t in policies.tier_names]

        assert [(True, Reason.OK)] * 3 == [(d.allowed, d.reason) for d in decisions]
        assert [timedelta(minutes=5)] * 3 == [d.snapshot_age for d in decisions]

    def test_missing_snapshot_is_device_unknown(self, policies: CompiledPolicySet) -> None:
        """No snapshot denies with device-unknown."""
        decision = policies.evaluate(None, "low", now=NOW)

        assert (False, Reason.DEVICE_UNKNOWN, "low") == (decision.allowed, decision.reason, decision.tier)

    def test_no_device_at_an_optional_tier_is_allowed_on_identity_alone(self) -> None:
        """`evaluate_without_device` allows a `device: optional` tier with reason identity-only, whatever its checks."""
        lobby = policies_from(OPTIONAL_POLICY)

        decision = lobby.evaluate_without_device("lobby", now=NOW)

        assert (True, Reason.IDENTITY_ONLY, "lobby", NOW, None) == (
            decision.allowed, decision.reason, decision.tier, decision.evaluated_at, decision.valid_until,
        )

    @pytest.mark.parametrize(("tier", "reason"), [("low", Reason.DEVICE_UNKNOWN), ("nowhere", Reason.TIER_UNKNOWN)])
    def test_no_device_elsewhere_is_denied_as_before(self, tier: str, reason: Reason) -> None:
        """Without a device, a tier that requires one is device-unknown and an undefined tier tier-unknown."""
        lobby = policies_from(OPTIONAL_POLICY)

        decision = lobby.evaluate_without_device(tier, now=NOW)

        assert (False, reason) == (decision.allowed, decision.reason)

    def test_a_device_at_an_optional_tier_is_still_evaluated(self) -> None:
        """`device: optional` changes nothing for a snapshot: a failing device is denied, a missing snapshot too."""
        lobby = policies_from(OPTIONAL_POLICY)

        failing = lobby.evaluate(make_snapshot(disk_encrypted=False), "lobby", now=NOW)
        unknown = lobby.evaluate(None, "lobby", now=NOW)

        assert (False, Reason.CHECKS_FAILED) == (failing.allowed, failing.reason)
        assert (False, Reason.DEVICE_UNKNOWN) == (unknown.allowed, unknown.reason)

    def test_unknown_tier_is_denied(self, policies: CompiledPolicySet) -> None:
        """A tier the policy does not define denies with tier-unknown."""
        decision = policies.evaluate(make_snapshot(), "critical", now=NOW)

        assert (False, Reason.TIER_UNKNOWN, "critical") == (decision.allowed, decision.reason, decision.tier)

    def test_failing_check_is_explained(self, policies: CompiledPolicySet) -> None:
        """An old macOS fails os_supported with the actual and required versions and remediation key."""
        snapshot = make_snapshot(os_version=Version.parse("12.7.4"))

        decision = policies.evaluate(snapshot, "low", now=NOW)

        assert (False, Reason.CHECKS_FAILED) == (decision.allowed, decision.reason)
        [finding] = decision.failing
        assert ("os_supported", "os_version", "12.7.4", ">= 13.0", Severity.FAIL, None, "os_version") == (
            finding.check, finding.fact, finding.actual, finding.required, finding.severity,
            finding.grace_deadline, finding.remediation)

    def test_nudges_never_block(self, policies: CompiledPolicySet) -> None:
        """A failing nudge is listed but the device is allowed."""
        snapshot = make_snapshot(auto_updates_enabled=False)

        decision = policies.evaluate(snapshot, "high", now=NOW)

        assert (True, Reason.OK, ["auto_updates"]) == (decision.allowed, decision.reason, [f.check for f in decision.nudges])

    def test_unreported_fact_fails_by_default(self, policies: CompiledPolicySet) -> None:
        """A fact the agent did not report fails a check that does not say otherwise."""
        snapshot = make_snapshot(disk_encrypted=None)

        decision = policies.evaluate(snapshot, "low", now=NOW)

        assert [("disk_encryption", "not reported", "on")] == [(f.check, f.actual, f.required) for f in decision.failing]

    def test_if_unknown_pass_accepts_unreported_fact(self, policies: CompiledPolicySet) -> None:
        """``if_unknown: pass`` (Stethoscope IF_SUPPORTED) passes a fact that was not reported."""
        snapshot = make_snapshot(gatekeeper_enabled=None)

        decision = policies.evaluate(snapshot, "high", now=NOW)

        assert True is decision.allowed

    def test_platform_scoped_check_skips_other_platforms(self, policies: CompiledPolicySet) -> None:
        """SIP is only required on macOS; Windows devices do not report it and still pass."""
        snapshot = make_snapshot(platform=OsFamily.WINDOWS, os_version=Version.parse("10.0.26100"), sip_enabled=None,
                                 gatekeeper_enabled=None)

        decision = policies.evaluate(snapshot, "high", now=NOW)

        assert (True, ()) == (decision.allowed, decision.failing)

    def test_platform_scoped_check_applies_to_unknown_platform(self, policies: CompiledPolicySet) -> None:
        """A device whose platform is unknown cannot prove it is exempt, so scoped checks apply."""
        snapshot = make_snapshot(platform=OsFamily.UNKNOWN, sip_enabled=None)

        decision = policies.evaluate(snapshot, "high", now=NOW)

        assert "sip" in [f.check for f in decision.failing]

    def test_linux_distribution_floors(self, policies: CompiledPolicySet) -> None:
        """Ubuntu 22.04 passes os_supported, Ubuntu 20.04 fails, an unlisted distribution fails."""
        ubuntu = make_snapshot(platform=OsFamily.LINUX, distribution="ubuntu", os_version=Version.parse("22.04"))
        old = dataclasses.replace(ubuntu, os_version=Version.parse("20.04.6"))
        gentoo = dataclasses.replace(ubuntu, distribution="gentoo")

        results = [policies.evaluate(s, "low", now=NOW) for s in (ubuntu, old, gentoo)]

        assert [True, False, False] == [d.allowed for d in results]
        assert "a supported platform (no minimum for `gentoo`)" == results[2].failing[0].required

    def test_check_error_denies_and_names_the_check(self, policies: CompiledPolicySet) -> None:
        """A fact of the wrong type makes its check raise: denied with check-error naming it."""
        snapshot = make_snapshot()
        object.__setattr__(snapshot, "screen_lock_delay_s", "600")

        decision = policies.evaluate(snapshot, "medium", now=NOW)

        assert (False, Reason.CHECK_ERROR) == (decision.allowed, decision.reason)
        assert "screen_lock_delay" in decision.detail

    def test_naive_now_denies_instead_of_raising(self, policies: CompiledPolicySet) -> None:
        """Broken inputs outside any check still deny, never raise."""
        decision = policies.evaluate(make_snapshot(), "low", now=datetime(2026, 1, 1))

        assert (False, Reason.CHECK_ERROR) == (decision.allowed, decision.reason)

    def test_device_clock_ahead_does_not_freshen_old_data(self, policies: CompiledPolicySet) -> None:
        """The snapshot's age counts from the earlier of collected_at and received_at."""
        snapshot = make_snapshot(collected_at=NOW + timedelta(hours=5), received_at=NOW - timedelta(hours=2))

        decision = policies.evaluate(snapshot, "medium", now=NOW)

        assert (Reason.SNAPSHOT_STALE, timedelta(hours=2)) == (decision.reason, decision.snapshot_age)

    def test_snapshot_from_the_future_beyond_skew_is_refused(self, policies: CompiledPolicySet) -> None:
        """A snapshot dated after now by more than max_clock_skew is denied until it is not."""
        snapshot = make_snapshot(age=-timedelta(minutes=5))

        decision = policies.evaluate(snapshot, "low", now=NOW)

        assert (False, Reason.SNAPSHOT_FROM_FUTURE) == (decision.allowed, decision.reason)
        assert NOW + timedelta(minutes=4) == decision.valid_until

    def test_snapshot_slightly_ahead_within_skew_is_accepted(self, policies: CompiledPolicySet) -> None:
        """Up to max_clock_skew (1m) ahead is accepted with a negative age."""
        snapshot = make_snapshot(age=-timedelta(seconds=30))

        decision = policies.evaluate(snapshot, "high", now=NOW)

        assert (True, -timedelta(seconds=30)) == (decision.allowed, decision.snapshot_age)


class TestStalenessBoundary:
    @pytest.mark.parametrize(("tier", "max_age"), [("low", timedelta(hours=24)), ("medium", timedelta(hours=1)),
                                                   ("high", timedelta(minutes=15))])
    def test_staleness_flips_exactly_after_max_age(self, policies: CompiledPolicySet, tier: str, max_age: timedelta) -> None:
        """At age == max_age the snapshot is fresh; one microsecond later it is stale."""
        snapshot = make_snapshot(age=timedelta(0))

        at_limit = policies.evaluate(snapshot, tier, now=NOW + max_age)
        past_limit = policies.evaluate(snapshot, tier, now=NOW + max_age + TICK)

        assert (Reason.OK, Reason.SNAPSHOT_STALE) == (at_limit.reason, past_limit.reason)
        assert NOW + max_age + TICK == at_limit.valid_until

    def test_stale_decision_never_expires(self, policies: CompiledPolicySet) -> None:
        """A stale snapshot stays stale: the decision is valid forever."""
        decision = policies.evaluate(make_snapshot(age=timedelta(days=2)), "low", now=NOW)

        assert (Reason.SNAPSHOT_STALE, None) == (decision.reason, decision.valid_until)


class TestGrace:
    def test_new_failure_without_history_counts_from_the_snapshot(self) -> None:
        """With no failing_since entry, grace starts at the snapshot's time, not at now."""
        policies = policies_from(GRACE_POLICY)
        snapshot = make_snapshot(firewall_enabled=False, age=timedelta(minutes=10))

        decision = policies.evaluate(snapshot, "low", now=NOW)

        assert (True, ["firewall"]) == (decision.allowed, [f.check for f in decision.in_grace])
        assert NOW - timedelta(minutes=10) + timedelta(hours=72) == decision.in_grace[0].grace_deadline

    def test_grace_flips_exactly_at_the_deadline(self) -> None:
        """Allowed one microsecond before first-failure + grace, denied at that instant."""
        policies = policies_from(GRACE_POLICY)
        first_failed = NOW - timedelta(hours=72)
        snapshot = make_snapshot(firewall_enabled=False, age=timedelta(0))
        history = {"firewall": first_failed}

        before = policies.evaluate(snapshot, "low", now=NOW - TICK, failing_since=history)
        at = policies.evaluate(dataclasses.replace(snapshot, collected_at=NOW - TICK, received_at=NOW - TICK), "low",
                               now=NOW, failing_since=history)

        assert (True, NOW) == (before.allowed, before.valid_until)
        assert (False, Reason.CHECKS_FAILED, NOW) == (at.allowed, at.reason, at.failing[0].grace_deadline)

    def test_history_later_than_the_snapshot_is_not_trusted(self) -> None:
        """A failing_since after the failing snapshot's own time is clamped to the snapshot time."""
        policies = policies_from(GRACE_POLICY)
        snapshot = make_snapshot(firewall_enabled=False, age=timedelta(minutes=30))

        decision = policies.evaluate(snapshot, "low", now=NOW, failing_since={"firewall": NOW})

        assert NOW - timedelta(minutes=30) + timedelta(hours=72) == decision.in_grace[0].grace_deadline

    def test_valid_until_is_the_earliest_boundary(self) -> None:
        """valid_until is the earlier of the staleness boundary and any grace deadline."""
        policies = policies_from(GRACE_POLICY)
        snapshot = make_snapshot(firewall_enabled=False, age=timedelta(minutes=1))

        decision = policies.evaluate(snapshot, "low", now=NOW, failing_since={"firewall": NOW - timedelta(hours=71, minutes=30)})

        assert NOW + timedelta(minutes=30) == decision.valid_until

    def test_blocking_failure_with_grace_past_reports_its_deadline(self) -> None:
        """A check past its grace blocks and still reports when the grace ended."""
        policies = policies_from(GRACE_POLICY)
        snapshot = make_snapshot(firewall_enabled=False)
        since = NOW - timedelta(days=5)

        decision = policies.evaluate(snapshot, "low", now=NOW, failing_since={"firewall": since})

        assert [("firewall", since + timedelta(hours=72))] == [(f.check, f.grace_deadline) for f in decision.failing]


class TestHelpers:
    def test_failing_check_names_lists_every_failing_check_of_every_tier(self, policies: CompiledPolicySet) -> None:
        """Failing checks from all tiers, nudges included, for the gateway's grace history."""
        snapshot = make_snapshot(firewall_enabled=False, sip_enabled=False, auto_updates_enabled=None)

        names = policies.failing_check_names(snapshot)

        assert frozenset({"firewall", "sip", "auto_updates"}) == names

    def test_tier_info_exposes_rules(self, policies: CompiledPolicySet) -> None:
        """Tier info gives rank, inherited checks, max age and break-glass rule."""
        high = policies.tier("high")

        assert high is not None
        assert (2, timedelta(minutes=15), "never", None) == (
            high.rank, high.max_snapshot_age, high.break_glass.mode.value, high.break_glass.max_duration)
        assert ("disk_encryption", "screen_lock") == high.checks[:2]
        assert None is policies.tier("critical")

    def test_remediation_lookup_merges_policy_overrides(self, policies: CompiledPolicySet) -> None:
        """The policy's doc_url overrides the default entry; steps stay from the defaults."""
        entry = policies.remediation_for("disk_encryption")

        assert "https://wiki.example.com/it/disk-encryption" == entry.doc_url
        assert "FileVault" in entry.steps_for(OsFamily.DARWIN)

    def test_remediation_lookup_of_unknown_key_gives_a_title(self, policies: CompiledPolicySet) -> None:
        """An unknown key still gives a usable entry."""
        entry = policies.remediation_for("mdm_enrolled")

        assert "Mdm enrolled" == entry.title

    def test_decision_is_frozen_and_json_ready(self, policies: CompiledPolicySet) -> None:
        """Decisions are frozen dataclasses whose to_dict is plain data."""
        decision = policies.evaluate(make_snapshot(firewall_enabled=False), "high", now=NOW)

        with pytest.raises(dataclasses.FrozenInstanceError):
            decision.allowed = True  # type: ignore[misc]

        data = decision.to_dict()
        assert (True, "ok", "firewall") == (data["allowed"], data["reason"], data["in_grace"][0]["check"])  # type: ignore[index]
        assert isinstance(decision, Decision)


CUSTOM_POLICY = """
format: 1
checks:
  mdm: {fact: custom.mdm_enrolled, equals: true}
  risk: {fact: custom.risk_score, at_most: 50}
  ring: {fact: custom.update_ring, one_of: [fast, normal]}
  edr: {fact: custom.edr_version, min_version: '7.2'}
tiers:
  low:
    checks: [mdm, risk, ring, edr]
    max_snapshot_age: 1h
    break_glass: {mode: approval, max_duration: 2h}
"""


class TestCustomFacts:
    @pytest.mark.parametrize(
        ("custom", "failing"),
        [
            ({"mdm_enrolled": True, "risk_score": 10, "update_ring": "fast", "edr_version": "7.10"}, []),
            ({"mdm_enrolled": 1, "risk_score": 10, "update_ring": "fast", "edr_version": "7.2"}, ["mdm"]),
            ({"mdm_enrolled": True, "risk_score": True, "update_ring": "slow", "edr_version": "7.1"}, ["risk", "ring", "edr"]),
            ({"mdm_enrolled": True, "risk_score": "10", "update_ring": 1, "edr_version": "latest"}, ["risk", "ring", "edr"]),
            ({}, ["mdm", "risk", "ring", "edr"]),
        ],
    )
    def test_custom_facts_are_typed_strictly(self, custom: dict[str, object], failing: list[str]) -> None:
        """Custom facts of the wrong type fail their check (``1`` is not ``true``), never raise."""
        policies = policies_from(CUSTOM_POLICY)

        decision = policies.evaluate(make_snapshot(custom=custom), "low", now=NOW)

        assert sorted(failing) == sorted(f.check for f in decision.failing)



UNMEASURABLE_POLICY = """
format: 1
checks:
  lock: {fact: screen_lock_enabled, equals: true}
  lock_nudge: {fact: screen_lock_enabled, equals: true, if_unmeasurable: nudge}
  lock_pass: {fact: screen_lock_enabled, equals: true, if_unmeasurable: pass}
  lock_known_pass: {fact: screen_lock_enabled, equals: true, if_unknown: pass}
  disk: {fact: disk_encrypted, equals: true}
tiers:
  strict: {checks: [disk, lock], max_snapshot_age: 1h, break_glass: never}
  nudge: {checks: [disk, lock_nudge], max_snapshot_age: 1h, break_glass: never}
  lenient: {checks: [disk, lock_pass], max_snapshot_age: 1h, break_glass: never}
  unknown_only: {checks: [disk, lock_known_pass], max_snapshot_age: 1h, break_glass: never}
"""


@pytest.fixture(scope="module")
def blind() -> CompiledPolicySet:
    """Checks on one fact with each `if_unmeasurable` choice, one tier each."""
    return policies_from(UNMEASURABLE_POLICY)


class TestUnmeasurable:
    def test_if_unmeasurable_decides_per_check(self, blind: CompiledPolicySet) -> None:
        """An unmeasurable fact fails by default (check-unmeasurable), is a nudge with `nudge`, passes with `pass`, and `if_unknown: pass` does not cover it."""
        snapshot = make_snapshot(screen_lock_enabled=None, unmeasurable=frozenset({"screen_lock_enabled"}))

        decisions = {t: blind.evaluate(snapshot, t, now=NOW) for t in blind.tier_names}

        assert (False, Reason.CHECK_UNMEASURABLE) == (decisions["strict"].allowed, decisions["strict"].reason)
        assert [("lock", True)] == [(f.check, f.unmeasurable) for f in decisions["strict"].failing]
        assert (True, [("lock_nudge", Severity.NUDGE, True)]) == (
            decisions["nudge"].allowed, [(f.check, f.severity, f.unmeasurable) for f in decisions["nudge"].nudges])
        assert (True, ()) == (decisions["lenient"].allowed, decisions["lenient"].nudges)
        assert (False, Reason.CHECK_UNMEASURABLE) == (decisions["unknown_only"].allowed, decisions["unknown_only"].reason)

    def test_a_real_failure_beside_an_unmeasurable_one_is_checks_failed(self, blind: CompiledPolicySet) -> None:
        """A device failing a measured check as well is denied with checks-failed, and the finding names the source."""
        snapshot = make_snapshot(screen_lock_enabled=None, disk_encrypted=False, source="osquery",
                                 unmeasurable=frozenset({"screen_lock_enabled"}))

        decision = blind.evaluate(snapshot, "strict", now=NOW)

        assert Reason.CHECKS_FAILED == decision.reason
        assert {"disk": "off", "lock": "not measurable by osquery on darwin"} == {f.check: f.actual for f in decision.failing}

    def test_unmeasurable_is_not_unknown(self, blind: CompiledPolicySet) -> None:
        """A fact that is merely not reported still follows `if_unknown`, never `if_unmeasurable`."""
        snapshot = make_snapshot(screen_lock_enabled=None)

        decisions = {t: blind.evaluate(snapshot, t, now=NOW) for t in ("lenient", "unknown_only")}

        assert (False, True) == (decisions["lenient"].allowed, decisions["unknown_only"].allowed)
        assert Reason.CHECKS_FAILED == decisions["lenient"].reason
