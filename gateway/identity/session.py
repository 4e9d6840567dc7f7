"""Signed, expiring cookies for the built-in OpenID Connect login: the session, the login state, the logout hint.

Owns: SessionCodec, LoginState, safe_return_path, cookie attributes.
Must not import: aiohttp.

All three cookies are HS256 JWTs under keys derived from the configured `session_key`, each with its
own audience so one can never stand in for another. They hold only the claims the gateway needs; the
PKCE verifier and the nonce are derived from the state with the key, so no secret is in a cookie.
The provider's ID token, needed as `id_token_hint` when signing out at the provider, is kept in the
logout-hint cookie, which lives as long as the session and is sent only to the logout path (so it
is not decoded, nor carried, on every request).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, unquote, urlsplit

import jwt

from gateway.identity.errors import AuthenticationError, AuthReason
from gateway.identity.model import Identity
from gateway.identity.tokens import check_times, safe_claim_text

_SESSION_AUD = "gatehouse:session"
_LOGIN_AUD = "gatehouse:login"
_LOGOUT_AUD = "gatehouse:logout"
_ISSUER = "gatehouse"
_STATE = re.compile(r"[A-Za-z0-9_-]{32,64}")
MAX_COOKIE_BYTES = 4000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def safe_return_path(value: str | None) -> str:
    """A same-origin relative path to return to after login; `/` for anything else (no open redirect)."""
    if not value or len(value) > 2048:
        return "/"
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return "/"
    decoded = unquote(value)
    if decoded.startswith("//") or "\\" in decoded or any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    # Non-ASCII is percent-encoded so the value is always a valid Location header; existing escapes stay.
    return quote(value, safe="/?#[]@!$&'()*+,;=:%-._~")


@dataclass(frozen=True, slots=True)
class LoginState:
    """A login in progress: the state sent to the provider and where to return afterwards."""

    state: str
    return_to: str


class SessionCodec:
    """Encodes and checks the session and login-state cookies."""

    def __init__(self, session_key: str, *, lifetime_s: int, login_timeout_s: int = 600) -> None:
        master = session_key.encode()
        self._session_key = hmac.new(master, b"gatehouse session v1", hashlib.sha256).digest()
        self._login_key = hmac.new(master, b"gatehouse login v1", hashlib.sha256).digest()
        self._derive_key = hmac.new(master, b"gatehouse derive v1", hashlib.sha256).digest()
        self._logout_key = hmac.new(master, b"gatehouse logout v1", hashlib.sha256).digest()
        self._lifetime = timedelta(seconds=lifetime_s)
        self._login_timeout = timedelta(seconds=login_timeout_s)

    @property
    def lifetime_s(self) -> int:
        return int(self._lifetime.total_seconds())

    # --- session -------------------------------------------------------------------------------
    def encode_session(self, identity: Identity, *, now: datetime) -> str:
        """A session cookie value for a user who just logged in.

        Raises:
            ValueError: the claims would not fit in a cookie.
        """
        exp = now + self._lifetime
        claims = {
            "iss": _ISSUER, "aud": _SESSION_AUD, "iat": int(now.timestamp()), "exp": int(exp.timestamp()),
            "sub": identity.subject, "email": identity.email, "groups": list(identity.groups), "idp": identity.issuer,
        }
        if identity.device_serial_claim is not None:
            claims["dsn"] = identity.device_serial_claim
        value = jwt.encode(claims, self._session_key, algorithm="HS256")
        if len(value) > MAX_COOKIE_BYTES:
            raise ValueError("session claims too large for a cookie")
        return value

    def decode_session(self, value: str, *, now: datetime, leeway_s: float = 0.0) -> Identity:
        """The identity in a session cookie.

        Raises:
            AuthenticationError: tampered, expired or malformed.
        """
        claims = self._decode(value, self._session_key, _SESSION_AUD)
        expires_at = check_times(claims, now=now, leeway_s=leeway_s)
        subject, email, idp = (safe_claim_text(claims.get(k)) for k in ("sub", "email", "idp"))
        groups = claims.get("groups")
        serial = claims.get("dsn")
        if subject is None or email is None or idp is None or not isinstance(groups, list):
            raise AuthenticationError(AuthReason.BAD_CLAIMS)
        if not all(isinstance(g, str) and safe_claim_text(g) for g in groups):
            raise AuthenticationError(AuthReason.BAD_CLAIMS)
        if serial is not None and safe_claim_text(serial) is None:
            raise AuthenticationError(AuthReason.BAD_CLAIMS)
        return Identity(subject, email, tuple(groups), idp, "session", expires_at, serial)  # type: ignore[arg-type]

    # --- logout hint ---------------------------------------------------------------------------
    def encode_logout_hint(self, id_token: str, *, now: datetime) -> str | None:
        """A cookie value keeping the provider's ID token for the session's lifetime; None when it would not fit."""
        claims = {
            "iss": _ISSUER, "aud": _LOGOUT_AUD, "iat": int(now.timestamp()),
            "exp": int((now + self._lifetime).timestamp()), "idt": id_token,
        }
        value = jwt.encode(claims, self._logout_key, algorithm="HS256")
        return value if len(value) <= MAX_COOKIE_BYTES else None

    def logout_hint(self, value: str | None) -> str | None:
        """The ID token kept by Gatehouse's own logout-hint cookie, or None (absent, tampered, malformed).

        An expired hint still names the user to the provider, which ignores its expiry.
        """
        if not value:
            return None
        try:
            claims = self._decode(value, self._logout_key, _LOGOUT_AUD)
        except AuthenticationError:
            return None
        hint = claims.get("idt")
        return hint if isinstance(hint, str) else None

    # --- login state ---------------------------------------------------------------------------
    def new_login(self, return_to: str | None, *, now: datetime) -> tuple[LoginState, str]:
        """Start a login: a fresh state and the cookie value that binds it to this browser."""
        login = LoginState(secrets.token_urlsafe(32), safe_return_path(return_to))
        claims = {
            "iss": _ISSUER, "aud": _LOGIN_AUD, "iat": int(now.timestamp()),
            "exp": int((now + self._login_timeout).timestamp()), "st": login.state, "rt": login.return_to,
        }
        return login, jwt.encode(claims, self._login_key, algorithm="HS256")

    def check_login(self, cookie: str | None, state: str | None, *, now: datetime) -> LoginState:
        """The login this callback belongs to, if the state matches the browser's login cookie.

        Raises:
            AuthenticationError: no cookie, tampered, expired, or a different state (CSRF).
        """
        if not cookie or not state or not _STATE.fullmatch(state):
            raise AuthenticationError(AuthReason.LOGIN_FAILED)
        claims = self._decode(cookie, self._login_key, _LOGIN_AUD)
        try:
            check_times(claims, now=now, leeway_s=0)
        except AuthenticationError:
            raise AuthenticationError(AuthReason.LOGIN_FAILED) from None
        expected = claims.get("st")
        if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), state.encode()):
            raise AuthenticationError(AuthReason.LOGIN_FAILED)
        return LoginState(expected, safe_return_path(claims.get("rt") if isinstance(claims.get("rt"), str) else None))  # type: ignore[arg-type]

    def pkce_verifier(self, state: str) -> str:
        """The PKCE code verifier for a login, derived from its state (43 URL-safe characters)."""
        return _b64(hmac.new(self._derive_key, b"pkce\0" + state.encode(), hashlib.sha256).digest())

    def nonce(self, state: str) -> str:
        """The OpenID nonce for a login, derived from its state."""
        return _b64(hmac.new(self._derive_key, b"nonce\0" + state.encode(), hashlib.sha256).digest())

    @staticmethod
    def pkce_challenge(verifier: str) -> str:
        """S256 code challenge of a verifier."""
        return _b64(hashlib.sha256(verifier.encode()).digest())

    @staticmethod
    def _decode(value: str, key: bytes, audience: str) -> dict[str, object]:
        if len(value) > MAX_COOKIE_BYTES:
            raise AuthenticationError(AuthReason.TOO_LARGE)
        try:
            return jwt.decode(
                value, key, algorithms=["HS256"], audience=audience, issuer=_ISSUER,
                options={"require": ["exp", "iss", "aud"], "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            raise AuthenticationError(AuthReason.INVALID) from None


def cookie_attributes(*, secure: bool, max_age: int | None, path: str = "/") -> dict[str, object]:
    """Attributes for Gatehouse's cookies: HttpOnly, SameSite=Lax, Secure over TLS, path `/` unless given."""
    attrs: dict[str, object] = {"httponly": True, "samesite": "Lax", "secure": secure, "path": path}
    if max_age is not None:
        attrs["max_age"] = max_age
    return attrs
