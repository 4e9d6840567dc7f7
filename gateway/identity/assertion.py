"""What upstreams receive: identity headers and Gatehouse's own signed assertion, plus its published keys.

Owns: SigningKeys, load_signing_keys, jwks_document, sign_assertion, identity_headers, encode_header_value.
Must not import: aiohttp.

Header encoding (documented for upstream authors): every `X-Gatehouse-*` identity value is UTF-8,
percent-encoded (RFC 3986 unreserved characters and `@` `+` `.` `:` left as they are), so decode with
`urllib.parse.unquote`. `X-Gatehouse-Groups` percent-encodes each group and joins them with `,`; a
group named `a,admins` arrives as `a%2Cadmins`, never as two groups. Values with control characters
are refused (the token would have been refused earlier anyway).

`X-Gatehouse-Jwt-Assertion` is an ES256 JWT (5 min by default) with `kid` set to the RFC 7638
thumbprint of the signing key; verify it with the keys at /.well-known/gatehouse/jwks.json.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from hashlib import sha256
from pathlib import Path
from urllib.parse import quote

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from jwt.algorithms import ECAlgorithm

from gateway.identity.errors import KeyFileError
from gateway.identity.model import DeviceId, Identity, PostureSummary

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SAFE = "@+.:-_~"
USER_HEADER = "X-Gatehouse-User"
EMAIL_HEADER = "X-Gatehouse-Email"
GROUPS_HEADER = "X-Gatehouse-Groups"
SERIAL_HEADER = "X-Gatehouse-Device-Serial"
ASSERTION_HEADER = "X-Gatehouse-Jwt-Assertion"


class UnsafeHeaderValue(ValueError):
    """A value with control characters was about to become a header."""


def encode_header_value(value: str) -> str:
    """Percent-encode one identity value for a header.

    Raises:
        UnsafeHeaderValue: the value is empty or holds control characters.
    """
    if not value or _UNSAFE.search(value):
        raise UnsafeHeaderValue("identity value with control characters or empty")
    return quote(value, safe=_SAFE)


def encode_groups(groups: tuple[str, ...]) -> str:
    """Groups as a comma-joined list of percent-encoded items (a comma inside a name is `%2C`)."""
    return ",".join(encode_header_value(g) for g in groups)


def identity_headers(identity: Identity, device: DeviceId | None) -> dict[str, str]:
    """`X-Gatehouse-User`, `-Email`, `-Groups` and `-Device-Serial` for the upstream request.

    Raises:
        UnsafeHeaderValue: a value holds control characters.
    """
    headers = {
        USER_HEADER: encode_header_value(identity.subject),
        EMAIL_HEADER: encode_header_value(identity.email),
        GROUPS_HEADER: encode_groups(identity.groups),
    }
    if device is not None:
        headers[SERIAL_HEADER] = encode_header_value(device.serial)
    return headers


def _thumbprint(public: ec.EllipticCurvePublicKey) -> str:
    jwk = orjson.loads(ECAlgorithm.to_jwk(public))
    canonical = orjson.dumps({"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]})
    return base64.urlsafe_b64encode(sha256(canonical).digest()).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class PublishedKey:
    kid: str
    public: ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """Gatehouse's assertion keys: the first signs, all are published (rotation with a grace period)."""

    signing_kid: str
    signing: ec.EllipticCurvePrivateKey
    published: tuple[PublishedKey, ...]


def _load_ec(path: Path) -> tuple[ec.EllipticCurvePrivateKey | None, ec.EllipticCurvePublicKey]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file `{path}`: {exc.strerror or exc}") from None
    try:
        if b"PRIVATE KEY" in data:
            private = load_pem_private_key(data, password=None)
            public = private.public_key()
        else:
            private, public = None, load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyFileError(f"key file `{path}` is not a PEM key") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise KeyFileError(f"key file `{path}` is not an EC P-256 key; make one with `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt`")
    return private, public  # type: ignore[return-value]


def load_signing_keys(paths: tuple[Path, ...]) -> SigningKeys:
    """Load the assertion keys: the first file must hold a private key; later files may be public only.

    Raises:
        KeyFileError: a file is unreadable or not an EC P-256 key, or the first has no private key.
    """
    if not paths:
        raise KeyFileError("no assertion key files")
    loaded = [_load_ec(p) for p in paths]
    first_private, first_public = loaded[0]
    if first_private is None:
        raise KeyFileError(f"the first assertion key `{paths[0]}` signs and needs its private key")
    published: list[PublishedKey] = []
    for _, public in loaded:
        kid = _thumbprint(public)
        if all(p.kid != kid for p in published):
            published.append(PublishedKey(kid, public))
    return SigningKeys(_thumbprint(first_public), first_private, tuple(published))


def jwks_document(keys: SigningKeys) -> dict[str, list[dict[str, str]]]:
    """The public JWKS served at /.well-known/gatehouse/jwks.json."""
    out = []
    for key in keys.published:
        jwk = orjson.loads(ECAlgorithm.to_jwk(key.public))
        out.append({"kty": "EC", "crv": jwk["crv"], "x": jwk["x"], "y": jwk["y"], "kid": key.kid, "use": "sig", "alg": "ES256"})
    return {"keys": out}


def sign_assertion(
    identity: Identity,
    device: DeviceId | None,
    posture: PostureSummary | None,
    keys: SigningKeys,
    *,
    now: datetime,
    issuer: str = "gatehouse",
    audience: str | None = None,
    lifetime_s: int = 300,
) -> str:
    """A short-lived ES256 JWT telling the upstream who, which device, and what Gatehouse decided."""
    claims: dict[str, object] = {
        "iss": issuer,
        "sub": identity.subject,
        "email": identity.email,
        "groups": list(identity.groups),
        "idp": identity.issuer,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=lifetime_s)).timestamp()),
        "jti": secrets.token_urlsafe(12),
        "device": None if device is None else {"serial": device.serial, "source": device.source},
        "posture": None if posture is None else {
            "tier": posture.tier,
            "decision": posture.decision,
            "snapshot_age_s": posture.snapshot_age_s,
            "failed_checks": list(posture.failed_checks),
            "break_glass": posture.break_glass,
        },
    }
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, keys.signing, algorithm="ES256", headers={"kid": keys.signing_kid, "typ": "JWT"})
