"""verify_token: every token attack is refused with a closed-set reason, without any network."""

from __future__ import annotations

import base64
import hmac
import hashlib
from datetime import timedelta

import jwt
import orjson
import pytest

from gateway.identity import AuthenticationError, AuthReason, ClaimNames, KeySet, UnknownKeyId, VerifiedTokenCache, verify_token
from gateway.identity.jwks import load_key_file
from tests.conftest import NOW
from tests.gateway.identity.support import (
    AUDIENCE, ISSUER, ec_key, ed_key, mint, public_jwk, public_pem, rsa_key,
)

KEYS = KeySet.from_jwks({"keys": [public_jwk(rsa_key(), "k1"), public_jwk(ec_key(), "e1"), public_jwk(ed_key(), "d1")]})
ALGS = ("RS256", "ES256", "EdDSA")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def verify(raw: str, keys: KeySet = KEYS, **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"now": NOW, "issuers": (ISSUER,), "audiences": (AUDIENCE,), "algorithms": ALGS}
    args.update(kw)
    return verify_token(raw, keys, **args)  # type: ignore[arg-type]


def reason_of(raw: str, keys: KeySet = KEYS, **kw: object) -> AuthReason:
    with pytest.raises(AuthenticationError) as caught:
        verify(raw, keys, **kw)
    return caught.value.reason


