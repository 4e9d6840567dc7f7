"""The `identity:` section of the settings: who the user is, which device, and what upstreams receive.

Owns: IdentitySettings and its sub-sections.
Must not import: aiohttp, app, gateway.gate.admission (settings are a leaf).

Relative file paths are resolved against the configuration file's directory (the `base_dir` of the
validation context), so the values held here are absolute.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal, Union
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gateway.config.secret import Secret
from gateway.config.section import Section, checked_networks

CALLBACK_PATH = "/.gatehouse/callback"
LOGOUT_PATH = "/.gatehouse/logout"
LOGIN_PATH = "/.gatehouse/login"
SIGNED_OUT_PATH = "/.gatehouse/signed-out"
JWKS_PATH = "/.well-known/gatehouse/jwks.json"
ASSERTION_HEADER = "X-Gatehouse-Jwt-Assertion"

ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_COOKIE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if path.is_absolute() or base is None:
        return path
    return (Path(base) / path).resolve()


def _check_algorithms(value: tuple[str, ...], *, allow_hmac: bool) -> tuple[str, ...]:
    for alg in value:
        if alg.lower() == "none":
            raise ValueError("`none` is never accepted; list signing algorithms such as `RS256`, `ES256`, `EdDSA`")
        if alg in HMAC_ALGORITHMS and not allow_hmac:
            raise ValueError(f"`{alg}` needs `hmac_secret`; HMAC tokens are never verified with a public key")
        if alg not in ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS:
            raise ValueError(f"`{alg}` is not a supported algorithm; use one of {', '.join(sorted(ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS))}")
    if not value:
        raise ValueError("list at least one algorithm, e.g. `[RS256, ES256, EdDSA]`")
    return value


def _url(value: str, what: str) -> str:
    parts = urlsplit(value)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        if parts.hostname and not parts.username and not parts.fragment:
            return value
    raise ValueError(f"`{value}` is not a usable {what}; write an https URL (http only for 127.0.0.1 or localhost)")


class BearerSource(Section):
    """`Authorization: Bearer <jwt>`."""

    kind: Literal["bearer"]


class HeaderSource(Section):
    """A JWT in a header set by an SSO front end, e.g. `Cf-Access-Jwt-Assertion`."""

    kind: Literal["header"]
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _HEADER_NAME.fullmatch(value) or value.lower().startswith("x-gatehouse-"):
            raise ValueError(f"`{value}` is not a usable header name; `X-Gatehouse-*` names are reserved")
        return value


class CookieSource(Section):
    """A JWT in a cookie, e.g. `CF_Authorization`."""

    kind: Literal["cookie"]
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _COOKIE_NAME.fullmatch(value):
            raise ValueError(f"`{value}` is not a cookie name")
        return value


class SessionSource(Section):
    """The session cookie Gatehouse sets after its own OpenID Connect login (needs `oidc`)."""

    kind: Literal["session"]


UserSource = Annotated[Union[BearerSource, HeaderSource, CookieSource, SessionSource], Field(discriminator="kind")]


class ClaimNames(Section):
    """Which claims of a verified token hold the user's subject, email, groups and device serial."""

    subject: str = "sub"
    email: str = "email"
    groups: str | None = "groups"
    device_serial: str | None = None
    """Claim carrying the device's hardware serial; used only when `device.sources` lists `claim`."""


class JwtSettings(Section):
    """How tokens from the identity provider or SSO front end are verified (no network beyond `jwks_url`)."""

    issuers: tuple[str, ...] = Field(min_length=1)
    audiences: tuple[str, ...] = Field(min_length=1)
    jwks_url: str | None = None
    key_files: tuple[Path, ...] = ()
    """Local JWKS (JSON) or PEM public key files, instead of or besides `jwks_url`."""
    hmac_secret: Secret | None = None
    """Shared secret for HS256/384/512 tokens; only then may `algorithms` list HS*."""
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    max_token_bytes: int = Field(default=8192, ge=512, le=65536)
    claims: ClaimNames = ClaimNames()
    jwks_cache_ttl_s: float = Field(default=3600.0, gt=0)
    unknown_kid_refetch_interval_s: float = Field(default=60.0, ge=1)
    """An unknown `kid` triggers at most one JWKS refetch per this interval."""
    jwks_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, value: str | None) -> str | None:
        return None if value is None else _url(value, "JWKS URL")

    @field_validator("key_files")
    @classmethod
    def _key_files(cls, value: tuple[Path, ...], info: ValidationInfo) -> tuple[Path, ...]:
        return tuple(_resolve(p, info) for p in value)

    @model_validator(mode="after")
    def _keys(self) -> JwtSettings:
        _check_algorithms(self.algorithms, allow_hmac=self.hmac_secret is not None)
        if self.jwks_url is None and not self.key_files and self.hmac_secret is None:
            raise ValueError("no verification keys; set `jwks_url`, `key_files` or `hmac_secret`")
        if self.hmac_secret is not None and len(self.hmac_secret.reveal()) < 32:
            raise ValueError("`hmac_secret` is shorter than 32 characters; generate one with `openssl rand -hex 32`")
        return self


