"""IdentitySettings: unsafe or inconsistent identity configurations are refused at load, with a message saying why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.identity import IdentitySettings, check_identity_files
from tests.gateway.identity.support import jwt_section, settings

OIDC: dict[str, Any] = {
    "discovery_url": "https://idp.example/.well-known/openid-configuration", "client_id": "gatehouse",
    "external_url": "https://gatehouse.example", "session_key": {"value": "k" * 40},
}


def problem(raw: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        settings(raw)
    return str(caught.value)


class TestAlgorithms:
    def test_defaults(self) -> None:
        """The default allow-list is RS256, ES256 and EdDSA."""
        s = settings({"jwt": jwt_section(jwks_url="https://idp.example/jwks")})

        assert ("RS256", "ES256", "EdDSA") == s.jwt.algorithms  # type: ignore[union-attr]

    @pytest.mark.parametrize("alg", ["none", "None", "NONE"])
    def test_none_is_never_accepted(self, alg: str) -> None:
        """`none` in any case is refused."""
        assert "never accepted" in problem({"jwt": jwt_section(jwks_url="https://idp.example/jwks", algorithms=[alg])})

    def test_hmac_needs_a_secret(self) -> None:
        """HS256 without `hmac_secret` is refused: a public key is never an HMAC secret."""
        assert "needs `hmac_secret`" in problem({"jwt": jwt_section(jwks_url="https://idp.example/jwks", algorithms=["HS256"])})

    def test_hmac_with_a_long_secret(self) -> None:
        """HS256 is allowed with a configured secret of at least 32 characters."""
        s = settings({"jwt": jwt_section(hmac_secret={"value": "x" * 32}, algorithms=["HS256"])})

        assert "Secret('***')" == repr(s.jwt.hmac_secret)  # type: ignore[union-attr]

    def test_short_hmac_secret_is_refused(self) -> None:
        """A short HMAC secret is refused with the command that makes a good one."""
        assert "openssl rand -hex 32" in problem({"jwt": jwt_section(hmac_secret={"value": "short"}, algorithms=["HS256"])})


class TestSources:
    def test_token_sources_need_jwt(self) -> None:
        """Bearer, header and cookie sources need the `jwt` section."""
        assert "need the `jwt` section" in problem({"sources": [{"kind": "bearer"}]})

    def test_session_needs_oidc(self) -> None:
        """The session source needs OpenID Connect settings."""
        assert "needs the `oidc` section" in problem({"sources": [{"kind": "session"}]})

    def test_reserved_header_names(self) -> None:
        """A token header may not be one of Gatehouse's own `X-Gatehouse-*` names."""
        assert "reserved" in problem({"sources": [{"kind": "header", "name": "X-Gatehouse-User"}],
                                      "jwt": jwt_section(jwks_url="https://idp.example/jwks")})

    def test_jwt_needs_keys(self) -> None:
        """A `jwt` section without any key source is refused."""
        assert "no verification keys" in problem({"jwt": jwt_section()})

    def test_plain_http_jwks_only_on_loopback(self) -> None:
        """A JWKS URL must be https, except on 127.0.0.1 or localhost."""
        assert "https URL" in problem({"jwt": jwt_section(jwks_url="http://idp.example/jwks")})
        assert settings({"jwt": jwt_section(jwks_url="http://127.0.0.1:8080/jwks")}).jwt is not None