class TestAccepts:
    def test_rs256_es256_eddsa_tokens_verify(self) -> None:
        """Tokens signed by each default algorithm's key verify into the same identity fields."""
        tokens = [mint(), mint(ec_key(), alg="ES256", kid="e1"), mint(ed_key(), alg="EdDSA", kid="d1")]

        identities = [verify(t) for t in tokens]

        assert {("user-1", "alice@corp.example", ("staff",))} == {(i.subject, i.email, i.groups) for i in identities}

    def test_expiry_is_the_tokens_exp(self) -> None:
        """The identity expires when the token does."""
        raw = mint(exp=int((NOW + timedelta(minutes=3)).timestamp()))

        identity = verify(raw)

        assert NOW + timedelta(minutes=3) == identity.expires_at

    def test_configured_claim_names_are_used(self) -> None:
        """Subject, email, groups and device serial come from the configured claim names."""
        raw = mint(uid="u-9", mail="bob@corp.example", roles=["a", "b"], hw="SER-1")

        identity = verify(raw, claim_names=ClaimNames("uid", "mail", "roles", "hw"))

        assert ("u-9", "bob@corp.example", ("a", "b"), "SER-1") == (
            identity.subject, identity.email, identity.groups, identity.device_serial_claim)

    def test_local_pem_file_verifies(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        """A PEM public key file is a key set that verifies tokens with any kid."""
        (tmp_path / "idp.pem").write_bytes(public_pem(rsa_key()))

        identity = verify(mint(kid="whatever"), load_key_file(tmp_path / "idp.pem"))

        assert "user-1" == identity.subject


class TestAttacks:
    def test_alg_none_is_refused(self) -> None:
        """An unsigned token (`alg: none`) is refused even if `none` were listed."""
        raw = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "email": "x@y", "exp": 2**40}, None, algorithm="none")

        assert AuthReason.INVALID == reason_of(raw)
        assert AuthReason.INVALID == reason_of(raw, algorithms=("none", "RS256"))

    def test_hs256_signed_with_the_rsa_public_key_is_refused(self) -> None:
        """The key-confusion attack: HS256 with the public PEM as the HMAC secret."""
        header = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}))
        payload = b64(orjson.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "email": "x@y", "exp": 2**40}))
        signature = b64(hmac.new(public_pem(rsa_key()), f"{header}.{payload}".encode(), hashlib.sha256).digest())
        raw = f"{header}.{payload}.{signature}"

        assert AuthReason.INVALID == reason_of(raw)
        assert AuthReason.UNKNOWN_KEY == reason_of(raw, algorithms=("HS256", "RS256"))

    def test_kid_path_traversal_does_not_match_any_key(self) -> None:
        """A path-like kid is only a dictionary key: it matches nothing and names no file."""
        raw = mint(kid="../../../../dev/null")

        with pytest.raises(UnknownKeyId) as caught:
            verify(raw)

        assert "../../../../dev/null" == caught.value.kid

    @pytest.mark.parametrize("header", ["jku", "x5u"])
    def test_token_supplied_key_urls_are_refused(self, header: str) -> None:
        """`jku`/`x5u` in the header make the token invalid (the URL is never used)."""
        raw = mint(headers={header: "https://attacker.example/jwks"})

        assert AuthReason.INVALID == reason_of(raw)

    def test_embedded_jwk_is_refused(self) -> None:
        """A key embedded in the header is never trusted."""
        raw = mint(rsa_key("attacker"), headers={"jwk": public_jwk(rsa_key("attacker"), "k1")})

        assert AuthReason.INVALID == reason_of(raw)

    def test_expired(self) -> None:
        """A token past `exp` plus leeway is expired."""
        raw = mint(exp=int((NOW - timedelta(seconds=31)).timestamp()))

        assert AuthReason.EXPIRED == reason_of(raw, leeway_s=30)

    def test_expiry_within_leeway_is_accepted(self) -> None:
        """Clock skew within the leeway is tolerated."""
        raw = mint(exp=int((NOW - timedelta(seconds=10)).timestamp()))

        assert "user-1" == verify(raw, leeway_s=30).subject

    def test_future_nbf(self) -> None:
        """A token not valid yet is refused."""
        raw = mint(nbf=int((NOW + timedelta(minutes=5)).timestamp()))

        assert AuthReason.NOT_YET_VALID == reason_of(raw)

    def test_future_iat(self) -> None:
        """A token issued in the future is refused."""
        raw = mint(iat=int((NOW + timedelta(minutes=5)).timestamp()))

        assert AuthReason.NOT_YET_VALID == reason_of(raw)

    @pytest.mark.parametrize("claim", ["exp", "iss", "aud"])
    def test_required_claims(self, claim: str) -> None:
        """Missing `exp`, `iss` or `aud` make the token invalid."""
        raw = mint(**{claim: None})

        assert AuthReason.INVALID == reason_of(raw)

    def test_wrong_issuer(self) -> None:
        """A token from another issuer is refused."""
        assert AuthReason.WRONG_ISSUER == reason_of(mint(iss="https://evil.example"))

    def test_wrong_audience(self) -> None:
        """A token for another audience is refused."""
        assert AuthReason.WRONG_AUDIENCE == reason_of(mint(aud="someone-else"))

    def test_stripped_signature(self) -> None:
        """A token with its signature removed or replaced is invalid."""
        header, payload, _ = mint().split(".")

        assert AuthReason.INVALID == reason_of(f"{header}.{payload}.")
        assert AuthReason.INVALID == reason_of(f"{header}.{payload}.{b64(b'x' * 256)}")

    def test_signed_by_another_key_with_a_known_kid(self) -> None:
        """A token naming our kid but signed by an attacker key fails the signature check."""
        assert AuthReason.INVALID == reason_of(mint(rsa_key("attacker"), kid="k1"))

    @pytest.mark.parametrize("exp", [float("nan"), float("inf"), 10**14, -1, "2030-01-01", True])
    def test_absurd_expiry_is_invalid(self, exp: object) -> None:
        """Non-finite, far-future, negative or non-numeric `exp` values are invalid, never a crash."""
        literal = b"NaN" if exp != exp else b"Infinity" if exp == float("inf") else orjson.dumps(exp)
        body = orjson.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "email": "x@y"})[:-1] + b',"exp":' + literal + b"}"
        raw = jwt.api_jws.PyJWS().encode(body, rsa_key(), algorithm="RS256", headers={"kid": "k1"})

        assert AuthReason.INVALID == reason_of(raw)

    def test_oversized_token_is_refused_before_parsing(self) -> None:
        """A token above the size limit is refused as too large, whatever it holds."""
        raw = "a" * 9000

        assert AuthReason.TOO_LARGE == reason_of(raw, max_bytes=8192)

    def test_garbage_is_invalid(self) -> None:
        """Non-JWT input is invalid."""
        assert AuthReason.INVALID == reason_of("not.a.jwt!")

    @pytest.mark.parametrize("overrides", [
        {"sub": ""}, {"email": ""}, {"sub": None}, {"email": None}, {"sub": "a\r\nX-Evil: 1"},
        {"email": "a@b\x00"}, {"groups": ["ok", "bad\nline"]}, {"groups": [1]}, {"groups": "x" * 2000},
    ])
    def test_unusable_claims_are_refused(self, overrides: dict[str, object]) -> None:
        """Empty subject/email and control characters in used claims refuse the token."""
        assert AuthReason.BAD_CLAIMS == reason_of(mint(**overrides))

    def test_public_reasons_do_not_leak_details(self) -> None:
        """Clients only ever see `missing`, `expired`, `wrong-audience`, `invalid`, `unavailable` or `device-certificate-ambiguous`."""
        assert {"missing", "expired", "wrong-audience", "invalid", "unavailable", "device-certificate-ambiguous"} == {r.public for r in AuthReason}


