"""The `break_glass:` settings section, tier-rule mapping and route-set checks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from breakglass import TierMode
from gateway.config.breakglass import BreakglassSettings, route_set_problems, tier_rule
from tests.gateway.web.breakglass.support import make_settings, policies


class TestSettings:
    def test_defaults_map_to_the_package_config(self) -> None:
        """Default settings give 20 characters, 3 self-grants per 7 days, 24 h ceiling."""
        config = BreakglassSettings().to_config()

        assert (20, 3, timedelta(days=7), timedelta(hours=24)) == (
            config.min_reason_length, config.self_grant_limit, config.self_grant_window, config.max_duration)

    @pytest.mark.parametrize(("raw", "message"), [
        ({"max_duration_s": 90000}, "less than or equal to 86400"),
        ({"route_sets": {"Bad Name": ["wiki"]}}, "route set `Bad Name` is not a name"),
        ({"route_sets": {"empty": []}}, "lists no routes"),
        ({"default_duration_s": 7200, "max_duration_s": 3600}, "above max_duration_s"),
        ({"allowed_origins": ["https://a.example/path"]}, "is not an origin"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ])
    def test_bad_values_are_refused(self, raw: dict[str, object], message: str) -> None:
        """Each bad value is refused with a message saying what is wrong."""
        with pytest.raises(ValidationError) as info:
            BreakglassSettings.model_validate(raw)

        assert message in str(info.value)

    def test_route_sets_must_name_configured_routes(self) -> None:
        """A route set naming an unknown route is a problem at its location."""
        settings = make_settings(route_sets={"ops": ["wiki", "nope"]})

        problems = route_set_problems(settings, ["wiki", "chat"])

        assert ["breakglass.route_sets.ops"] == [p.path for p in problems]
        assert "`nope`" in problems[0].message


class TestTierRule:
    def test_policy_tiers_map_to_rules(self) -> None:
        """low → allowed 8 h (default 1 h), medium → approval 4 h, high → never."""
        settings = make_settings()

        rules = {name: tier_rule(policies().tier(name), settings) for name in ("low", "medium", "high")}  # type: ignore[arg-type]

        assert (TierMode.ALLOWED, timedelta(hours=8), timedelta(hours=1)) == (
            rules["low"].mode, rules["low"].max_duration, rules["low"].default_duration)
        assert (TierMode.APPROVAL, timedelta(hours=4)) == (rules["medium"].mode, rules["medium"].max_duration)
        assert TierMode.NEVER is rules["high"].mode
