"""IdentityResolver over real sockets: each token source, attacks end to end, 401 rendering, header stripping."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest

from tests.gateway.identity.conftest import JwksServer, RecordingServer
from tests.gateway.identity.support import build_app, jwt_section, mint, public_jwk, rsa_key, settings

SOURCES = [{"kind": "bearer"}, {"kind": "header", "name": "Cf-Access-Jwt-Assertion"}, {"kind": "cookie", "name": "CF_Authorization"}]


@pytest.fixture
def app_for(jwks_server: JwksServer):  # type: ignore[no-untyped-def]
    def make(**overrides: object):  # type: ignore[no-untyped-def]
        raw = {"sources": SOURCES, "jwt": jwt_section(jwks_url=jwks_server.url)}
        raw.update(overrides)
        return build_app(settings(raw))
    return make


class TestSources:
    async def test_bearer(self, aiohttp_client, app_for) -> None:  # type: ignore[no-untyped-def]
        """A valid token in `Authorization: Bearer` authenticates the user."""
        client = await aiohttp_client(app_for().app)

        resp = await client.get("/x", headers={"Authorization": f"Bearer {mint()}"})

        assert 200 == resp.status
        assert ("user-1", "bearer") == ((body := await resp.json())["subject"], body["source"])

    async def test_configured_header(self, aiohttp_client, app_for) -> None:  # type: ignore[no-untyped-def]
        """A valid token in the configured SSO header authenticates the user."""
        client = await aiohttp_client(app_for().app)

        resp = await client.get("/x", headers={"Cf-Access-Jwt-Assertion": mint()})

        assert "header" == (await resp.json())["source"]

    async def test_configured_cookie(self, aiohttp_client, app_for) -> None:  # type: ignore[no-untyped-def]
        """A valid token in the configured cookie authenticates the user."""
        client = await aiohttp_client(app_for().app)

        resp = await client.get("/x", headers={"Cookie": f"CF_Authorization={mint()}"})

        assert "cookie" == (await resp.json())["source"]

    async def test_first_present_source_decides(self, aiohttp_client, app_for) -> None:  # type: ignore[no-untyped-def]
        """An invalid bearer token is not rescued by a valid cookie."""
        client = await aiohttp_client(app_for().app)

        resp = await client.get("/x", headers={"Authorization": "Bearer nope", "Cookie": f"CF_Authorization={mint()}"})

        assert 401 == resp.status

    async def test_unconfigured_source_is_ignored(self, aiohttp_client, app_for) -> None:  # type: ignore[no-untyped-def]
        """A token in a header that is not configured is not looked at."""
        client = await aiohttp_client(app_for(sources=[{"kind": "bearer"}]).app)

        resp = await client.get("/x", headers={"Cf-Access-Jwt-Assertion": mint()})

        assert ("missing", 'Bearer realm="gatehouse"') == ((await resp.json())["reason"], resp.headers["WWW-Authenticate"])

    async def test_token_is_verified_once_per_session(self, aiohttp_client, app_for, jwks_server: JwksServer) -> None:  # type: ignore[no-untyped-def]
        """Repeated requests with the same token are served from the verified-token cache."""
        built = app_for()
        client = await aiohttp_client(built.app)
        headers = {"Authorization": f"Bearer {mint()}"}
        await client.get("/x", headers=headers)
        jwks_server.keys = []  # a cache miss would now fail

        resp = await client.get("/x", headers=headers)

        assert 200 == resp.status


class TestRejections:
    @pytest.mark.parametrize(("token", "public"), [
        (lambda: mint(exp=1), "expired"),
        (lambda: mint(aud="other"), "wrong-audience"),
        (lambda: mint(iss="https://evil.example"), "invalid"),
        (lambda: mint(rsa_key("attacker")), "invalid"),
    ])
    async def test_api_clients_get_problem_json_401(self, aiohttp_client, app_for, token, public: str) -> None:  # type: ignore[no-untyped-def]
        """API clients get a problem+json 401, `WWW-Authenticate: Bearer error="invalid_token"` and a non-leaky reason."""
        client = await aiohttp_client(app_for().app)

        resp = await client.get("/x", headers={"Authorization": f"Bearer {token()}", "Accept": "application/json"})
        doc = await resp.json(content_type="application/problem+json")

        assert (401, "unauthenticated", public) == (resp.status, doc["code"], doc["reason"])
        assert f'Bearer realm="gatehouse", error="invalid_token", error_description="{public}"' == resp.headers["WWW-Authenticate"]

    async def test_oversized_token_is_refused(self, aiohttp_client, jwks_server: JwksServer) -> None:  # type: ignore[no-untyped-def]
        """A correctly signed token above max_token_bytes is refused as too large (shown as invalid)."""
        built = build_app(settings({"jwt": jwt_section(jwks_url=jwks_server.url, max_token_bytes=1024)}))
        client = await aiohttp_client(built.app)

        resp = await client.get("/x", headers={"Authorization": f"Bearer {mint(pad='x' * 2000)}"})

        assert ("invalid", 401) == ((await resp.json())["reason"], resp.status)
        assert 1.0 == built.registry.get_sample_value("gatehouse_auth_failures_total", {"reason": "too-large"})
        assert 0 == jwks_server.hits

    async def test_failures_are_counted_by_reason(self, aiohttp_client, app_for) -> None:  # type: ignore[no-untyped-def]
        """Each failure increments gatehouse_auth_failures_total{reason}."""
        built = app_for()
        client = await aiohttp_client(built.app)

        await client.get("/x", headers={"Authorization": f"Bearer {mint(exp=1)}"})

        assert 1.0 == built.registry.get_sample_value("gatehouse_auth_failures_total", {"reason": "expired"})

    @pytest.mark.parametrize("header", ["jku", "x5u"])
    async def test_token_supplied_key_url_is_never_fetched(  # type: ignore[no-untyped-def]
        self, aiohttp_client, app_for, recording_server: RecordingServer, header: str
    ) -> None:
        """A token pointing `jku`/`x5u` at another server is refused and that server sees no request."""
        attacker = rsa_key("attacker")
        recording_server.served = {"keys": [public_jwk(attacker, "evil")]}
        client = await aiohttp_client(app_for().app)
        raw = mint(attacker, kid="evil", headers={header: f"{recording_server.base}/jwks"})

        resp = await client.get("/x", headers={"Authorization": f"Bearer {raw}"})

        assert 401 == resp.status
        assert [] == recording_server.hits

    async def test_kid_path_traversal_is_refused(self, aiohttp_client, app_for) -> None:  # type: ignore[no-untyped-def]
        """A path-like kid matches no key; the token is refused."""
        client = await aiohttp_client(app_for().app)

        resp = await client.get("/x", headers={"Authorization": f"Bearer {mint(kid='../../etc/passwd')}"})

        assert ("invalid", 401) == ((await resp.json())["reason"], resp.status)

    async def test_two_authorization_headers_are_refused(self, aiohttp_client, app_for) -> None:  # type: ignore[no-untyped-def]
        """Ambiguous credentials are refused, never guessed at."""
        client = await aiohttp_client(app_for().app)

        resp = await client.get("/x", headers=[("Authorization", f"Bearer {mint()}"), ("Authorization", "Bearer x")])

        assert 401 == resp.status

    async def test_jwks_unreachable_is_503(self, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
        """When keys were never fetched, the answer is 503, not a misleading 401."""
        built = build_app(settings({"jwt": jwt_section(jwks_url="http://127.0.0.1:9/jwks", jwks_timeout_s=2)}))
        client = await aiohttp_client(built.app)

        resp = await client.get("/x", headers={"Authorization": f"Bearer {mint()}"})

        assert 503 == resp.status


class TestDeviceFromClaim:
    async def test_each_token_names_its_own_device_on_every_request(self, aiohttp_client, jwks_server: JwksServer) -> None:  # type: ignore[no-untyped-def]
        """With the token's claim the only device source, each request gets the serial its own token names; an unusable one, none."""
        built = build_app(settings({
            "sources": [{"kind": "bearer"}], "jwt": jwt_section(jwks_url=jwks_server.url, claims={"device_serial": "device_serial"}),
            "device": {"sources": ["claim"]},
        }))
        client = await aiohttp_client(built.app)
        tokens = {
            "a": mint(sub="user-a", device_serial="C02AAAA0001"), "b": mint(sub="user-b", device_serial="C02BBBB0002"),
            "bad": mint(sub="user-c", device_serial="not a serial!"), "none": mint(sub="user-d"),
        }

        seen = []
        for name in ("a", "b", "a", "bad", "none", "bad", "b"):
            resp = await client.get("/x", headers={"Authorization": f"Bearer {tokens[name]}"})
            seen.append((await resp.json())["device"])

        a, b = {"serial": "C02AAAA0001", "source": "claim"}, {"serial": "C02BBBB0002", "source": "claim"}
        assert [a, b, a, None, None, None, b] == seen