class TestHmac:
    SECRET = b"s" * 40

    def test_hs256_with_configured_secret(self) -> None:
        """HS256 verifies only against the configured secret."""
        keys = KeySet(hmac_secret=self.SECRET)

        identity = verify(mint(self.SECRET, alg="HS256", kid=None), keys, algorithms=("HS256",))

        assert "user-1" == identity.subject

    def test_hs256_never_uses_a_public_key(self) -> None:
        """Without a configured secret there is no HMAC key at all, even if public keys exist."""
        assert AuthReason.UNKNOWN_KEY == reason_of(mint(self.SECRET, alg="HS256", kid="k1"), algorithms=("HS256",))


class TestCache:
    def test_cached_until_the_token_expires(self) -> None:
        """A verified identity is served from the cache until its token's expiry, then dropped."""
        cache = VerifiedTokenCache(10)
        raw = mint()
        identity = verify(raw)
        cache.put(raw, identity, scope="jwt", now=NOW)

        hit = cache.get(raw, scope="jwt", source="bearer", now=NOW + timedelta(minutes=9))
        miss = cache.get(raw, scope="jwt", source="bearer", now=NOW + timedelta(minutes=10))

        assert identity == hit
        assert None is miss

    def test_bounded(self) -> None:
        """The cache never holds more than its size."""
        cache = VerifiedTokenCache(3)

        for i in range(10):
            raw = mint(sub=f"u{i}")
            cache.put(raw, verify(raw), scope="jwt", now=NOW)

        assert 3 == len(cache)

    def test_full_cache_keeps_the_newest(self) -> None:
        """A full cache drops its oldest entry to admit a new one."""
        cache = VerifiedTokenCache(2)
        raws = [mint(sub=f"u{i}") for i in range(3)]

        for raw in raws:
            cache.put(raw, verify(raw), scope="jwt", now=NOW)

        assert None is cache.get(raws[0], scope="jwt", source="bearer", now=NOW)
        assert "u2" == cache.get(raws[2], scope="jwt", source="bearer", now=NOW).subject  # type: ignore[union-attr]

    def test_other_scope_misses(self) -> None:
        """An identity verified for one scope is not served for another."""
        cache = VerifiedTokenCache(10)
        raw = mint()
        cache.put(raw, verify(raw), scope="jwt", now=NOW)

        found = cache.get(raw, scope="other", source="bearer", now=NOW)

        assert None is found

    def test_expired_entry_is_dropped(self) -> None:
        """An entry met after its token expired is removed, not only skipped."""
        cache = VerifiedTokenCache(10)
        raw = mint()
        cache.put(raw, verify(raw), scope="jwt", now=NOW)

        cache.get(raw, scope="jwt", source="bearer", now=NOW + timedelta(minutes=10))

        assert 0 == len(cache)

    def test_other_source_gets_its_own_kind(self) -> None:
        """A token cached from a bearer header and presented as a cookie says so."""
        cache = VerifiedTokenCache(10)
        raw = mint()
        cache.put(raw, verify(raw), scope="jwt", now=NOW)

        found = cache.get(raw, scope="jwt", source="cookie", now=NOW)

        assert "cookie" == found.source  # type: ignore[union-attr]
