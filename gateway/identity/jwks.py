"""Verification keys: parsed key sets, local key files, and the JWKS cache of the identity provider.

Owns: KeySet, VerifyKey, load_key_file, StaticKeys, JwksCache, the KeySource protocol.
Must not import: app, gateway.gate.admission (aiohttp only for the ClientSession used to fetch).

An unknown `kid` triggers at most one refetch per configured interval, and only one fetch is in
flight at a time, so a flood of tokens with made-up key ids cannot hammer the identity provider.
Keys come only from configuration: a token's `jku`, `x5u`, `jwk` or `x5c` is never followed.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import aiohttp
import jwt
import orjson
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from gateway.identity.errors import KeyFileError

if TYPE_CHECKING:
    from gateway.metrics import Metrics

log = structlog.get_logger(__name__)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey

_FAMILY_BY_ALG = {
    "RS256": "RSA", "RS384": "RSA", "RS512": "RSA", "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
    "ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "EdDSA": "OKP",
}
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)
MAX_JWKS_BYTES = 1 << 20
MAX_KEYS_PER_TOKEN = 8
RETRY_AFTER_FAILURE = timedelta(seconds=10)


def key_family(key: PublicKey) -> str | None:
    """The algorithm family a public key can verify: `RSA`, `P-256`, `P-384`, `P-521` or `OKP`."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA" if key.key_size >= 2048 else None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(key.curve.name)
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return "OKP"
    return None


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """One public verification key; `kid` None means it may verify a token with any key id."""

    kid: str | None
    family: str
    key: PublicKey


