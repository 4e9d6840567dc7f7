"""OpenID Connect relying party for browsers: discovery, authorization code + PKCE (S256) + state + nonce.

Owns: OidcClient, ProviderMetadata, the RP-initiated logout address.
Must not import: app, gateway.gate.admission (aiohttp only as an HTTP client).

The provider's ID token is verified like any token (keys from the discovered `jwks_uri`, audience =
client id, issuer = the discovered issuer) plus the nonce derived from this login's state. Every
address the provider sends the browser back to is built from the configured `external_url`, never
from a request. A failed login raises LoginFailed saying how (cancelled, stale, rejected,
unverified, unavailable); the raw ID token is returned to the caller only to become the logout
hint, and is never logged.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

import aiohttp
import orjson
import structlog

from gateway.config.identity import CALLBACK_PATH, SIGNED_OUT_PATH, OidcSettings
from gateway.identity.errors import AuthenticationError, AuthReason, LoginFailed, LoginFailure
from gateway.identity.jwks import JwksCache, KeysUnavailable
from gateway.identity.model import Identity
from gateway.identity.session import LoginState, SessionCodec
from gateway.identity.tokens import ClaimNames, UnknownKeyId, check_times, decode_verified, identity_from_claims

if TYPE_CHECKING:
    from gateway.metrics import Metrics

log = structlog.get_logger(__name__)
_DISCOVERY_TTL = timedelta(hours=1)
_MAX_RESPONSE_BYTES = 256 * 1024
_UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of the discovery document Gatehouse uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None


class OidcClient:
    """Talks to one OpenID provider with the gateway's shared ClientSession."""

    def __init__(
        self, settings: OidcSettings, session: aiohttp.ClientSession, codec: SessionCodec, *, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self._session = session
        self._codec = codec
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._metadata: ProviderMetadata | None = None
        self._fetched_at: datetime | None = None
        self._jwks: JwksCache | None = None
        self._lock = asyncio.Lock()
        c = settings.claims
        self._names = ClaimNames(c.subject, c.email, c.groups, c.device_serial)

    async def metadata(self, *, now: datetime) -> ProviderMetadata:
        """The provider's discovery document, cached for an hour.

        Raises:
            AuthenticationError: the provider cannot be reached or its document is unusable (503).
        """
        async with self._lock:
            if self._metadata is None or self._fetched_at is None or now - self._fetched_at >= _DISCOVERY_TTL:
                try:
                    self._metadata = await self._discover()
                    self._fetched_at = now
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, orjson.JSONDecodeError) as exc:
                    log.warning("oidc.discovery_failed", error=type(exc).__name__)
                    if self._metadata is None:
                        raise AuthenticationError(AuthReason.KEYS_UNAVAILABLE) from None
            meta = self._metadata
            if self._jwks is None:
                self._jwks = JwksCache(meta.jwks_uri, self._session, timeout_s=self.settings.timeout_s, metrics=self._metrics)
            return meta

    async def _discover(self) -> ProviderMetadata:
        async with self._session.get(self.settings.discovery_url, timeout=self._timeout, allow_redirects=False) as resp:
            if resp.status != 200:
                raise ValueError(f"discovery status {resp.status}")
            doc = orjson.loads(await resp.content.read(_MAX_RESPONSE_BYTES))
        if not isinstance(doc, dict):
            raise ValueError("discovery document is not an object")
        expected_issuer = self.settings.discovery_url.removesuffix("/.well-known/openid-configuration")
        fields = {k: doc.get(k) for k in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")}
        if any(not isinstance(v, str) or not v for v in fields.values()):
            raise ValueError("discovery document lacks endpoints")
        if fields["issuer"].rstrip("/") != expected_issuer.rstrip("/"):  # type: ignore[union-attr]
            raise ValueError("discovery issuer does not match the discovery URL")
        end = doc.get("end_session_endpoint")
        return ProviderMetadata(**fields, end_session_endpoint=end if isinstance(end, str) else None)  # type: ignore[arg-type]

    @property
    def redirect_uri(self) -> str:
        """The login callback at the configured `external_url` (never the request's Host)."""
        return self.settings.external_url + CALLBACK_PATH

    @property
    def post_logout_redirect_uri(self) -> str:
        """Where the provider sends the browser after ending its session: the signed-out page."""
        return self.settings.external_url + SIGNED_OUT_PATH

    async def authorization_url(self, login: LoginState, *, now: datetime) -> str:
        """Where to send the browser to log in (code flow, PKCE S256, state, nonce).

        Raises:
            AuthenticationError: discovery failed (503).
        """
        meta = await self.metadata(now=now)
        verifier = self._codec.pkce_verifier(login.state)
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": login.state,
            "nonce": self._codec.nonce(login.state),
            "code_challenge": SessionCodec.pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        sep = "&" if "?" in meta.authorization_endpoint else "?"
        return f"{meta.authorization_endpoint}{sep}{urlencode(query)}"

    async def end_session_url(self, *, id_token_hint: str | None, now: datetime) -> str | None:
        """The provider's RP-initiated logout address for this user, or None when it advertises none.

        Raises:
            AuthenticationError: discovery failed (503).
        """
        meta = await self.metadata(now=now)
        if meta.end_session_endpoint is None:
            return None
        query = {"client_id": self.settings.client_id, "post_logout_redirect_uri": self.post_logout_redirect_uri}
        if id_token_hint is not None:
            query["id_token_hint"] = id_token_hint
        sep = "&" if "?" in meta.end_session_endpoint else "?"
        return f"{meta.end_session_endpoint}{sep}{urlencode(query)}"

    async def finish_login(
        self, login: LoginState, code: str, *, now: datetime, issuer: str | None = None
    ) -> tuple[Identity, str]:
        """Exchange the code, verify the ID token (signature, issuer, audience, times, nonce).

        Returns the user and the raw ID token (for the logout hint only).

        Raises:
            LoginFailed: the provider is unreachable, refused the code, or its answer failed a check.
        """
        try:
            meta = await self.metadata(now=now)
        except AuthenticationError:
            raise LoginFailed(LoginFailure.UNAVAILABLE) from None
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": self._codec.pkce_verifier(login.state),
        }
        headers = {"Accept": "application/json"}
        if self.settings.client_secret is not None:
            # client_secret_basic: both parts form-urlencoded before base64 (RFC 6749 section 2.3.1).
            pair = f"{quote(self.settings.client_id, safe='')}:{quote(self.settings.client_secret.reveal(), safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = self.settings.client_id
        if issuer is not None and issuer != meta.issuer:
            # RFC 9207: the authorization response names another issuer (mix-up attack).
            log.warning("oidc.login_failed", failure=LoginFailure.UNVERIFIED.value, check="iss")
            raise LoginFailed(LoginFailure.UNVERIFIED)
        try:
            async with self._session.post(
                meta.token_endpoint, data=form, timeout=self._timeout, allow_redirects=False, headers=headers,
            ) as resp:
                body = await resp.content.read(_MAX_RESPONSE_BYTES)
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("oidc.token_exchange_failed", error=type(exc).__name__)
            raise LoginFailed(LoginFailure.UNAVAILABLE) from None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        id_token = doc.get("id_token") if isinstance(doc, dict) else None
        if status != 200 or not isinstance(id_token, str):
            error = doc.get("error") if isinstance(doc, dict) else None
            log.warning("oidc.token_exchange_failed", status=status,
                        provider_error=error[:64] if isinstance(error, str) else None)
            raise LoginFailed(LoginFailure.UNAVAILABLE if status in _UNAVAILABLE_STATUSES else LoginFailure.REJECTED)
        try:
            identity = await self.verify_id_token(id_token, nonce=self._codec.nonce(login.state), now=now)
        except AuthenticationError as exc:
            unreachable = exc.reason is AuthReason.KEYS_UNAVAILABLE
            failure = LoginFailure.UNAVAILABLE if unreachable else LoginFailure.UNVERIFIED
            log.warning("oidc.login_failed", failure=failure.value, check=exc.reason.value)
            raise LoginFailed(failure) from None
        return identity, id_token

    async def verify_id_token(self, raw: str, *, nonce: str, now: datetime) -> Identity:
        """Verify an ID token from this provider.

        Raises:
            AuthenticationError: invalid, expired, wrong audience or issuer, or nonce mismatch.
        """
        meta = await self.metadata(now=now)
        jwks = self._jwks
        if jwks is None:  # set by metadata(); never None here
            raise AuthenticationError(AuthReason.KEYS_UNAVAILABLE)
        try:
            keys = await jwks.current(now=now)
        except KeysUnavailable:
            raise AuthenticationError(AuthReason.KEYS_UNAVAILABLE) from None
        common = {
            "algorithms": self.settings.algorithms, "issuers": (meta.issuer,), "audiences": (self.settings.client_id,),
            "max_bytes": 16384, "required": ("exp", "iss", "aud", "iat", "nonce"),
        }
        try:
            claims = decode_verified(raw, keys, **common)  # type: ignore[arg-type]
        except UnknownKeyId as exc:
            fresh = await jwks.refresh_for_unknown_kid(exc.kid, now=now)
            if fresh is None:
                raise AuthenticationError(AuthReason.UNKNOWN_KEY) from None
            try:
                claims = decode_verified(raw, fresh, **common)  # type: ignore[arg-type]
            except UnknownKeyId:
                raise AuthenticationError(AuthReason.UNKNOWN_KEY) from None
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.settings.client_id:
            raise AuthenticationError(AuthReason.WRONG_AUDIENCE)
        got = claims.get("nonce")
        if not isinstance(got, str) or got != nonce:
            raise AuthenticationError(AuthReason.INVALID)
        expires_at = check_times(claims, now=now, leeway_s=self.settings.leeway_s)
        return identity_from_claims(claims, names=self._names, source="session", expires_at=expires_at)
