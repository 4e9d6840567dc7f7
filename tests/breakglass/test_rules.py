"""Tests for breakglass/rules.py: the pure checks behind every break-glass decision."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from breakglass import (
    HARD_MAX_DURATION,
    BreakglassConfig,
    Grant,
    GrantRejected,
    GrantStatus,
    NotAuthorised,
    TierMode,
    TierRule,
    is_active,
    status_at,
)
from breakglass.rules import (
    check_approver,
    check_reason,
    check_reviewer,
    check_revoker,
    counts_in_window,
    decide_outcome,
    effective_duration,
)
from tests.breakglass.factories import ALLOWED, APPROVAL, APPROVERS, HIGH, NEVER, NOW, REVIEWERS, make_config


def make_grant(**overrides: object) -> Grant:
    """An active self-granted grant of alice, 09:00 to 10:00 on NOW's day."""
    grant = Grant(
        id="g-1", user="alice", user_email="alice@example.com", device_serial="SER-A", scope=HIGH,
        reason="paged at 3am: billing database is down", duration=timedelta(hours=1),
        requested_at=NOW, status=GrantStatus.ACTIVE, starts_at=NOW, expires_at=NOW + timedelta(hours=1),
        self_granted=True,
    )
    return replace(grant, **overrides)  # type: ignore[arg-type]


class TestCheckReason:
    def test_reason_is_stripped_before_counting(self) -> None:
        """Whitespace around the reason does not count towards the minimum length."""
        config = BreakglassConfig(min_reason_length=20)

        with pytest.raises(GrantRejected) as caught:
            check_reason("   " + "x" * 19 + "   ", config=config)

        assert "reason-too-short" == caught.value.code
        assert "19 characters" in str(caught.value)

    def test_reason_of_exactly_the_minimum_is_accepted(self) -> None:
        """A reason of exactly the minimum length passes and comes back stripped."""
        config = BreakglassConfig(min_reason_length=20)

        reason = check_reason("  " + "x" * 20 + "\n", config=config)

        assert "x" * 20 == reason

    def test_minimum_is_configurable(self) -> None:
        """A lower configured minimum accepts shorter reasons."""
        config = BreakglassConfig(min_reason_length=5)

        reason = check_reason("outage", config=config)

        assert "outage" == reason


class TestEffectiveDuration:
    def test_no_duration_takes_the_tier_default(self) -> None:
        """A request without a duration gets the tier's default."""
        duration = effective_duration(None, rule=ALLOWED, config=BreakglassConfig())

        assert timedelta(hours=1) == duration

    def test_no_default_takes_the_tier_maximum(self) -> None:
        """A tier without a default grants its maximum."""
        duration = effective_duration(None, rule=APPROVAL, config=BreakglassConfig())

        assert timedelta(hours=2) == duration

    def test_longer_than_tier_maximum_is_rejected(self) -> None:
        """Asking for more than the tier allows is refused, naming the maximum."""
        with pytest.raises(GrantRejected) as caught:
            effective_duration(timedelta(hours=5), rule=ALLOWED, config=BreakglassConfig())

        assert "duration-too-long" == caught.value.code
        assert "`4h`" in str(caught.value)

    def test_hard_ceiling_applies_whatever_the_policy_says(self) -> None:
        """A tier allowing 48 hours still grants at most 24."""
        generous = TierRule(TierMode.ALLOWED, max_duration=timedelta(hours=48))

        default = effective_duration(None, rule=generous, config=BreakglassConfig())
        with pytest.raises(GrantRejected):
            effective_duration(timedelta(hours=24, seconds=1), rule=generous, config=BreakglassConfig())

        assert HARD_MAX_DURATION == default

    def test_config_cannot_raise_the_ceiling(self) -> None:
        """A configured maximum above 24 hours is refused at load."""
        with pytest.raises(ValueError, match="max_duration"):
            BreakglassConfig(max_duration=timedelta(hours=25))

    @pytest.mark.parametrize("asked", [timedelta(0), timedelta(seconds=-5), timedelta(microseconds=10)])
    def test_non_positive_duration_is_rejected(self, asked: timedelta) -> None:
        """Zero, negative or sub-second durations are refused."""
        with pytest.raises(GrantRejected) as caught:
            effective_duration(asked, rule=ALLOWED, config=BreakglassConfig())

        assert "duration-invalid" == caught.value.code

    def test_fractions_of_a_second_are_dropped(self) -> None:
        """Durations are whole seconds, rounded down."""
        duration = effective_duration(timedelta(seconds=90, microseconds=999), rule=ALLOWED, config=BreakglassConfig())

        assert timedelta(seconds=90) == duration

    @given(st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=3)),
           st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=3)))
    def test_never_exceeds_the_hard_ceiling(self, tier_max: timedelta, asked: timedelta) -> None:
        """Whatever the tier and the request say, an accepted duration is at most 24 hours."""
        rule = TierRule(TierMode.ALLOWED, max_duration=tier_max - tier_max % timedelta(seconds=1))

        try:
            duration = effective_duration(asked, rule=rule, config=BreakglassConfig())
        except GrantRejected:
            return

        assert duration <= HARD_MAX_DURATION
        assert duration <= rule.max_duration


