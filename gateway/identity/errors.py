"""Errors of the identity package.

Owns: AuthReason, AuthenticationError, AmbiguousDeviceCertificate, DeviceCertificateRefused, LoginFailure, LoginFailed, DeviceAssertionError, KeyFileError.
Must not import: aiohttp.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from gateway.errors import GatewayError


class AuthReason(StrEnum):
    """Why a user could not be authenticated; a closed set used in logs, metrics and responses."""

    MISSING = "missing"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    INVALID = "invalid"
    WRONG_AUDIENCE = "wrong-audience"
    WRONG_ISSUER = "wrong-issuer"
    TOO_LARGE = "too-large"
    UNKNOWN_KEY = "unknown-key"
    BAD_CLAIMS = "bad-claims"
    KEYS_UNAVAILABLE = "keys-unavailable"
    LOGIN_FAILED = "login-failed"
    DEVICE_CERTIFICATE_AMBIGUOUS = "device-certificate-ambiguous"
    """The verified client certificate names more than one device serial."""
    DEVICE_CERTIFICATE_REVOKED = "device-certificate-revoked"
    """The client certificate was issued by Gatehouse's device CA and has been revoked."""
    DEVICE_CERTIFICATE_EXPIRED = "device-certificate-expired"
    """The client certificate's validity ended (or has not begun)."""

    @property
    def public(self) -> str:
        """What a client is told: `missing`, `expired`, `wrong-audience`, `device-certificate-ambiguous` or `invalid`."""
        if self in (AuthReason.MISSING, AuthReason.EXPIRED, AuthReason.WRONG_AUDIENCE, AuthReason.DEVICE_CERTIFICATE_AMBIGUOUS):
            return self.value
        if self is AuthReason.KEYS_UNAVAILABLE:
            return "unavailable"
        return "invalid"


class AuthenticationError(GatewayError, PermissionError):
    """No verified user identity; becomes 401 (or a login redirect for browsers)."""

    status = 401
    code = "unauthenticated"

    def __init__(self, reason: AuthReason, *, login: bool = False) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.login = login
        """True when a browser should be sent to the OpenID Connect login instead of a 401."""
        if reason is AuthReason.KEYS_UNAVAILABLE:
            self.status = 503


class AmbiguousDeviceCertificate(AuthenticationError):
    """A verified client certificate names several serials (SAN URIs, subject CN); refused with 401, never resolved by precedence."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__(AuthReason.DEVICE_CERTIFICATE_AMBIGUOUS)
        self.names = names
        """Every distinct serial the certificate names, SAN URIs first."""


class DeviceCertificateRefused(AuthenticationError):
    """The client certificate is revoked or outside its validity; refused with 403 and how to enroll again, never ignored."""

    status = 403

    def __init__(self, reason: AuthReason, *, at: datetime, fingerprint: str | None = None) -> None:
        super().__init__(reason)
        self.at = at
        """When it was revoked, or when its validity ended (began, for one not yet valid)."""
        self.fingerprint = fingerprint


class LoginFailure(StrEnum):
    """Why a browser's OpenID Connect login did not finish; a closed set shown on the sign-in page and logged."""

    CANCELLED = "cancelled"
    """The provider answered `error=access_denied`: the user (or the provider) said no."""
    PROVIDER_ERROR = "provider-error"
    """The provider answered the login with another error code."""
    STALE = "stale"
    """The callback belongs to no login in progress in this browser: old, used already, or forged."""
    REJECTED = "rejected"
    """The provider's token endpoint refused the code (wrong client secret, a code used twice)."""
    UNVERIFIED = "unverified"
    """The provider's answer failed Gatehouse's checks (ID token, issuer, nonce) or cannot be kept."""
    UNAVAILABLE = "unavailable"
    """The provider could not be reached."""


class LoginFailed(AuthenticationError):
    """A login through the OpenID provider failed; `failure` says how (503 when the provider is unreachable)."""

    def __init__(self, failure: LoginFailure) -> None:
        super().__init__(AuthReason.KEYS_UNAVAILABLE if failure is LoginFailure.UNAVAILABLE else AuthReason.LOGIN_FAILED)
        self.failure = failure


class DeviceAssertionError(ValueError):
    """A device assertion failed verification; the device is then unknown (never a 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyFileError(ValueError):
    """A key file could not be read or holds no usable key."""
