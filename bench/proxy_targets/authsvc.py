"""The JWT-checking service behind nginx's auth_request: what users build instead of Gatehouse.

Owns: TokenCache, create_app and the auth service's command line.
Must not import: gateway.

``GET /verify`` (any path works) reads ``Authorization: Bearer <jwt>``, verifies it with pyjwt
(ES256, issuer, audience, expiry) and answers 200 with ``X-Auth-User`` and ``X-Auth-Device``,
or 401. Verified tokens are cached by their raw text until they expire (bounded; the oldest
entry goes first), so a repeated token costs a dict lookup instead of a signature check, as any
sensible auth_request service does. ``X-Auth-Cache: hit|miss`` tells which path answered.
It checks no device health: the device serial is passed on unverified, as in the setups it stands for.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from proxy_targets.tokens import DEVICE_CLAIM


@dataclass(frozen=True, slots=True)
class Verified:
    """What the service passes on about a verified token, and when it stops being valid."""

    user: str
    device: str
    expires_at: float


@dataclass(slots=True)
class TokenCache:
    """Verified tokens by raw text, bounded; counts signature verifications for the tests."""

    max_entries: int = 10_000
    entries: dict[str, Verified] = field(default_factory=dict)
    verifications: int = 0

    def get(self, token: str, now: float) -> Verified | None:
        hit = self.entries.get(token)
        if hit is not None and hit.expires_at <= now:
            del self.entries[token]
            return None
        return hit

    def put(self, token: str, verified: Verified) -> None:
        if len(self.entries) >= self.max_entries:
            del self.entries[next(iter(self.entries))]
        self.entries[token] = verified


CACHE = web.AppKey("cache", TokenCache)


def create_app(
    public_key_pem: bytes,
    *,
    issuer: str,
    audience: str,
    cache: TokenCache | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The auth service: 200 with the user for a valid bearer token, 401 otherwise."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise TypeError("the auth service verifies ES256 tokens; give it an EC P-256 public key in PEM")
    decoder = jwt.PyJWT(options={"require": ["exp", "iss", "aud", "sub"]})
    token_cache = TokenCache() if cache is None else cache

    async def verify(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return web.Response(status=401, text="unauthorized\n")
        token = header[7:].strip()
        now = clock()
        verified = token_cache.get(token, now)
        state = "hit"
        if verified is None:
            state = "miss"
            token_cache.verifications += 1
            try:
                claims = decoder.decode(token, key, algorithms=["ES256"], issuer=issuer, audience=audience, leeway=30)
            except jwt.InvalidTokenError:
                return web.Response(status=401, text="unauthorized\n", headers={"X-Auth-Cache": state})
            verified = Verified(user=str(claims["sub"]), device=str(claims.get(DEVICE_CLAIM, "")), expires_at=float(claims["exp"]))
            token_cache.put(token, verified)
        return web.Response(
            status=200, headers={"X-Auth-User": verified.user, "X-Auth-Device": verified.device, "X-Auth-Cache": state}
        )

    app = web.Application()
    app[CACHE] = token_cache
    app.router.add_get("/{tail:.*}", verify)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the auth service until SIGTERM."""
    from proxy_targets.serving import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--public-key", type=Path, required=True, help="PEM file of the issuer's public key")
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    args = parser.parse_args(argv)
    app = create_app(args.public_key.read_bytes(), issuer=args.issuer, audience=args.audience)
    serve(app, args.host, args.port)


if __name__ == "__main__":
    main()