class TestDecideOutcome:
    def test_allowed_tier_grants_at_once(self) -> None:
        """Under the limit, an `allowed` tier grants immediately."""
        outcome = decide_outcome(ALLOWED, self_granted_in_window=2, requests_in_window=0, config=BreakglassConfig())

        assert GrantStatus.ACTIVE is outcome.status

    def test_approval_tier_waits_for_an_approver(self) -> None:
        """An `approval` tier makes the request pending."""
        outcome = decide_outcome(APPROVAL, self_granted_in_window=0, requests_in_window=0, config=BreakglassConfig())

        assert (GrantStatus.PENDING, frozenset({"tier-approval"})) == (outcome.status, outcome.because)

    def test_never_tier_rejects(self) -> None:
        """A `never` tier rejects every request."""
        outcome = decide_outcome(NEVER, self_granted_in_window=0, requests_in_window=0, config=BreakglassConfig())

        assert (GrantStatus.REJECTED, frozenset({"tier-never"})) == (outcome.status, outcome.because)

    def test_beyond_the_self_grant_limit_needs_approval_and_is_flagged(self) -> None:
        """With N self-grants in the window already, the next request waits and is flagged."""
        config = BreakglassConfig(self_grant_limit=3)

        outcome = decide_outcome(ALLOWED, self_granted_in_window=3, requests_in_window=3, config=config)

        assert GrantStatus.PENDING is outcome.status
        assert frozenset({"self-grant-limit"}) == outcome.because
        assert True is outcome.flagged

    def test_repeat_requests_are_flagged(self) -> None:
        """A user with the threshold number of recent requests is flagged even when granted."""
        config = BreakglassConfig(repeat_user_threshold=2)

        outcome = decide_outcome(ALLOWED, self_granted_in_window=1, requests_in_window=2, config=config)

        assert (GrantStatus.ACTIVE, True) == (outcome.status, outcome.flagged)


class TestCountsInWindow:
    def test_grant_exactly_one_window_old_has_dropped_out(self) -> None:
        """The rolling window is (now - window, now]: a grant started exactly a window ago no longer counts."""
        window = timedelta(days=7)
        old = make_grant(requested_at=NOW - window, starts_at=NOW - window)
        recent = make_grant(requested_at=NOW - window + timedelta(microseconds=1),
                            starts_at=NOW - window + timedelta(microseconds=1))

        counts = counts_in_window([old, recent], now=NOW, window=window)

        assert (1, 1) == counts

    def test_approved_grants_do_not_count_as_self_granted(self) -> None:
        """Only grants given without an approver count towards the self-grant limit."""
        approved = make_grant(self_granted=False, approver="bob")

        counts = counts_in_window([approved], now=NOW, window=timedelta(days=7))

        assert (0, 1) == counts