@dataclass(frozen=True, slots=True)
class KeySet:
    """An immutable set of public keys, plus an optional HMAC secret used only for HS* algorithms."""

    keys: tuple[VerifyKey, ...] = ()
    hmac_secret: bytes | None = None

    def find(self, kid: str | None, alg: str) -> tuple[PublicKey | bytes, ...]:
        """Keys that may verify a token with this `kid` and `alg`; an exact dictionary lookup, nothing else."""
        if alg.startswith("HS"):
            # INVARIANT: an HMAC key is only ever the configured secret, never a public key.
            return (self.hmac_secret,) if self.hmac_secret is not None else ()
        family = _FAMILY_BY_ALG.get(alg)
        if family is None:
            return ()
        if kid is None:
            # A token without a kid may be checked against every key of its family, a bounded few.
            return tuple(k.key for k in self.keys if k.family == family)[:MAX_KEYS_PER_TOKEN]
        return tuple(k.key for k in self.keys if k.family == family and (k.kid is None or k.kid == kid))[:MAX_KEYS_PER_TOKEN]

    def has_kid(self, kid: str) -> bool:
        return any(k.kid == kid for k in self.keys)

    def merged(self, other: KeySet) -> KeySet:
        return KeySet(self.keys + other.keys, self.hmac_secret or other.hmac_secret)

    @classmethod
    def from_jwks(cls, document: object) -> KeySet:
        """Parse a JWKS document, skipping keys that are symmetric, for encryption, weak or unparseable."""
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWKS document: no `keys` list")
        out: list[VerifyKey] = []
        for entry in document["keys"]:
            if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP") or entry.get("use", "sig") != "sig":
                continue
            public = {k: v for k, v in entry.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth", "x5u", "x5c")}
            try:
                parsed = jwt.PyJWK(public).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                continue
            family = key_family(parsed)
            kid = entry.get("kid")
            if family is None or (kid is not None and not isinstance(kid, str)):
                continue
            out.append(VerifyKey(kid, family, parsed))
        return cls(tuple(out))


def load_key_file(path: Path) -> KeySet:
    """Read a JWKS (JSON) or PEM file (public keys, certificates or private keys, whose public half is used).

    Raises:
        KeyFileError: unreadable, unparseable or no usable key.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file `{path}`: {exc.strerror or exc}") from None
    if data.lstrip().startswith(b"{"):
        try:
            keys = KeySet.from_jwks(orjson.loads(data))
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise KeyFileError(f"key file `{path}` is not a JWKS document: {exc}") from None
    else:
        found: list[VerifyKey] = []
        for match in _PEM_BLOCK.finditer(data):
            block, label = match.group(0), match.group(1)
            key: PublicKeyTypes
            try:
                if label == b"CERTIFICATE":
                    key = x509.load_pem_x509_certificate(block).public_key()
                elif b"PRIVATE" in label:
                    key = load_pem_private_key(block, password=None).public_key()
                else:
                    key = load_pem_public_key(block)
            except (ValueError, TypeError):
                raise KeyFileError(f"key file `{path}` holds a PEM block that is not a key") from None
            family = key_family(key)  # type: ignore[arg-type]
            if family is not None:
                found.append(VerifyKey(None, family, key))  # type: ignore[arg-type]
        keys = KeySet(tuple(found))
    if not keys.keys:
        raise KeyFileError(f"key file `{path}` holds no usable public key (RSA ≥ 2048, EC P-256/384/521, Ed25519/Ed448)")
    return keys


def load_key_files(paths: tuple[Path, ...]) -> KeySet:
    """Merge several key files into one KeySet.

    Raises:
        KeyFileError: any file is unusable.
    """
    out = KeySet()
    for path in paths:
        out = out.merged(load_key_file(path))
    return out


class KeySource(Protocol):
    """Where verify_token's keys come from."""

    async def current(self, *, now: datetime) -> KeySet: ...

    async def refresh_for_unknown_kid(self, kid: str, *, now: datetime) -> KeySet | None:
        """Fresh keys after an unknown `kid`, or None when a refetch is not allowed now."""
        ...


class StaticKeys:
    """Keys from local files or a secret: never refreshed."""

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    async def current(self, *, now: datetime) -> KeySet:
        return self._keys

    async def refresh_for_unknown_kid(self, kid: str, *, now: datetime) -> KeySet | None:
        return None


class KeysUnavailable(Exception):
    """The JWKS could not be fetched and no earlier copy is held."""


class JwksCache:
    """The identity provider's signing keys, fetched with a shared ClientSession and kept for a TTL."""

    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        ttl_s: float = 3600.0,
        unknown_kid_interval_s: float = 60.0,
        timeout_s: float = 5.0,
        extra: KeySet | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._url = url
        self._session = session
        self._ttl = timedelta(seconds=ttl_s)
        self._interval = timedelta(seconds=unknown_kid_interval_s)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._extra = extra or KeySet()
        self._metrics = metrics
        self._keys: KeySet | None = None
        self._fetched_at: datetime | None = None
        self._last_unknown_refetch: datetime | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._retry_at: datetime | None = None

    async def current(self, *, now: datetime) -> KeySet:
        """The cached keys, fetched first if absent or older than the TTL.

        Raises:
            KeysUnavailable: never fetched successfully.
        """
        if self._keys is None and self._retry_at is not None and now < self._retry_at:
            # INVARIANT: while the IdP is down and we hold no keys, requests do not each trigger a fetch.
            raise KeysUnavailable(self._url)
        if self._keys is None or self._fetched_at is None or now - self._fetched_at >= self._ttl:
            await self._refresh(now)
        if self._keys is None:
            raise KeysUnavailable(self._url)
        return self._keys

    async def refresh_for_unknown_kid(self, kid: str, *, now: datetime) -> KeySet | None:
        """Refetch once per interval when a token names a key id we do not hold; None when rate-limited."""
        if self._last_unknown_refetch is not None and now - self._last_unknown_refetch < self._interval:
            return None
        self._last_unknown_refetch = now
        await self._refresh(now)
        return self._keys

    async def _refresh(self, now: datetime) -> None:
        # INVARIANT: at most one fetch in flight; concurrent callers await the same task.
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._fetch(now))
        await asyncio.shield(self._inflight)

    async def _fetch(self, now: datetime) -> None:
        outcome = "error"
        try:
            async with self._session.get(
                self._url, timeout=self._timeout, allow_redirects=False, headers={"Accept": "application/json"}
            ) as resp:
                if resp.status != 200:
                    raise ValueError(f"status {resp.status}")
                body = await resp.content.read(MAX_JWKS_BYTES + 1)
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("document too large")
            keys = KeySet.from_jwks(orjson.loads(body)).merged(self._extra)
            self._keys, self._fetched_at = keys, now
            outcome = "ok"
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, orjson.JSONDecodeError) as exc:
            log.warning("jwks.fetch_failed", url=self._url, error=type(exc).__name__)
            if self._keys is not None:
                # Keep the last good keys and try again one unknown-kid interval from now.
                self._fetched_at = now - self._ttl + self._interval
            else:
                self._retry_at = now + min(self._interval, RETRY_AFTER_FAILURE)
        finally:
            if self._metrics is not None:
                self._metrics.jwks_fetches.labels(outcome=outcome).inc()