class OidcSettings(Section):
    """Built-in OpenID Connect login for browsers (authorization code + PKCE S256 + state + nonce)."""

    discovery_url: str
    """The provider's `.../.well-known/openid-configuration` URL."""
    client_id: str = Field(min_length=1)
    client_secret: Secret | None = None
    redirect_path: Literal["/.gatehouse/callback"] = "/.gatehouse/callback"
    external_url: str = Field(default=None, validate_default=True)  # a missing one is reported by `_external`
    """Gatehouse's public origin (`https://wiki.corp.example`): the only source of the login callback
    (`<external_url>/.gatehouse/callback`) and the post-logout address; never the request's Host."""
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    session_cookie: str = "gatehouse_session"
    session_lifetime_s: int = Field(default=8 * 3600, ge=60, le=30 * 86400)
    session_key: Secret
    """HMAC key signing session and login-state cookies; at least 32 characters."""
    login_timeout_s: int = Field(default=600, ge=30, le=3600)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    claims: ClaimNames = ClaimNames()
    timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("discovery_url")
    @classmethod
    def _discovery(cls, value: str) -> str:
        return _url(value, "discovery URL")

    @field_validator("external_url", mode="before")
    @classmethod
    def _external(cls, value: object) -> str:
        if value is None:
            raise ValueError(
                "is required with `oidc`: write Gatehouse's public origin, e.g. `https://wiki.corp.example`, "
                "and register `<external_url>/.gatehouse/callback` at the provider"
            )
        if not isinstance(value, str):
            raise ValueError("is not an origin; write e.g. `https://wiki.corp.example`")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query \
                or parts.fragment or "@" in parts.netloc:
            raise ValueError(f"`{value}` is not an origin; write e.g. `https://wiki.corp.example`")
        return value.rstrip("/")

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value:
            raise ValueError("scopes must include `openid`")
        return value

    @field_validator("session_cookie")
    @classmethod
    def _cookie(cls, value: str) -> str:
        if not _COOKIE_NAME.fullmatch(value):
            raise ValueError(f"`{value}` is not a cookie name")
        return value

    @model_validator(mode="after")
    def _key(self) -> OidcSettings:
        _check_algorithms(self.algorithms, allow_hmac=False)
        if len(self.session_key.reveal()) < 32:
            raise ValueError("`session_key` is shorter than 32 characters; generate one with `openssl rand -hex 32`")
        return self


class DeviceAssertionSettings(Section):
    """Short-lived JWTs in `X-Device-Assertion`, signed by a key trusted for devices (agent or MDM)."""

    issuers: tuple[str, ...] = Field(min_length=1)
    """The `iss` values a device assertion may carry (the agent or MDM that signs them), checked as the user token's."""
    key_files: tuple[Path, ...] = Field(min_length=1)
    """JWKS (JSON) or PEM public key files of the trusted device keys."""
    audience: str = "gatehouse"
    header: str = "X-Device-Assertion"
    max_lifetime_s: int = Field(default=300, ge=10, le=3600)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    max_bytes: int = Field(default=4096, ge=512, le=65536)

    @field_validator("key_files")
    @classmethod
    def _key_files(cls, value: tuple[Path, ...], info: ValidationInfo) -> tuple[Path, ...]:
        return tuple(_resolve(p, info) for p in value)

    @field_validator("algorithms")
    @classmethod
    def _algs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_algorithms(value, allow_hmac=False)


class TrustedHeaderSettings(Section):
    """The weaker option: a serial header believed only from these front-end addresses."""

    name: str = "X-Device-Serial"
    trusted_from: tuple[str, ...] = Field(min_length=1)

    @field_validator("trusted_from")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return checked_networks(value, example="10.0.0.5/32")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _HEADER_NAME.fullmatch(value) or value.lower().startswith("x-gatehouse-"):
            raise ValueError(f"`{value}` is not a usable header name; `X-Gatehouse-*` names are reserved")
        return value

    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(item, strict=False) for item in self.trusted_from)


