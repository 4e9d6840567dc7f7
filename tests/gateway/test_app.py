"""The application: reserved prefixes, liveness, readiness, 404s, mounting reserved routes."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.gate.admission import OpenGate
from gateway.app import create_app
from gateway.keys import READINESS
from gateway.metrics import Metrics
from tests.gateway.conftest import MakeGateway, Recorder, make_settings, raw_exchange
from tests.serving import GatehouseTestServer


class TestReserved:
    @pytest.mark.parametrize("target", [
        "/.gatehouse/", "/.gatehouse", "/.gatehouse/anything", "/.well-known/gatehouse/jwks.json",
        "//.gatehouse/x", "/a/../.gatehouse/x", "/%2Egatehouse/x", "/.gatehouse/healthz;x",
    ])
    async def test_reserved_prefixes_are_never_proxied(self, target: str, make_gateway: MakeGateway, upstream_url: str, recorder: Recorder) -> None:
        """Paths under the reserved prefixes on any host never reach an upstream, even with a catch-all route."""
        gw = await make_gateway([{"id": "all", "upstream": upstream_url, "tier": "low"}])

        status, _, _ = await raw_exchange(gw.port, f"POST {target} HTTP/1.1\r\nHost: any.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())

        assert status in (400, 404, 405)
        assert [] == recorder.seen

    async def test_routes_mounted_after_create_app_win_over_the_catch_all(self, metrics: Metrics, upstream_url: str, recorder: Recorder) -> None:
        """Another part of the gateway can add a reserved route after create_app; it is served, not proxied."""
        app = create_app(make_settings([{"id": "all", "upstream": upstream_url, "tier": "low"}]), metrics=metrics, gate=OpenGate())

        async def callback(request: web.Request) -> web.Response:
            return web.Response(text="callback")

        app.router.add_get("/.gatehouse/callback", callback)
        async with TestClient(GatehouseTestServer(app)) as client:
            resp = await client.get("/.gatehouse/callback")
            text = await resp.text()

        assert (200, "callback") == (resp.status, text)
        assert [] == recorder.seen


class TestHealth:
    async def test_healthz_is_200(self, make_gateway: MakeGateway) -> None:
        """Liveness answers 200 while the loop runs."""
        gw = await make_gateway([])

        resp = await gw.get("/.gatehouse/healthz")

        assert 200 == resp.status

    async def test_readyz_lists_what_is_not_ready(self, metrics: Metrics) -> None:
        """Readiness is 503 with the failing checks named until every check passes."""
        app = create_app(make_settings([]), metrics=metrics, gate=OpenGate())
        state = {"store": False}

        async def policy_loaded() -> bool:
            return True

        def broken() -> bool:
            raise RuntimeError("x")

        app[READINESS].add("store", lambda: state["store"])
        app[READINESS].add("policy", policy_loaded)
        app[READINESS].add("broken", broken)
        async with TestClient(GatehouseTestServer(app)) as client:
            not_ready = await client.get("/.gatehouse/readyz")
            not_ready_body = await not_ready.json()
            state["store"] = True
            app[READINESS].remove("broken")
            ready = await client.get("/.gatehouse/readyz")
            ready_body = await ready.json()

        assert 503 == not_ready.status
        assert ["broken", "store"] == not_ready_body["not_ready"]
        assert 200 == ready.status
        assert {"config": True, "store": True, "policy": True} == ready_body["checks"]

    async def test_a_degradable_check_is_reported_without_failing_readiness(self, metrics: Metrics) -> None:
        """A failing degradable check (the store) is listed as degraded; strict readiness counts it."""
        app = create_app(make_settings([]), metrics=metrics, gate=OpenGate())
        app[READINESS].add("store", lambda: False, degrades=True)
        async with TestClient(GatehouseTestServer(app)) as client:
            lenient = await client.get("/.gatehouse/readyz")
            lenient_body = await lenient.json()
            strict = await client.get("/.gatehouse/readyz?strict=1")
            strict_body = await strict.json()

        assert (200, [], ["store"]) == (lenient.status, lenient_body["not_ready"], lenient_body["degraded"])
        assert (503, ["store"], []) == (strict.status, strict_body["not_ready"], strict_body["degraded"])


class TestNotFound:
    async def test_no_route_is_404_json_for_api_clients(self, make_gateway: MakeGateway) -> None:
        """Without a matching route Gatehouse answers 404 itself, as problem+json for API clients."""
        gw = await make_gateway([])

        resp = await gw.get("/x", headers={"Accept": "application/json"})

        assert 404 == resp.status
        assert "no-route" == (await resp.json(content_type=None))["code"]

    async def test_no_route_is_404_html_for_browsers(self, make_gateway: MakeGateway) -> None:
        """Browsers get an HTML page with the request id."""
        gw = await make_gateway([])

        resp = await gw.get("/x", headers={"Accept": "text/html"})
        text = await resp.text()

        assert 404 == resp.status
        assert "text/html" == resp.content_type
        assert resp.headers["X-Request-Id"] in text
