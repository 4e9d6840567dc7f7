"""Verifying a JWT into an Identity: signature, algorithm allow-list, issuer, audience, times, claims.

Owns: verify_token, verify_claims_time, VerifiedTokenCache, ClaimNames use, safe_claim_text.
Must not import: aiohttp (no network here: keys are passed in).

Rules, in order: size before parsing; `alg` must be on the allow-list (never `none`); tokens carrying
`jku`, `x5u`, `jwk` or `x5c` are refused (keys come from configuration only); `kid` is only a lookup key
in our key set; `iss`, `aud`, `exp` are required; `nbf` and `iat` are honoured with a leeway; subject and
email must be non-empty; no used claim may hold control characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import jwt

from gateway.identity.errors import AuthenticationError, AuthReason
from gateway.identity.jwks import KeySet
from gateway.identity.model import Identity, UserSourceKind

_JWS_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_REFUSED_HEADERS = ("jku", "x5u", "jwk", "x5c")
MAX_GROUPS = 256
MAX_TIMESTAMP = 32503680000  # year 3000: anything later is not a real expiry
MAX_CLAIM_CHARS = 1024


@dataclass(frozen=True, slots=True)
class ClaimNames:
    """Which claims hold subject, email, groups and device serial."""

    subject: str = "sub"
    email: str = "email"
    groups: str | None = "groups"
    device_serial: str | None = None


class UnknownKeyId(Exception):
    """The token's `kid` is not in the key set; the caller may refetch keys (rate-limited) and retry."""

    def __init__(self, kid: str) -> None:
        super().__init__(kid)
        self.kid = kid


def safe_claim_text(value: object) -> str | None:
    """The value if it is a non-empty string without control characters and of sane length, else None."""
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_CHARS or _UNSAFE.search(value):
        return None
    return value


