"""Shared helpers for the identity tests: keys, token minting, a fake clock, the small test app."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from prometheus_client import CollectorRegistry

from gateway.identity import (
    AuthenticationError, IdentitySettings, PostureSummary, add_identity_routes, identity_cleanup_ctx,
)
from gateway.keys import IDENTITY
from gateway.metrics import Metrics
from tests.conftest import NOW

ISSUER = "https://idp.example.test"
AUDIENCE = "gatehouse-tests"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass
class FakeClock:
    """A clock the test moves by hand."""

    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@functools.cache
def rsa_key(name: str = "main") -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(name: str = "main") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@functools.cache
def ed_key(name: str = "main") -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    """The public JWK of a private key, tagged with `kid`."""
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def claims(now: datetime = NOW, **overrides: Any) -> dict[str, Any]:
    """Valid user-token claims at `now`; pass a value of None to drop a claim."""
    base: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "email": "alice@corp.example", "groups": ["staff"],
        "iat": int(now.timestamp()), "nbf": int(now.timestamp()), "exp": int((now + timedelta(minutes=10)).timestamp()),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(key: PrivateKey | bytes | None = None, *, alg: str = "RS256", kid: str | None = "k1",
         headers: dict[str, Any] | None = None, **overrides: Any) -> str:
    """A signed user token (RSA key `main` by default) with the given claim overrides."""
    signing = rsa_key() if key is None else key
    extra = dict(headers or {})
    if kid is not None:
        extra["kid"] = kid
    return jwt.encode(claims(**overrides), signing, algorithm=alg, headers=extra)


def write_jwks(path: Path, *entries: tuple[PrivateKey, str]) -> Path:
    import orjson

    path.write_bytes(orjson.dumps({"keys": [public_jwk(k, kid) for k, kid in entries]}))
    return path


def jwt_section(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"issuers": [ISSUER], "audiences": [AUDIENCE]}
    base.update(overrides)
    return base


def settings(raw: dict[str, Any], base_dir: Path | None = None) -> IdentitySettings:
    context: dict[str, Any] = {"environ": {}}
    if base_dir is not None:
        context["base_dir"] = base_dir
    return IdentitySettings.model_validate(raw, context=context)


@dataclass
class Built:
    app: web.Application
    clock: FakeClock
    registry: CollectorRegistry
    metrics: Metrics
    posture: PostureSummary | None = field(default=None)


def build_app(identity: IdentitySettings, clock: FakeClock | None = None) -> Built:
    """A small app whose catch-all handler uses the resolver as the gateway will."""
    clock = clock or FakeClock()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    app = web.Application()
    app.cleanup_ctx.append(identity_cleanup_ctx(identity, clock=clock, metrics=metrics))
    add_identity_routes(app)
    built = Built(app, clock, registry, metrics)

    async def whoami(request: web.Request) -> web.StreamResponse:
        resolver = request.app[IDENTITY]
        try:
            user = await resolver.authenticate(request)
        except AuthenticationError as exc:
            return await resolver.challenge(request, exc)
        device = resolver.device(request, user)
        upstream = resolver.upstream_headers(user, device, built.posture)
        return web.json_response({
            "subject": user.subject, "email": user.email, "groups": list(user.groups), "source": user.source,
            "device": None if device is None else {"serial": device.serial, "source": device.source},
            "headers": upstream,
            "stripped": sorted(name for name in request.headers if resolver.should_strip(name)),
        })

    app.router.add_route("*", "/{tail:.*}", whoami)
    return built
