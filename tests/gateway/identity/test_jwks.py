"""JwksCache against a real local JWKS server: TTL, unknown-kid refetch rate limit, one fetch in flight."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import Metrics
from gateway.identity import AuthenticationError, JwksCache, KeyFileError, KeySet, load_key_file
from gateway.identity.jwks import KeysUnavailable
from tests.conftest import NOW
from tests.gateway.identity.conftest import JwksServer
from tests.gateway.identity.support import (
    build_app, ec_key, jwt_section, mint, public_jwk, public_pem, rsa_key, settings, write_jwks,
)


@pytest.fixture
async def http() -> aiohttp.ClientSession:  # type: ignore[misc]
    async with aiohttp.ClientSession() as session:
        yield session


class TestJwksCache:
    async def test_keys_are_cached_for_the_ttl(self, jwks_server: JwksServer, http: aiohttp.ClientSession) -> None:
        """Within the TTL the keys are served from memory; after it they are fetched again."""
        cache = JwksCache(jwks_server.url, http, ttl_s=600)

        await cache.current(now=NOW)
        await cache.current(now=NOW + timedelta(seconds=599))
        hits_within_ttl = jwks_server.hits
        await cache.current(now=NOW + timedelta(seconds=600))

        assert (1, 2) == (hits_within_ttl, jwks_server.hits)

    async def test_unknown_kid_refetch_is_rate_limited(self, jwks_server: JwksServer, http: aiohttp.ClientSession) -> None:
        """A flood of unknown kids triggers at most one refetch per interval."""
        cache = JwksCache(jwks_server.url, http, unknown_kid_interval_s=60)
        await cache.current(now=NOW)

        results = [await cache.refresh_for_unknown_kid(f"bogus-{i}", now=NOW + timedelta(seconds=i)) for i in range(50)]
        later = await cache.refresh_for_unknown_kid("bogus-late", now=NOW + timedelta(seconds=61))

        assert 3 == jwks_server.hits
        assert 1 == sum(r is not None for r in results)
        assert None is not later

    async def test_one_fetch_in_flight(self, jwks_server: JwksServer, http: aiohttp.ClientSession) -> None:
        """Many concurrent first requests share one fetch."""
        cache = JwksCache(jwks_server.url, http)

        await asyncio.gather(*(cache.current(now=NOW) for _ in range(20)))

        assert 1 == jwks_server.hits

    async def test_failed_refresh_keeps_last_good_keys(self, jwks_server: JwksServer, http: aiohttp.ClientSession) -> None:
        """When the IdP is down after the TTL, the last good keys stay in use and the failure is counted."""
        registry = CollectorRegistry()
        cache = JwksCache(jwks_server.url, http, ttl_s=60, metrics=Metrics(registry))
        first = await cache.current(now=NOW)
        jwks_server.failing = True

        again = await cache.current(now=NOW + timedelta(seconds=120))

        assert first == again
        assert 1.0 == registry.get_sample_value("gatehouse_jwks_fetches_total", {"outcome": "error"})

    async def test_idp_down_is_not_hammered(self, jwks_server: JwksServer, http: aiohttp.ClientSession) -> None:
        """With no keys held and the IdP failing, requests within the retry pause do not each fetch."""
        jwks_server.failing = True
        cache = JwksCache(jwks_server.url, http, unknown_kid_interval_s=60)

        for i in range(20):
            with pytest.raises(KeysUnavailable):
                await cache.current(now=NOW + timedelta(seconds=i * 0.25))
        jwks_server.failing = False
        recovered = await cache.current(now=NOW + timedelta(seconds=11))

        assert 2 == jwks_server.hits
        assert recovered.has_kid("k1")

    def test_token_without_kid_tries_the_keys_of_its_family(self) -> None:
        """A token without `kid` is checked against the keys of its algorithm family only."""
        keys = KeySet.from_jwks({"keys": [public_jwk(rsa_key(), "k1"), public_jwk(ec_key(), "e1")]})

        assert (1, 1) == (len(keys.find(None, "RS256")), len(keys.find(None, "ES256")))


class TestUnknownKidEndToEnd:
    async def test_rotated_idp_key_is_picked_up_once(self, aiohttp_client, jwks_server: JwksServer) -> None:  # type: ignore[no-untyped-def]
        """A new IdP key is fetched on first sight; a flood of bogus kids causes no more fetches."""
        built = build_app(settings({"jwt": jwt_section(jwks_url=jwks_server.url, unknown_kid_refetch_interval_s=60)}))
        client = await aiohttp_client(built.app)
        await client.get("/x", headers={"Authorization": f"Bearer {mint()}"})
        jwks_server.keys.append((rsa_key("rotated"), "k2"))

        rotated = await client.get("/x", headers={"Authorization": f"Bearer {mint(rsa_key('rotated'), kid='k2')}"})
        statuses = [
            (await client.get("/x", headers={"Authorization": f"Bearer {mint(rsa_key('attacker'), kid=f'x{i}')}"})).status
            for i in range(30)
        ]

        assert 200 == rotated.status
        assert {401} == set(statuses)
        assert 2 == jwks_server.hits
        assert 2.0 == built.registry.get_sample_value("gatehouse_jwks_fetches_total", {"outcome": "ok"})


class TestKeyFiles:
    def test_jwks_file(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """A local JWKS file yields its keys by kid."""
        keys = load_key_file(write_jwks(tmp_path / "k.json", (rsa_key(), "k1"), (ec_key(), "e1")))

        assert (1, 1) == (len(keys.find("k1", "RS256")), len(keys.find("e1", "ES256")))
        assert () == keys.find("k1", "ES256")

    def test_symmetric_jwk_is_never_loaded(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """An `oct` key in a JWKS is skipped: HMAC keys come only from `hmac_secret`."""
        (tmp_path / "k.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}')

        with pytest.raises(KeyFileError):
            load_key_file(tmp_path / "k.json")

    def test_pem_file_via_settings(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """`key_files` accepts PEM, resolved relative to the config directory."""
        (tmp_path / "idp.pem").write_bytes(public_pem(ec_key()))

        s = settings({"jwt": jwt_section(key_files=["idp.pem"])}, base_dir=tmp_path)

        assert tmp_path / "idp.pem" == s.jwt.key_files[0]  # type: ignore[union-attr]

    async def test_local_file_tokens_need_no_network(self, aiohttp_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """With a local key file a token verifies with no JWKS URL at all."""
        (tmp_path / "idp.pem").write_bytes(public_pem(ec_key()))
        built = build_app(settings({"jwt": jwt_section(key_files=["idp.pem"])}, base_dir=tmp_path))
        client = await aiohttp_client(built.app)

        resp = await client.get("/x", headers={"Authorization": f"Bearer {mint(ec_key(), alg='ES256')}"})

        assert 200 == resp.status


def test_authentication_error_is_a_permission_error() -> None:
    """AuthenticationError is catchable as PermissionError and carries status 401."""
    assert issubclass(AuthenticationError, PermissionError)