class TestUpstreamHeaders:
    async def test_identity_headers_encode_groups(self, aiohttp_client, app_for) -> None:  # type: ignore[no-untyped-def]
        """A group named `a,admins` stays one group in X-Gatehouse-Groups."""
        client = await aiohttp_client(app_for().app)

        resp = await client.get("/x", headers={"Authorization": f"Bearer {mint(groups=['a,admins', 'staff'])}"})
        headers = (await resp.json())["headers"]

        assert ["a,admins", "staff"] == [unquote(g) for g in headers["X-Gatehouse-Groups"].split(",")]
        assert ("user-1", "alice@corp.example") == (headers["X-Gatehouse-User"], headers["X-Gatehouse-Email"])

    async def test_client_sent_gatehouse_headers_are_marked_for_stripping(self, aiohttp_client, app_for) -> None:  # type: ignore[no-untyped-def]
        """Incoming X-Gatehouse-* headers are named by should_strip, whatever their case; so is the bearer token's header."""
        client = await aiohttp_client(app_for().app)

        resp = await client.get("/x", headers={
            "Authorization": f"Bearer {mint()}", "x-gatehouse-user": "root", "X-GATEHOUSE-Device-Serial": "S1",
            "X-Gatehouse-Jwt-Assertion": "forged", "X-Other": "kept",
        })

        assert ["Authorization", "X-GATEHOUSE-Device-Serial", "X-Gatehouse-Jwt-Assertion", "x-gatehouse-user"] == (await resp.json())["stripped"]