class TestWhoMayAct:
    def test_requester_cannot_approve_own_request(self) -> None:
        """Approver and requester must differ, even for an approver."""
        with pytest.raises(NotAuthorised) as caught:
            check_approver(make_grant(), approver="alice", approver_groups=APPROVERS, config=make_config())

        assert "approver-is-requester" == caught.value.code

    def test_approver_must_be_in_an_approver_group(self) -> None:
        """Someone outside the approver groups cannot approve."""
        with pytest.raises(NotAuthorised) as caught:
            check_approver(make_grant(), approver="bob", approver_groups=frozenset({"eng"}), config=make_config())

        assert "not-an-approver" == caught.value.code
        assert "`sre-leads`" in str(caught.value)

    def test_approver_in_group_passes(self) -> None:
        """Another user in an approver group may approve."""
        check_approver(make_grant(), approver="bob", approver_groups=frozenset({"eng", "sre-leads"}), config=make_config())

    def test_reviewer_cannot_review_own_grant(self) -> None:
        """A reviewer cannot mark their own grant reviewed."""
        with pytest.raises(NotAuthorised) as caught:
            check_reviewer(make_grant(), reviewer="alice", reviewer_groups=REVIEWERS, config=make_config())

        assert "reviewer-is-requester" == caught.value.code

    def test_revoker_needs_approver_or_reviewer_group(self) -> None:
        """Plain users cannot revoke; reviewers can."""
        with pytest.raises(NotAuthorised):
            check_revoker(make_grant(), actor="mallory", actor_groups=frozenset({"eng"}), config=make_config())

        check_revoker(make_grant(), actor="rita", actor_groups=REVIEWERS, config=make_config())


class TestIsActive:
    def test_active_from_the_first_instant(self) -> None:
        """A grant is active at exactly its start."""
        assert True is is_active(make_grant(), now=NOW)

    def test_ends_exactly_at_expiry(self) -> None:
        """A grant is active one microsecond before expiry and not at expiry."""
        grant = make_grant()

        before = is_active(grant, now=NOW + timedelta(hours=1) - timedelta(microseconds=1))
        at = is_active(grant, now=NOW + timedelta(hours=1))

        assert (True, False) == (before, at)

    @pytest.mark.parametrize("status", [GrantStatus.REVOKED, GrantStatus.ENDED, GrantStatus.PENDING])
    def test_only_active_status_counts(self, status: GrantStatus) -> None:
        """Revoked, ended or pending grants are never active, whatever the time."""
        assert False is is_active(make_grant(status=status), now=NOW)

    @given(st.timedeltas(min_value=timedelta(hours=-3), max_value=timedelta(hours=3)))
    def test_matches_half_open_interval(self, offset: timedelta) -> None:
        """An active grant is active exactly when starts_at <= now < expires_at."""
        grant = make_grant()
        now = NOW + offset

        active = is_active(grant, now=now)

        assert (NOW <= now < NOW + timedelta(hours=1)) == active


class TestStatusAt:
    def test_active_past_expiry_reads_as_expired(self) -> None:
        """An expiry not yet written to the log is still reported as expired."""
        status = status_at(make_grant(), now=NOW + timedelta(hours=1), pending_ttl=timedelta(hours=24))

        assert GrantStatus.EXPIRED is status

    def test_pending_past_ttl_reads_as_expired(self) -> None:
        """A request nobody decided on within the TTL reads as expired."""
        pending = make_grant(status=GrantStatus.PENDING, starts_at=None, expires_at=None)

        status = status_at(pending, now=NOW + timedelta(hours=24), pending_ttl=timedelta(hours=24))

        assert GrantStatus.EXPIRED is status
