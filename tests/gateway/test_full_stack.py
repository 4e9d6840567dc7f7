"""The whole request path of a full Gatehouse on real sockets: token, device, snapshot, policy, proxy."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.config.settings import parse_settings
from tests.conftest import LogLines
from tests.gateway.fullstack import catch_all_upstream, Keys, MovableClock, gatehouse_config, gatehouse_settings, ingest_headers, mac_item

ALICE = "alice@example.com"


class Upstream:
    """A real upstream that records what it received."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({"path": request.path_qs, **{k.lower(): v for k, v in request.headers.items()}})
        return web.json_response({"upstream": "ok", "path": request.path_qs})


@pytest.fixture(params=["fresh-connections", "kept-connection"])
async def stack(request: pytest.FixtureRequest, aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[tuple[TestClient, Upstream, Keys, MovableClock, CollectorRegistry]]:
    """A full Gatehouse in front of a recording upstream, twice: a new connection per request, and
    one kept connection for every request (the proxy serves each; a request to Gatehouse's own
    endpoints ends its connection, and the client opens the next one)."""
    upstream = Upstream()
    server_url = await catch_all_upstream(aiohttp_server, upstream.handle)
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    registry = CollectorRegistry()
    settings = gatehouse_settings(keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=server_url)
    fresh = request.param == "fresh-connections"
    client = await aiohttp_client(
        create_app(settings, clock=clock, metrics=Metrics(registry)),
        connector=aiohttp.TCPConnector(force_close=fresh),
    )
    yield client, upstream, keys, clock, registry


async def ingest(client: TestClient, *items: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": list(items)}, headers=ingest_headers())
    body = await response.json()
    assert 200 == response.status, body
    return body


def bearer(keys: Keys, clock: MovableClock, device: str | None, user: str = ALICE, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.token(user, device=device, now=clock(), **kw)}", "Accept": "application/json"}


class TestAllow:
    async def test_healthy_device_reaches_the_upstream_with_identity_headers(self, stack: Any) -> None:
        """A verified user on a healthy, fresh device is proxied with verified identity headers."""
        client, upstream, keys, clock, _ = stack
        await ingest(client, mac_item("C02OK", at=clock()))

        response = await client.get("/wiki/page?x=1", headers=bearer(keys, clock, "C02OK"))

        assert 200 == response.status
        seen = upstream.seen[-1]
        assert ("/wiki/page?x=1", "alice@example.com", "C02OK") == (seen["path"], seen["x-gatehouse-email"], seen["x-gatehouse-device-serial"])

    async def test_the_users_token_is_not_forwarded(self, stack: Any) -> None:
        """Upstreams get identity headers and the assertion, not the bearer token they could replay, nor Gatehouse's cookies."""
        client, upstream, keys, clock, _ = stack
        await ingest(client, mac_item("C02OK", at=clock()))

        response = await client.get("/wiki/", headers={**bearer(keys, clock, "C02OK"), "Cookie": "app=1; gatehouse_login=pending"})

        assert 200 == response.status
        assert "authorization" not in upstream.seen[-1]
        assert "app=1" == upstream.seen[-1]["cookie"]

    async def test_upstream_assertion_verifies_with_the_published_keys(self, stack: Any) -> None:
        """The signed assertion upstreams receive verifies against /.well-known/gatehouse/jwks.json."""
        client, upstream, keys, clock, _ = stack
        await ingest(client, mac_item("C02OK", at=clock()))
        await client.get("/wiki/", headers=bearer(keys, clock, "C02OK"))
        jwks = await (await client.get("/.well-known/gatehouse/jwks.json")).json()
        token = upstream.seen[-1]["x-gatehouse-jwt-assertion"]

        header = jwt.get_unverified_header(token)
        key = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == header["kid"])
        claims = jwt.decode(token, key.key, algorithms=["ES256"], options={"verify_aud": False}, leeway=10**9)

        assert ("alice@example.com", "medium", "allow", False) == (
            claims["email"], claims["posture"]["tier"], claims["posture"]["decision"], claims["posture"]["break_glass"],
        )


class TestDeny:
    async def test_outdated_os_gets_problem_json_with_actual_and_required(self, stack: Any) -> None:
        """An old macOS is refused with a problem document naming what was seen and what is needed."""
        client, upstream, keys, clock, _ = stack
        await ingest(client, mac_item("C02OLD", at=clock(), os_version="12.6"))

        response = await client.get("/wiki/", headers=bearer(keys, clock, "C02OLD"))
        body = await response.json()

        assert (403, "checks-failed", "application/problem+json") == (response.status, response.headers["X-Gatehouse-Denied-Reason"], response.content_type)
        assert [] == upstream.seen
        assert any(f["actual"] == "12.6" and f["required"] == ">= 13.0" for f in body["failing"])

    async def test_browser_gets_a_remediation_page(self, stack: Any) -> None:
        """A browser sees an HTML page that says what is wrong and offers to check again."""
        client, _, keys, clock, _ = stack
        await ingest(client, mac_item("C02OLD", at=clock(), os_version="12.6"))
        headers = {**bearer(keys, clock, "C02OLD"), "Accept": "text/html"}

        response = await client.get("/wiki/", headers=headers)
        page = await response.text()

        assert (403, "text/html") == (response.status, response.content_type)
        assert "12.6" in page and "/.gatehouse/recheck" in page

    async def test_no_token_is_401(self, stack: Any) -> None:
        """A request without credentials never reaches policy or upstream."""
        client, upstream, _, _, _ = stack

        response = await client.get("/wiki/", headers={"Accept": "application/json"})

        assert (401, []) == (response.status, upstream.seen)
        assert "Bearer" in response.headers["WWW-Authenticate"]

    async def test_unknown_device_is_denied(self, stack: Any) -> None:
        """A token without a device claim is decided as an unknown device."""
        client, _, keys, clock, _ = stack

        response = await client.get("/public/", headers=bearer(keys, clock, None))

        assert (403, "device-unknown") == (response.status, response.headers["X-Gatehouse-Denied-Reason"])

    async def test_forged_serial_headers_reach_neither_policy_nor_upstream(self, stack: Any) -> None:
        """A serial in a plain header proves nothing: the healthy device's serial is not borrowed."""
        client, upstream, keys, clock, _ = stack
        await ingest(client, mac_item("C02OK", at=clock()))
        headers = {**bearer(keys, clock, None), "X-Device-Serial": "C02OK", "X-Gatehouse-Device-Serial": "C02OK"}

        denied = await client.get("/public/", headers=headers)

        assert (403, "device-unknown", []) == (denied.status, denied.headers["X-Gatehouse-Denied-Reason"], upstream.seen)

    async def test_owner_binding_refuses_a_colleagues_device(self, stack: Any) -> None:
        """On a route requiring ownership, bob cannot use alice's healthy serial."""
        client, upstream, keys, clock, _ = stack
        await ingest(client, mac_item("C02OK", at=clock()))

        response = await client.get("/owned/", headers=bearer(keys, clock, "C02OK", user="bob@example.com"))

        assert (403, "device-not-owned", []) == (response.status, response.headers["X-Gatehouse-Denied-Reason"], upstream.seen)

    async def test_stale_snapshot_loses_access_at_the_tier_boundary(self, stack: Any) -> None:
        """The high tier accepts 15 minutes of age: one second past it, access is gone."""
        client, _, keys, clock, _ = stack
        await ingest(client, mac_item("C02OK", at=clock()))
        before = await client.get("/admin/", headers=bearer(keys, clock, "C02OK"))

        clock.advance(timedelta(minutes=15, seconds=1))
        after = await client.get("/admin/", headers=bearer(keys, clock, "C02OK"))

        assert (200, 403, "snapshot-stale") == (before.status, after.status, after.headers["X-Gatehouse-Denied-Reason"])


class TestMonitorAndGrace:
    async def test_monitor_route_proxies_and_counts_would_deny(self, stack: Any) -> None:
        """A monitor-mode route lets a failing device through and counts the would-deny."""
        client, upstream, keys, clock, registry = stack
        await ingest(client, mac_item("C02OLD", at=clock(), os_version="12.6"))

        response = await client.get("/shadow/", headers=bearer(keys, clock, "C02OLD"))

        assert (200, "/shadow/") == (response.status, upstream.seen[-1]["path"])
        assert 1.0 == registry.get_sample_value("gatehouse_would_deny_total", {"route": "shadow", "reason": "checks-failed"})

    async def test_grace_period_blocks_exactly_after_its_deadline(self, stack: Any) -> None:
        """A firewall turned off has 72 h of grace, counted from the first failing snapshot."""
        client, _, keys, clock, _ = stack
        first_failure = clock()
        await ingest(client, mac_item("C02FW", at=first_failure, firewall_enabled=False))
        during = await client.get("/wiki/", headers=bearer(keys, clock, "C02FW"))

        clock.now = first_failure + timedelta(hours=72) - timedelta(seconds=1)
        await ingest(client, mac_item("C02FW", at=clock(), firewall_enabled=False))
        last_second = await client.get("/wiki/", headers=bearer(keys, clock, "C02FW"))
        clock.advance(timedelta(seconds=1))
        past = await client.get("/wiki/", headers=bearer(keys, clock, "C02FW"))

        assert (200, 200, 403) == (during.status, last_second.status, past.status)


class TestCheckAgain:
    async def test_fixed_device_regains_access_through_check_again(self, stack: Any) -> None:
        """After a fixed snapshot arrives, "check again" sends the user on to the page they wanted."""
        client, upstream, keys, clock, _ = stack
        await ingest(client, mac_item("C02FIX", at=clock(), disk_encrypted=False))
        headers = {**bearer(keys, clock, "C02FIX"), "Accept": "text/html"}
        page = await (await client.get("/wiki/doc?id=7", headers=headers)).text()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        clock.advance(timedelta(seconds=30))
        await ingest(client, mac_item("C02FIX", at=clock()))

        response = await client.post(
            "/.gatehouse/recheck", data={"return_to": "/wiki/doc?id=7", "csrf_token": token},
            headers={**headers, "Origin": str(client.make_url("")).rstrip("/")}, allow_redirects=False,
        )

        assert (303, "/wiki/doc?id=7") == (response.status, response.headers["Location"])

    async def test_check_again_without_a_token_is_refused(self, stack: Any) -> None:
        """The check-again form is CSRF protected."""
        client, _, keys, clock, _ = stack

        response = await client.post("/.gatehouse/recheck", data={"return_to": "/wiki/"}, headers=bearer(keys, clock, "C02FIX"))

        assert 403 == response.status


class TestBreakglass:
    async def test_grant_records_the_devices_failing_checks_and_lets_it_through(self, log_lines: LogLines, stack: Any) -> None:
        """A break-glass grant records what failed at request time, and the denied route then opens; its log line names the grant."""
        client, upstream, keys, clock, registry = stack
        await ingest(client, mac_item("C02OLD", at=clock(), os_version="12.6"))
        headers = {**bearer(keys, clock, "C02OLD"), "X-Gatehouse-Client": "test"}
        denied = await client.get("/public/", headers=headers)

        response = await client.post("/.gatehouse/api/v1/break-glass", json={"route": "public", "reason": "paged for INC-1, update downloading", "duration_s": 1800}, headers=headers)
        grant = await response.json()
        allowed = await client.get("/public/", headers=headers)

        posture = jwt.decode(upstream.seen[-1]["x-gatehouse-jwt-assertion"], options={"verify_signature": False})["posture"]

        assert (403, 201, 200) == (denied.status, response.status, allowed.status)
        assert "active" == grant["status"]
        assert ["os_supported"] == [c["name"] for c in grant["failing_checks"]]
        assert 1.0 == registry.get_sample_value("gatehouse_breakglass_requests_total", {"route": "public"})
        assert (True, "break-glass") == (posture["break_glass"], posture["decision"])
        line = [e for e in log_lines.events("request.completed") if e["path"] == "/public/"][-1]
        assert ("break-glass", True, grant["id"], 200) == (line["decision"], line["break_glass"], line["grant_id"], line["status"])


async def test_forward_credentials_sends_the_token_on(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> None:
    """With `identity.forward_credentials: true` the bearer token reaches the upstream as sent."""
    upstream = Upstream()
    server_url = await catch_all_upstream(aiohttp_server, upstream.handle)
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    raw = gatehouse_config(keys, store=f"sqlite:///{tmp_path}/g.db", upstream=server_url)
    raw["identity"]["forward_credentials"] = True
    client = await aiohttp_client(create_app(parse_settings(raw, source="t.yaml", base_dir=keys.dir, environ={}), clock=clock))
    await ingest(client, mac_item("C02OK", at=clock()))
    headers = bearer(keys, clock, "C02OK")

    response = await client.get("/wiki/", headers=headers)

    assert 200 == response.status
    assert headers["Authorization"] == upstream.seen[-1]["authorization"]
