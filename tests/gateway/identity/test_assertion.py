"""Gatehouse's upstream assertion: verified with the published JWKS over HTTP, and key rotation."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.identity import (
    Identity, KeyFileError, PostureSummary, UnsafeHeaderValue, encode_groups, identity_headers, load_signing_keys,
)
from tests.conftest import NOW
from tests.gateway.identity.support import build_app, jwt_section, mint, private_pem, public_pem, rsa_key, settings


def new_key(tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.pem"
    path.write_bytes(private_pem(ec.generate_private_key(ec.SECP256R1())))
    return path


async def published(client) -> jwt.PyJWKSet:  # type: ignore[no-untyped-def]
    resp = await client.get("/.well-known/gatehouse/jwks.json")
    assert 200 == resp.status
    return jwt.PyJWKSet.from_dict(await resp.json())


def verify_with(jwks: jwt.PyJWKSet, token: str) -> dict[str, object]:
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["ES256"], issuer="gatehouse", audience="upstreams",
                      options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})


class TestUpstreamAssertion:
    async def test_assertion_verifies_with_published_jwks(self, aiohttp_client, jwks_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """The X-Gatehouse-Jwt-Assertion verifies with the keys served at /.well-known/gatehouse/jwks.json."""
        new_key(tmp_path, "a")
        built = build_app(settings({
            "jwt": jwt_section(jwks_url=jwks_server.url),
            "assertion": {"key_files": ["a.pem"], "audience": "upstreams"},
        }, base_dir=tmp_path))
        built.posture = PostureSummary("high", "allow", 120, ("os-outdated",), break_glass=True)
        client = await aiohttp_client(built.app)

        body = await (await client.get("/x", headers={"Authorization": f"Bearer {mint(groups=['a,admins'])}"})).json()
        claims = verify_with(await published(client), body["headers"]["X-Gatehouse-Jwt-Assertion"])

        assert ("user-1", "alice@corp.example", ["a,admins"]) == (claims["sub"], claims["email"], claims["groups"])
        assert {"tier": "high", "decision": "allow", "snapshot_age_s": 120, "failed_checks": ["os-outdated"], "break_glass": True} == claims["posture"]
        assert (int(NOW.timestamp()), 300) == (claims["iat"], claims["exp"] - claims["iat"])  # type: ignore[operator]
        assert None is claims["device"]

    async def test_rotation_keeps_the_old_key_published(self, aiohttp_client, jwks_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """After rotation the new key signs, and assertions signed by the old key still verify from the JWKS."""
        old, new = new_key(tmp_path, "old"), new_key(tmp_path, "new")
        before = build_app(settings({"jwt": jwt_section(jwks_url=jwks_server.url),
                                     "assertion": {"key_files": [str(old)], "audience": "upstreams"}}))
        after = build_app(settings({"jwt": jwt_section(jwks_url=jwks_server.url),
                                    "assertion": {"key_files": [str(new), str(old)], "audience": "upstreams"}}))
        bearer = {"Authorization": f"Bearer {mint()}"}
        old_client = await aiohttp_client(before.app)
        old_token = (await (await old_client.get("/x", headers=bearer)).json())["headers"]["X-Gatehouse-Jwt-Assertion"]
        new_client = await aiohttp_client(after.app)

        new_token = (await (await new_client.get("/x", headers=bearer)).json())["headers"]["X-Gatehouse-Jwt-Assertion"]
        jwks = await published(new_client)

        assert 2 == len(jwks.keys)
        assert jwt.get_unverified_header(old_token)["kid"] != jwt.get_unverified_header(new_token)["kid"]
        assert "user-1" == verify_with(jwks, old_token)["sub"]
        assert "user-1" == verify_with(jwks, new_token)["sub"]

    def test_retired_key_may_be_public_only(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """Later key files may hold only the public key (published, never signing)."""
        signing = new_key(tmp_path, "s")
        retired = tmp_path / "retired.pub.pem"
        retired.write_bytes(public_pem(ec.generate_private_key(ec.SECP256R1())))

        keys = load_signing_keys((signing, retired))

        assert 2 == len(keys.published)

    def test_first_key_must_be_private_ec_p256(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """A public-only first key or an RSA key is refused with a message naming the file."""
        pub = tmp_path / "pub.pem"
        pub.write_bytes(public_pem(ec.generate_private_key(ec.SECP256R1())))
        rsa_file = tmp_path / "rsa.pem"
        rsa_file.write_bytes(private_pem(rsa_key()))

        with pytest.raises(KeyFileError, match="pub.pem"):
            load_signing_keys((pub,))
        with pytest.raises(KeyFileError, match="EC P-256"):
            load_signing_keys((rsa_file,))

    async def test_no_assertion_keys_publish_an_empty_set(self, aiohttp_client, jwks_server) -> None:  # type: ignore[no-untyped-def]
        """Without assertion keys the JWKS endpoint serves an empty key set and no assertion is sent."""
        client = await aiohttp_client(build_app(settings({"jwt": jwt_section(jwks_url=jwks_server.url)})).app)

        resp = await client.get("/.well-known/gatehouse/jwks.json")

        assert {"keys": []} == await resp.json()


class TestIdentityHeaders:
    IDENTITY = Identity("user-1", "alice+tag@corp.example", ("a,admins", "b%2C", "ü"), "https://idp", "bearer", NOW)

    def test_groups_cannot_forge_each_other(self) -> None:
        """Commas and percent signs inside a group are encoded, so splitting on `,` gives back the exact groups."""
        encoded = encode_groups(self.IDENTITY.groups)

        assert ["a,admins", "b%2C", "ü"] == [unquote(item) for item in encoded.split(",")]

    def test_email_keeps_readable_characters(self) -> None:
        """`@`, `+` and `.` stay readable in X-Gatehouse-Email."""
        assert "alice+tag@corp.example" == identity_headers(self.IDENTITY, None)["X-Gatehouse-Email"]

    @pytest.mark.parametrize("bad", ["a\r\nX-Evil: 1", "nul\x00", "tab\t", ""])
    def test_control_characters_never_become_headers(self, bad: str) -> None:
        """A value with CR, LF, NUL or other controls is refused rather than emitted."""
        identity = Identity(bad, "a@b", (), "https://idp", "bearer", NOW)

        with pytest.raises(UnsafeHeaderValue):
            identity_headers(identity, None)


class TestAssertionReuse:
    async def _resolver(self, tmp_path: Path):  # type: ignore[no-untyped-def]
        import aiohttp

        from gateway.identity.resolver import IdentityResolver

        new_key(tmp_path, "a")
        identity_settings = settings({"jwt": jwt_section(jwks_url="http://127.0.0.1:9/jwks.json"), "assertion": {"key_files": ["a.pem"], "audience": "upstreams"}}, base_dir=tmp_path)
        session = aiohttp.ClientSession()
        return IdentityResolver(identity_settings, session=session, clock=lambda: NOW), session

    async def test_same_decision_reuses_the_assertion_for_half_its_lifetime(self, tmp_path: Path) -> None:
        """One user, device and decision get the same signed assertion until half its lifetime has passed."""
        from datetime import timedelta

        resolver, session = await self._resolver(tmp_path)
        user = Identity("user-1", "alice@corp.example", ("staff",), "https://idp", "bearer", NOW + timedelta(hours=1))
        posture = PostureSummary("high", "allow", 120, (), break_glass=False)

        first = resolver.upstream_headers(user, None, posture, now=NOW)["X-Gatehouse-Jwt-Assertion"]
        later = resolver.upstream_headers(user, None, PostureSummary("high", "allow", 200, ()), now=NOW + timedelta(seconds=149))["X-Gatehouse-Jwt-Assertion"]
        renewed = resolver.upstream_headers(user, None, posture, now=NOW + timedelta(seconds=150))["X-Gatehouse-Jwt-Assertion"]
        await session.close()

        assert first == later
        assert renewed != first

    async def test_another_decision_gets_its_own_assertion(self, tmp_path: Path) -> None:
        """A different verdict, failing check or user is never answered with a reused assertion."""
        from datetime import timedelta

        resolver, session = await self._resolver(tmp_path)
        user = Identity("user-1", "alice@corp.example", ("staff",), "https://idp", "bearer", NOW + timedelta(hours=1))
        other = Identity("user-2", "bob@corp.example", ("staff",), "https://idp", "bearer", NOW + timedelta(hours=1))
        allow = PostureSummary("high", "allow", 120, ())

        tokens = {
            resolver.upstream_headers(user, None, allow, now=NOW)["X-Gatehouse-Jwt-Assertion"],
            resolver.upstream_headers(user, None, PostureSummary("high", "would-deny", 120, ("disk",)), now=NOW)["X-Gatehouse-Jwt-Assertion"],
            resolver.upstream_headers(user, None, PostureSummary("high", "break-glass", 120, ("disk",), break_glass=True), now=NOW)["X-Gatehouse-Jwt-Assertion"],
            resolver.upstream_headers(other, None, allow, now=NOW)["X-Gatehouse-Jwt-Assertion"],
        }
        await session.close()

        assert 4 == len(tokens)
