"""What the request path asks of break-glass: the deny page's offer and form token, and noting a grant's use."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from breakglass import EventKind
from gateway.gate.policy_gate import note_use
from gateway.web.breakglass import csrf_token_for, deny_page_offer
from tests.gateway.web.breakglass.support import FailingSink, Harness, as_user, ask, build_app


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


class TestNoteUse:
    async def test_uses_are_counted_and_the_first_is_audited(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """Each request under a grant is counted per route; only the first is written to the log."""
        _, body = await ask(client)
        grant = harness.service.get(body["id"])

        results = [await note_use(harness.app, grant, route, now=harness.clock()) for route in ("wiki", "wiki", "chat")]

        assert [True, True, True] == results
        assert {"wiki": 2, "chat": 1} == dict(harness.service.usage(grant.id))
        assert 1 == [e.kind for e in harness.service.events_for(grant.id)].count(EventKind.FIRST_USE)
        assert 2.0 == harness.count("gatehouse_breakglass_requests_total", route="wiki")

    async def test_unrecorded_first_use_refuses_the_request(self, aiohttp_client: AiohttpClient) -> None:
        """When the first use cannot be written, note_use says no and nothing is counted."""
        sink = FailingSink()
        sink.fail = False
        harness = build_app(sink=sink)
        client = await aiohttp_client(harness.app)
        _, body = await ask(client)
        sink.fail = True

        ok = await note_use(harness.app, harness.service.get(body["id"]), "wiki", now=harness.clock())

        assert False is ok
        assert 0.0 == harness.count("gatehouse_breakglass_requests_total", route="wiki")
