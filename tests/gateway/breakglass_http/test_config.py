"""The `break_glass:` settings section, tier-rule mapping, route-set checks and the deny page's helpers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import ValidationError
from pytest_aiohttp import AiohttpClient

from breakglass import TierMode
from gateway.breakglass_config import BreakglassSettings, route_set_problems, tier_rule
from gateway.breakglass_http import csrf_token_for, deny_page_offer
from tests.gateway.breakglass_http.support import Harness, as_user, build_app, make_settings, policies


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


class TestDenyPageHelpers:
    @pytest.fixture
    async def probe(self, aiohttp_client: AiohttpClient) -> tuple[Harness, TestClient]:  # type: ignore[type-arg]
        async def handle(request: web.Request) -> web.Response:
            offer = deny_page_offer(request, request.query["tier"])
            return web.json_response({
                "token": csrf_token_for(request),
                "offer": None if offer is None else {"approval": offer.needs_approval,
                                                     "max_s": int(offer.durations[-1].total_seconds())},
            })

        harness = build_app(extra_routes=lambda app: app.router.add_get("/probe", handle))
        return harness, await aiohttp_client(harness.app)

    async def test_offer_follows_the_tier_rule(self, probe: tuple[Harness, TestClient]) -> None:  # type: ignore[type-arg]
        """The deny page offers break-glass for allowed and approval tiers, never for `never`."""
        _, client = probe

        offers = {tier: (await (await client.get(f"/probe?tier={tier}", headers=as_user("alice"))).json())["offer"]
                  for tier in ("low", "medium", "high")}

        assert {"low": {"approval": False, "max_s": 8 * 3600}, "medium": {"approval": True, "max_s": 4 * 3600},
                "high": None} == offers

    async def test_no_offer_without_an_identified_device(self, probe: tuple[Harness, TestClient]) -> None:  # type: ignore[type-arg]
        """Without a verified device the form is not offered."""
        _, client = probe

        body = await (await client.get("/probe?tier=low", headers=as_user("alice", None))).json()

        assert None is body["offer"]

    async def test_token_is_for_the_signed_in_user(self, probe: tuple[Harness, TestClient]) -> None:  # type: ignore[type-arg]
        """The token handed to the deny page checks for this user."""
        harness, client = probe

        body = await (await client.get("/probe?tier=low", headers=as_user("alice"))).json()

        harness.context.csrf.check_token(body["token"], "alice", now=harness.clock())