class DeviceCaSettings(Section):
    """Gatehouse's own device certificate authority (issue 15): enrollment signs laptops' certificates with it.

    Listeners with `client_cert: optional|required` trust ``cert`` and every ``previous`` certificate
    besides their `client_ca`. Rotation: make a new CA (`gatehouse device-ca create`), move the old
    ``cert`` into ``previous`` and restart; certificates the old CA issued keep working until they expire.
    """

    cert: Path
    """The CA certificate (PEM) that signs device certificates now."""
    key: Secret
    """Its private key (PEM), a secret like the others: `{file: device-ca.key}` or `{env: NAME}`."""
    validity_days: int = Field(default=30, ge=1, le=397)
    """How long an issued device certificate is valid; the enrollment client renews when under 10 days remain."""
    previous: tuple[Path, ...] = ()
    """Older CA certificates, still trusted for the certificates they issued until those expire."""
    home_roots: tuple[str, ...] = ()
    """Directories whose subdirectories are user homes on the laptops, besides `/Users`, `/home` and `C:\\Users`
    (e.g. `/var/home` on Fedora Atomic desktops): an enrollment's nonce file may be written under `<root>/<name>/`."""

    @field_validator("home_roots")
    @classmethod
    def _home_roots(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for root in value:
            if not root.startswith("/") or root.rstrip("/") in ("", "/") or any(c in root for c in "'\"`\\") \
                    or ".." in root.split("/") or any(ord(c) < 32 for c in root):
                raise ValueError(f"home root `{root[:80]}` is not an absolute directory such as `/var/home`; "
                                 "give the directory that holds the users' homes, without quotes or `..`")
        return value

    @field_validator("cert")
    @classmethod
    def _cert(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @field_validator("previous")
    @classmethod
    def _previous(cls, value: tuple[Path, ...], info: ValidationInfo) -> tuple[Path, ...]:
        return tuple(_resolve(p, info) for p in value)


DeviceSourceName = Literal["mtls", "assertion", "claim", "header"]


class DeviceSettings(Section):
    """Where a verified hardware serial may come from, tried in this order."""

    sources: tuple[DeviceSourceName, ...] = ("mtls",)
    assertion: DeviceAssertionSettings | None = None
    header: TrustedHeaderSettings | None = None
    ca: DeviceCaSettings | None = None
    """Gatehouse's own device CA; absent means enrollment is disabled."""

    @model_validator(mode="after")
    def _sources(self) -> DeviceSettings:
        if len(set(self.sources)) != len(self.sources):
            raise ValueError("a device source is listed twice")
        if "assertion" in self.sources and self.assertion is None:
            raise ValueError("device source `assertion` needs `device.assertion` with `issuers` and `key_files`")
        if "header" in self.sources and self.header is None:
            raise ValueError("device source `header` needs `device.header.trusted_from`, the front-end addresses that set it")
        if self.header is not None and "header" not in self.sources:
            raise ValueError("`device.header` is set but `header` is not in `device.sources`; add it or remove the section")
        if self.ca is not None and "mtls" not in self.sources:
            raise ValueError("`device.ca` is set but `mtls` is not in `device.sources`, so enrolled certificates would name no device; add `mtls`")
        return self


class UpstreamAssertionSettings(Section):
    """Gatehouse's own signed assertion (`X-Gatehouse-Jwt-Assertion`, ES256) for upstreams.

    Rotation: `key_files[0]` signs; every file is published at /.well-known/gatehouse/jwks.json.
    Add a new key at the end, wait for upstream JWKS caches, move it first, and remove the old key once
    `lifetime_s` plus the upstreams' cache time has passed. Later files may hold public keys only.
    """

    key_files: tuple[Path, ...] = Field(min_length=1)
    issuer: str = "gatehouse"
    audience: str | None = None
    lifetime_s: int = Field(default=300, ge=30, le=3600)

    @field_validator("key_files")
    @classmethod
    def _key_files(cls, value: tuple[Path, ...], info: ValidationInfo) -> tuple[Path, ...]:
        return tuple(_resolve(p, info) for p in value)


class IdentitySettings(Section):
    """Who sends a request (user) and from which device, and what upstreams receive about both."""

    sources: tuple[UserSource, ...] = Field(default=(BearerSource(kind="bearer"),), min_length=1)
    """User token sources, tried in order; the first one present decides."""
    jwt: JwtSettings | None = None
    oidc: OidcSettings | None = None
    device: DeviceSettings = DeviceSettings()
    assertion: UpstreamAssertionSettings | None = None
    token_cache_size: int = Field(default=10_000, ge=0)
    forward_credentials: bool = False
    """Send the user's token on to upstreams (the `Authorization` header when a `bearer` source is
    configured, a `header` source's header, a `cookie` source's cookie). Off by default: upstreams get
    the identity headers and the signed assertion, and a token that reached an upstream could be
    replayed by it elsewhere. Gatehouse's own session and login cookies are never forwarded."""

    @model_validator(mode="after")
    def _consistent(self) -> IdentitySettings:
        kinds = [s.kind for s in self.sources]
        if any(k in ("bearer", "header", "cookie") for k in kinds) and self.jwt is None:
            raise ValueError("token sources `bearer`, `header` and `cookie` need the `jwt` section (issuers, audiences, keys)")
        if "session" in kinds and self.oidc is None:
            raise ValueError("source `session` needs the `oidc` section")
        if "claim" in self.device.sources:
            names = [c for c in (self.jwt.claims if self.jwt else None, self.oidc.claims if self.oidc else None) if c]
            if not any(c.device_serial for c in names):
                raise ValueError("device source `claim` needs `claims.device_serial` under `jwt` or `oidc`")
        if self.oidc is not None:
            cookie_names = {s.name for s in self.sources if isinstance(s, CookieSource)}
            if self.oidc.session_cookie in cookie_names:
                raise ValueError(f"cookie `{self.oidc.session_cookie}` is both a token source and the session cookie")
        return self
