"""Properties of evaluation over arbitrary snapshots and policies (hypothesis)."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from policy_engine import (
    BreakGlassMode,
    BreakGlassSpec,
    CheckSpec,
    CompiledPolicySet,
    DeviceSnapshot,
    IfUnknown,
    Operator,
    OsFamily,
    PolicyDocument,
    Reason,
    Severity,
    TierSpec,
    Version,
    VersionFloor,
    compile_policy_set,
)

from tests.policy_engine.factories import NOW, deploy_policies
from tests.policy_engine.strategies import RELAXED, hostile_snapshots, snapshots, utc_instants

DEPLOY = deploy_policies()
V = Version.parse
POOL = (
    CheckSpec("disk", "disk_encrypted", Operator.EQUALS, True),
    CheckSpec("firewall", "firewall_enabled", Operator.EQUALS, True, grace=timedelta(hours=72)),
    CheckSpec("remote", "remote_login_enabled", Operator.EQUALS, False, if_unknown=IfUnknown.PASS),
    CheckSpec("lock_delay", "screen_lock_delay_s", Operator.AT_MOST, 600, grace=timedelta(hours=1)),
    CheckSpec("updates", "auto_updates_enabled", Operator.EQUALS, True, severity=Severity.NUDGE),
    CheckSpec("sip", "sip_enabled", Operator.EQUALS, True, platforms=frozenset({OsFamily.DARWIN})),
    CheckSpec("os", "os_version", Operator.MIN_VERSION,
              VersionFloor(darwin=V("14.4"), windows=V("10.0.19045"), linux_distributions=(("ubuntu", V("22.04")),))),
    CheckSpec("agent", "agent_version", Operator.MIN_VERSION, VersionFloor(everywhere=V("5.10"))),
    CheckSpec("ring", "custom.update_ring", Operator.ONE_OF, ("fast", "normal")),
    CheckSpec("risk", "custom.risk_score", Operator.BELOW, 50, if_unknown=IfUnknown.PASS),
    CheckSpec("distro", "distribution", Operator.NONE_OF, ("arch",), platforms=frozenset({OsFamily.LINUX})),
    CheckSpec("platform", "platform", Operator.ONE_OF, ("darwin", "windows", "linux")),
)
AGES = [timedelta(minutes=15), timedelta(hours=1), timedelta(hours=24), timedelta(days=3)]


def two_tier_policy(strict: frozenset[str], lax: frozenset[str], strict_age: timedelta, lax_age: timedelta) -> CompiledPolicySet:
    """A policy with tier `lax` first and tier `strict` second."""
    rule = BreakGlassSpec(BreakGlassMode.NEVER)
    return compile_policy_set(
        PolicyDocument(
            source="property",
            checks=POOL,
            tiers=(
                TierSpec("lax", tuple(c.name for c in POOL if c.name in lax), lax_age, rule),
                TierSpec("strict", tuple(c.name for c in POOL if c.name in strict), strict_age, rule),
            ),
        )
    )


check_subsets = st.frozensets(st.sampled_from([c.name for c in POOL]))
histories = st.dictionaries(st.sampled_from([c.name for c in POOL]), utc_instants(), max_size=4)


class TestTotality:
    @RELAXED
    @given(snapshots(), st.sampled_from(["low", "medium", "high", "nope"]), utc_instants(), histories)
    def test_evaluate_never_raises_on_well_typed_snapshots(
        self, snapshot: DeviceSnapshot, tier: str, now: object, history: dict[str, object]
    ) -> None:
        """Every well-typed snapshot gets a decision; allowed implies reason ok."""
        decision = DEPLOY.evaluate(snapshot, tier, now=now, failing_since=history)  # type: ignore[arg-type]

        assert decision.allowed is (decision.reason is Reason.OK)

    @RELAXED
    @given(hostile_snapshots(), st.sampled_from(["low", "medium", "high"]))
    def test_evaluate_never_raises_on_broken_snapshots(self, snapshot: DeviceSnapshot, tier: str) -> None:
        """Wrong types anywhere in a snapshot deny or decide, never raise."""
        decision = DEPLOY.evaluate(snapshot, tier, now=NOW)

        assert decision.allowed is (decision.reason is Reason.OK)

    @RELAXED
    @given(snapshots(), st.one_of(st.none(), st.integers(), st.text(alphabet="lowhig", max_size=3)))
    def test_evaluate_never_raises_on_odd_tiers_or_clock(self, snapshot: DeviceSnapshot, now: object) -> None:
        """Odd tier names and a missing or wrong-typed clock deny, never raise."""
        decisions = [DEPLOY.evaluate(snapshot, t, now=now) for t in ("low", "", "HIGH")]  # type: ignore[arg-type]

        assert [False, False, False] == [d.allowed for d in decisions]

    @RELAXED
    @given(hostile_snapshots())
    def test_failing_check_names_never_raises(self, snapshot: DeviceSnapshot) -> None:
        """The ingest helper is total too."""
        names = DEPLOY.failing_check_names(snapshot)

        assert names <= set(DEPLOY.checks)


class TestMonotonicity:
    @settings(RELAXED, max_examples=300)
    @given(snapshots(), check_subsets, check_subsets, st.sampled_from(AGES), st.sampled_from(AGES), histories, utc_instants())
    def test_allowed_at_a_tier_is_allowed_at_any_laxer_tier(
        self, snapshot: DeviceSnapshot, strict: frozenset[str], extra: frozenset[str],
        age_a: timedelta, age_b: timedelta, history: dict[str, object], now: object,
    ) -> None:
        """A tier requiring a subset of checks and accepting older data never denies what a stricter one allows."""
        lax_checks = strict - extra
        policies = two_tier_policy(strict, lax_checks, min(age_a, age_b), max(age_a, age_b))

        strict_decision = policies.evaluate(snapshot, "strict", now=now, failing_since=history)  # type: ignore[arg-type]
        lax_decision = policies.evaluate(snapshot, "lax", now=now, failing_since=history)  # type: ignore[arg-type]

        assert (not strict_decision.allowed) or lax_decision.allowed


class TestValidity:
    @settings(RELAXED, max_examples=200)
    @given(snapshots(), st.sampled_from(["low", "medium", "high"]), histories, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=4)))
    def test_decision_is_unchanged_until_valid_until(
        self, snapshot: DeviceSnapshot, tier: str, history: dict[str, object], later: timedelta
    ) -> None:
        """Evaluating again at any instant before valid_until gives the same verdict, reason and findings."""
        first = DEPLOY.evaluate(snapshot, tier, now=NOW, failing_since=history)  # type: ignore[arg-type]
        when = NOW + later
        if first.valid_until is not None and when >= first.valid_until:
            when = first.valid_until - timedelta(microseconds=1)

        again = DEPLOY.evaluate(snapshot, tier, now=when, failing_since=history)  # type: ignore[arg-type]

        assert (first.allowed, first.reason, first.failing, first.in_grace, first.nudges) == (
            again.allowed, again.reason, again.failing, again.in_grace, again.nudges)

    @settings(RELAXED, max_examples=200)
    @given(snapshots(), st.sampled_from(["low", "medium", "high"]), histories)
    def test_decision_changes_at_valid_until(self, snapshot: DeviceSnapshot, tier: str, history: dict[str, object]) -> None:
        """At valid_until the decision differs (a grace ends or the snapshot goes stale)."""
        first = DEPLOY.evaluate(snapshot, tier, now=NOW, failing_since=history)  # type: ignore[arg-type]
        if first.valid_until is None:
            return

        after = DEPLOY.evaluate(snapshot, tier, now=first.valid_until, failing_since=history)  # type: ignore[arg-type]

        assert (first.allowed, first.reason, first.failing, first.in_grace) != (
            after.allowed, after.reason, after.failing, after.in_grace)