def _numeric(claims: Mapping[str, object], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value < MAX_TIMESTAMP:
        raise AuthenticationError(AuthReason.INVALID)
    return float(value)


def check_times(claims: Mapping[str, object], *, now: datetime, leeway_s: float) -> datetime:
    """Check `exp` (required), `nbf` and `iat` against `now`; return the expiry.

    Raises:
        AuthenticationError: expired, not yet valid, issued in the future or malformed.
    """
    ts = now.timestamp()
    exp = _numeric(claims, "exp")
    if exp is None:
        raise AuthenticationError(AuthReason.INVALID)
    if ts >= exp + leeway_s:
        raise AuthenticationError(AuthReason.EXPIRED)
    nbf = _numeric(claims, "nbf")
    if nbf is not None and ts + leeway_s < nbf:
        raise AuthenticationError(AuthReason.NOT_YET_VALID)
    iat = _numeric(claims, "iat")
    if iat is not None and ts + leeway_s < iat:
        raise AuthenticationError(AuthReason.NOT_YET_VALID)
    return datetime.fromtimestamp(exp, tz=UTC)


def decode_verified(
    raw: str,
    keys: KeySet,
    *,
    algorithms: tuple[str, ...],
    issuers: tuple[str, ...] | None,
    audiences: tuple[str, ...] | None,
    max_bytes: int,
    required: tuple[str, ...] = ("exp", "iss", "aud"),
) -> dict[str, object]:
    """Check size, header and signature (plus `iss`/`aud`) and return the claims; times are not checked here.

    Raises:
        AuthenticationError: any failure, with a closed-set reason.
        UnknownKeyId: the token names a key id the key set does not hold.
    """
    if not raw:
        raise AuthenticationError(AuthReason.MISSING)
    if len(raw) > max_bytes:
        raise AuthenticationError(AuthReason.TOO_LARGE)
    if not _JWS_COMPACT.fullmatch(raw):
        raise AuthenticationError(AuthReason.INVALID)
    try:
        header = jwt.get_unverified_header(raw)
    except jwt.PyJWTError:
        raise AuthenticationError(AuthReason.INVALID) from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none" or alg not in algorithms:
        raise AuthenticationError(AuthReason.INVALID)
    if any(name in header for name in _REFUSED_HEADERS) or "crit" in header:
        raise AuthenticationError(AuthReason.INVALID)
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
        raise AuthenticationError(AuthReason.INVALID)
    candidates = keys.find(kid, alg)
    if not candidates:
        if kid is not None and not alg.startswith("HS"):
            raise UnknownKeyId(kid)
        raise AuthenticationError(AuthReason.UNKNOWN_KEY)
    options = {
        "require": list(required),
        "verify_exp": False, "verify_nbf": False, "verify_iat": False,  # checked against the injected clock
        "verify_aud": audiences is not None, "verify_iss": issuers is not None,
    }
    last: AuthReason = AuthReason.INVALID
    for key in candidates:
        try:
            claims = jwt.decode(
                raw, key, algorithms=[alg], audience=list(audiences) if audiences else None,
                issuer=list(issuers) if issuers else None, options=options,  # type: ignore[arg-type]
            )
        except jwt.InvalidSignatureError:
            last = AuthReason.INVALID
            continue
        except jwt.InvalidAudienceError:
            raise AuthenticationError(AuthReason.WRONG_AUDIENCE) from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError(AuthReason.WRONG_ISSUER) from None
        except jwt.PyJWTError:
            raise AuthenticationError(AuthReason.INVALID) from None
        return claims
    raise AuthenticationError(last)


def identity_from_claims(
    claims: Mapping[str, object], *, names: ClaimNames, source: UserSourceKind, expires_at: datetime
) -> Identity:
    """Pick the needed claims out of verified claims.

    Raises:
        AuthenticationError: subject or email empty or unsafe, groups malformed.
    """
    subject = safe_claim_text(claims.get(names.subject))
    email = safe_claim_text(claims.get(names.email))
    issuer = safe_claim_text(claims.get("iss"))
    if subject is None or email is None or issuer is None:
        raise AuthenticationError(AuthReason.BAD_CLAIMS)
    groups: tuple[str, ...] = ()
    if names.groups is not None:
        raw_groups = claims.get(names.groups)
        if isinstance(raw_groups, str):
            raw_groups = [raw_groups]
        if raw_groups is not None:
            if not isinstance(raw_groups, list) or len(raw_groups) > MAX_GROUPS:
                raise AuthenticationError(AuthReason.BAD_CLAIMS)
            checked = [safe_claim_text(g) for g in raw_groups]
            if any(g is None for g in checked):
                raise AuthenticationError(AuthReason.BAD_CLAIMS)
            groups = tuple(dict.fromkeys(g for g in checked if g is not None))
    serial: str | None = None
    if names.device_serial is not None and claims.get(names.device_serial) is not None:
        serial = safe_claim_text(claims.get(names.device_serial))
        if serial is None:
            raise AuthenticationError(AuthReason.BAD_CLAIMS)
    return Identity(subject, email, groups, issuer, source, expires_at, serial)


def verify_token(
    raw: str,
    keys: KeySet,
    *,
    now: datetime,
    issuers: tuple[str, ...],
    audiences: tuple[str, ...],
    algorithms: tuple[str, ...],
    leeway_s: float = 30.0,
    claim_names: ClaimNames = ClaimNames(),
    max_bytes: int = 8192,
    source: UserSourceKind = "bearer",
) -> Identity:
    """Verify a JWT with the given keys and return who it names; no network.

    Raises:
        AuthenticationError: the token is not acceptable (reason from a closed set).
        UnknownKeyId: the token's `kid` is not among `keys` (refetch, then call again).
    """
    claims = decode_verified(raw, keys, algorithms=algorithms, issuers=issuers, audiences=audiences, max_bytes=max_bytes)
    expires_at = check_times(claims, now=now, leeway_s=leeway_s)
    return identity_from_claims(claims, names=claim_names, source=source, expires_at=expires_at)


class VerifiedTokenCache:
    """Verified identities by raw token, bounded, each entry expiring with its token.

    A plain dict keyed by the token string itself (no digest per request): an entry holds the scope
    it was verified for, the instant it stops being served (expiry plus leeway) and the identity.
    A full cache drops its oldest entry to admit a new one; an expired entry is dropped when met.
    """

    __slots__ = ("_entries", "_leeway", "_maxsize")

    def __init__(self, maxsize: int, *, leeway_s: float = 0.0) -> None:
        self._maxsize = maxsize
        self._leeway = leeway_s
        self._entries: dict[str, tuple[str, float, Identity]] = {}

    def get(self, raw: str, *, scope: str, source: UserSourceKind, now: datetime) -> Identity | None:
        """The identity verified earlier for this exact token, if it has not expired."""
        entry = self._entries.get(raw)
        if entry is None:
            return None
        entry_scope, until, found = entry
        if entry_scope != scope:
            return None
        if now.timestamp() >= until:
            self._entries.pop(raw, None)
            return None
        return found if found.source == source else replace(found, source=source)

    def put(self, raw: str, identity: Identity, *, scope: str, now: datetime) -> None:
        if self._maxsize <= 0:
            return
        until = identity.expires_at.timestamp() + self._leeway
        if now.timestamp() >= until:
            return
        entries = self._entries
        entries.pop(raw, None)
        while len(entries) >= self._maxsize:  # INVARIANT: never more than maxsize entries
            del entries[next(iter(entries))]
        entries[raw] = (scope, until, identity)

    def __len__(self) -> int:
        return len(self._entries)
