"""Tests for breakglass/model.py: values refuse what the audit log could not encode."""

from __future__ import annotations

from datetime import timedelta

import pytest

from breakglass import BreakglassConfig, Scope, TierMode, TierRule
from tests.breakglass.factories import make_event


class TestScope:
    def test_route_set_needs_routes(self) -> None:
        """A named route set without routes is refused."""
        with pytest.raises(ValueError, match="`billing-admin` has no routes"):
            Scope(tier="high", route_set="billing-admin")

    def test_describe_names_tier_or_set(self) -> None:
        """Scopes describe themselves for pages and logs."""
        assert "tier high" == Scope.for_tier("high").describe()
        assert "routes billing-admin" == Scope.for_route_set("billing-admin", frozenset({"b"}), tier="high").describe()


class TestTierRule:
    def test_default_above_maximum_is_refused(self) -> None:
        """A tier default longer than its maximum is a policy error."""
        with pytest.raises(ValueError, match="default"):
            TierRule(TierMode.ALLOWED, max_duration=timedelta(hours=1), default_duration=timedelta(hours=2))


class TestBreakglassConfig:
    def test_every_problem_is_reported(self) -> None:
        """All bad settings are named at once."""
        with pytest.raises(ValueError) as caught:
            BreakglassConfig(min_reason_length=-1, self_grant_limit=-1, pending_ttl=timedelta(0))

        message = str(caught.value)
        assert "min_reason_length" in message and "self_grant_limit" in message and "pending_ttl" in message

    def test_defaults_match_the_issue(self) -> None:
        """20-character reasons, 24 h ceiling, 3 self-grants per 7 days by default."""
        config = BreakglassConfig()

        assert (20, timedelta(hours=24), 3, timedelta(days=7)) == (
            config.min_reason_length, config.max_duration, config.self_grant_limit, config.self_grant_window
        )


class TestAuditEvent:
    def test_fractional_durations_are_refused(self) -> None:
        """Durations in the log are whole seconds."""
        with pytest.raises(ValueError, match="whole number of seconds"):
            make_event(duration=timedelta(seconds=1, microseconds=5))