class TestCredentialsUpstream:
    async def _resolver(self, raw: dict[str, Any]) -> Any:
        import aiohttp

        from gateway.identity.resolver import IdentityResolver

        session = aiohttp.ClientSession()
        return IdentityResolver(settings(raw), session=session, clock=lambda: datetime.now(UTC)), session

    @pytest.mark.parametrize("forward", [False, True])
    async def test_credentials_are_dropped_unless_forwarded_gatehouse_cookies_always(self, forward: bool) -> None:
        """Token header, token cookie: dropped by default, kept with forward_credentials; session and login cookies: always dropped."""
        oidc = {"discovery_url": "https://idp.example/.well-known/openid-configuration", "client_id": "gatehouse",
                "external_url": "https://gatehouse.example", "session_key": {"value": "k" * 40}}
        resolver, session = await self._resolver({
            "sources": [{"kind": "bearer"}, {"kind": "header", "name": "Cf-Access-Jwt-Assertion"}, {"kind": "cookie", "name": "CF_Authorization"}, {"kind": "session"}],
            "jwt": jwt_section(jwks_url="http://127.0.0.1:9/jwks.json"), "oidc": oidc, "forward_credentials": forward,
        })
        await session.close()

        credentials = {"authorization", "cf-access-jwt-assertion"}
        assert (credentials <= resolver.strip_names) is not forward
        assert {"gatehouse_session", "gatehouse_login", "gatehouse_logout"} <= resolver.drop_cookies
        assert ("CF_Authorization" in resolver.drop_cookies) is not forward