class TestOidc:
    def test_redirect_path_is_fixed(self) -> None:
        """The callback path cannot be moved."""
        assert "redirect_path" in problem({"sources": [{"kind": "session"}], "oidc": {**OIDC, "redirect_path": "/cb"}})

    def test_scopes_need_openid(self) -> None:
        """Scopes without `openid` are refused."""
        assert "openid" in problem({"sources": [{"kind": "session"}], "oidc": {**OIDC, "scopes": ["email"]}})

    def test_short_session_key_is_refused(self) -> None:
        """The session signing key must be at least 32 characters."""
        assert "session_key" in problem({"sources": [{"kind": "session"}], "oidc": {**OIDC, "session_key": {"value": "k"}}})

    def test_external_url_is_required(self) -> None:
        """Without `external_url` the login has no callback address of its own: refused, naming the key."""
        raw = {key: value for key, value in OIDC.items() if key != "external_url"}

        assert "oidc.external_url\n  Value error, is required with `oidc`" in problem({"sources": [{"kind": "session"}], "oidc": raw})

    @pytest.mark.parametrize("url", ["https://gatehouse.example/app", "https://user@gatehouse.example", "ftp://gatehouse.example"])
    def test_external_url_must_be_an_origin(self, url: str) -> None:
        """`external_url` is a scheme and host (and port) only."""
        assert "is not an origin" in problem({"sources": [{"kind": "session"}], "oidc": {**OIDC, "external_url": url}})

    def test_client_secret_from_environment(self) -> None:
        """The client secret is a Secret read from the environment."""
        s = IdentitySettings.model_validate(
            {"sources": [{"kind": "session"}], "oidc": {**OIDC, "client_secret": {"env": "OIDC_SECRET"}}},
            context={"environ": {"OIDC_SECRET": "shh"}},
        )

        assert "shh" == s.oidc.client_secret.reveal()  # type: ignore[union-attr]


class TestDevice:
    def test_default_is_mtls_only(self) -> None:
        """Without configuration only the verified client certificate counts."""
        assert ("mtls",) == IdentitySettings(sources=({"kind": "bearer"},), jwt=jwt_section(jwks_url="https://i/j")).device.sources  # type: ignore[arg-type]

    def test_header_needs_trusted_addresses(self) -> None:
        """The weaker header source needs the front-end addresses that may set it."""
        assert "trusted_from" in problem({"device": {"sources": ["header"]}})

    def test_claim_needs_a_claim_name(self) -> None:
        """The claim source needs `claims.device_serial`."""
        assert "claims.device_serial" in problem({"jwt": jwt_section(jwks_url="https://i/j"), "device": {"sources": ["claim"]}})

    def test_assertion_needs_keys(self) -> None:
        """The assertion source needs trusted device key files."""
        assert "key_files" in problem({"device": {"sources": ["assertion"]}})

    @pytest.mark.parametrize("issuers", [None, []])
    def test_assertion_needs_issuers(self, issuers: list[str] | None) -> None:
        """Device assertions name the issuers they are accepted from, as user tokens do."""
        assertion: dict[str, Any] = {"key_files": ["keys/device.pem"]}
        if issuers is not None:
            assertion["issuers"] = issuers

        assert "issuers" in problem({"device": {"sources": ["assertion"], "assertion": assertion}})

    def test_relative_key_paths_are_resolved(self, tmp_path: Path) -> None:
        """Key file paths are resolved against the configuration file's directory."""
        s = settings({"jwt": jwt_section(jwks_url="https://i/j"), "device": {
            "sources": ["assertion"], "assertion": {"issuers": ["https://mdm.example"], "key_files": ["keys/device.pem"]}}}, base_dir=tmp_path)

        assert tmp_path / "keys" / "device.pem" == s.device.assertion.key_files[0]  # type: ignore[union-attr]

    def test_bad_network_is_refused(self) -> None:
        """Trusted front-end addresses must be IP addresses or networks."""
        assert "not an IP address" in problem({"device": {"sources": ["header"], "header": {"trusted_from": ["front-end"]}}})

    def test_unknown_keys_are_refused(self) -> None:
        """Misspelt keys are refused (extra=forbid)."""
        assert "extra" in problem({"devices": {}}).lower()


class TestKeyFiles:
    def test_every_bad_key_file_is_listed(self, tmp_path: Path) -> None:
        """check_identity_files reports each unusable key file with its location, not only the first."""
        (tmp_path / "junk.pem").write_text("not a key")
        s = settings({
            "jwt": jwt_section(key_files=["missing.json", "junk.pem"]),
            "assertion": {"key_files": ["missing-assertion.pem"]},
        }, base_dir=tmp_path)

        problems = check_identity_files(s)

        assert ["identity.assertion.key_files[0]", "identity.jwt.key_files[0]", "identity.jwt.key_files[1]"] == sorted(p.path for p in problems)
        assert all("`" in p.message for p in problems)
