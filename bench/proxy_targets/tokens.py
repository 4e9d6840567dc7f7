"""The benchmark's identity provider: one ES256 key pair and the user tokens it signs.

Owns: BenchKeys, make_keys, mint_token, ISSUER, AUDIENCE, KID, DEVICE_CLAIM.
Must not import: gateway.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://idp.bench.gatehouse.invalid"
AUDIENCE = "gatehouse-bench"
KID = "bench-1"
DEVICE_CLAIM = "device_serial"


@dataclass(frozen=True, slots=True)
class BenchKeys:
    """Where the key pair was written: private PEM, public PEM and public JWKS."""

    private_pem: Path
    public_pem: Path
    jwks: Path


def make_keys(directory: Path) -> BenchKeys:
    """Generate a P-256 key pair and write it under ``directory`` as PEM files and a JWKS."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = directory / "bench-signing-key.pem"
    private_pem.touch(mode=0o600)
    private_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public_pem = directory / "bench-public-key.pem"
    public_pem.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": KID, "alg": "ES256", "use": "sig"})
    jwks = directory / "bench-jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}, indent=2), encoding="utf-8")
    return BenchKeys(private_pem=private_pem, public_pem=public_pem, jwks=jwks)


def mint_token(
    keys: BenchKeys,
    *,
    user: str,
    device: str | None,
    lifetime_s: int = 3600,
    now: float | None = None,
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    groups: tuple[str, ...] = ("engineering",),
) -> str:
    """An ES256 user token for ``user``, carrying the device serial claim when given."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "iss": issuer,
        "aud": audience,
        "sub": user,
        "email": user,
        "groups": list(groups),
        "iat": issued,
        "nbf": issued - 5,
        "exp": issued + lifetime_s,
    }
    if device is not None:
        claims[DEVICE_CLAIM] = device
    return jwt.encode(claims, keys.private_pem.read_bytes(), algorithm="ES256", headers={"kid": KID})
