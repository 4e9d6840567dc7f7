"""A whole Gatehouse for tests: keys, settings, a movable clock, user tokens and snapshot ingest.

Used by the end-to-end, browser and multi-replica tests; everything is real (SQLite or PostgreSQL
store, the example policy from deploy/, ES256 tokens verified by the identity code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config.settings import Settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "deploy" / "policy.yaml"
ISSUER = "https://idp.test"
AUDIENCE = "gatehouse-test"
INGEST_TOKEN = "ingest-token-for-tests-0123456789"
START = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)


@dataclass
class MovableClock:
    """A clock tests move by hand; never the wall clock."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def _write_es256(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return key


@dataclass
class Keys:
    """The IdP's signing key (tests mint user tokens with it) and Gatehouse's assertion key."""

    dir: Path
    idp: ec.EllipticCurvePrivateKey = field(init=False)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.idp = _write_es256(self.dir / "idp.pem")
        jwk = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.idp.public_key()))
        jwk.update({"kid": "idp-1", "alg": "ES256", "use": "sig"})
        (self.dir / "idp-jwks.json").write_bytes(orjson.dumps({"keys": [jwk]}))
        _write_es256(self.dir / "assertion.pem")

    def token(self, user: str, *, device: str | None = None, now: datetime, groups: tuple[str, ...] = (), lifetime: timedelta = timedelta(hours=8)) -> str:
        claims: dict[str, Any] = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": user.split("@")[0], "email": user, "groups": list(groups),
            "iat": int(now.timestamp()), "exp": int((now + lifetime).timestamp()),
        }
        if device is not None:
            claims["device_serial"] = device
        return jwt.encode(claims, self.idp, algorithm="ES256", headers={"kid": "idp-1"})


async def catch_all_upstream(aiohttp_server: Any, handle: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> str:
    """A real aiohttp upstream on 127.0.0.1 whose every path is answered by ``handle``; its base URL (no trailing slash)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


def gatehouse_settings(keys: Keys, *, store: str, upstream: str, extra_routes: list[dict[str, Any]] | None = None, **sections: Any) -> Settings:
    """Settings of a full Gatehouse in front of ``upstream``: routes at every tier plus a monitor route."""
    raw = gatehouse_config(keys, store=store, upstream=upstream, extra_routes=extra_routes, **sections)
    return parse_settings(raw, source="test-gatehouse.yaml", base_dir=keys.dir, environ={})


def gatehouse_config(keys: Keys, *, store: str, upstream: str, extra_routes: list[dict[str, Any]] | None = None, **sections: Any) -> dict[str, Any]:
    """The configuration file's content for ``gatehouse_settings`` (to write it for a subprocess)."""
    raw: dict[str, Any] = {
        "listeners": [{"address": "127.0.0.1:0"}],
        "metrics": {"address": None},
        "store": store,
        "policy": str(POLICY),
        "routes": [
            {"id": "public", "path_prefix": "/public", "upstream": upstream, "tier": "low"},
            {"id": "wiki", "path_prefix": "/wiki", "upstream": upstream, "tier": "medium"},
            {"id": "admin", "path_prefix": "/admin", "upstream": upstream, "tier": "high"},
            {"id": "shadow", "path_prefix": "/shadow", "upstream": upstream, "tier": "high", "mode": "monitor"},
            {"id": "owned", "path_prefix": "/owned", "upstream": upstream, "tier": "low", "require_owner": True},
            *(extra_routes or []),
        ],
        "identity": {
            "sources": [{"kind": "bearer"}],
            "jwt": {
                "issuers": [ISSUER], "audiences": [AUDIENCE], "key_files": [str(keys.dir / "idp-jwks.json")],
                "claims": {"device_serial": "device_serial"},
            },
            "device": {"sources": ["claim"]},
            "assertion": {"key_files": [str(keys.dir / "assertion.pem")]},
        },
        "ingest": {"api_tokens": [{"value": INGEST_TOKEN}], "trust_reported_owners": True},  # owners come in the snapshots
        "breakglass": {"reviewer_groups": ["security"], "approver_groups": ["security"]},
    }
    raw.update(sections)
    return raw


def mac_item(serial: str, *, at: datetime, owner: str = "alice@example.com", **facts: Any) -> dict[str, Any]:
    """A JSON-ingest item for a healthy Mac, with ``facts`` overriding."""
    item: dict[str, Any] = {
        "serial": serial, "collected_at": at.isoformat(), "platform": "darwin", "os_name": "macOS",
        "os_version": "15.1", "hostname": f"{serial.lower()}-mbp", "owners": [owner], "agent_name": "osquery",
        "agent_version": "5.23.0", "firewall_enabled": True, "disk_encrypted": True, "screen_lock_enabled": True,
        "screen_lock_delay_s": 300, "remote_login_enabled": False, "auto_updates_enabled": True,
        "sip_enabled": True, "gatekeeper_enabled": True,
    }
    item.update(facts)
    return item


def ingest_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
