"""The demo that `make run` starts: a demo signing key, demo devices and a demo upstream service.

Owns: demo key generation under the demo's var directory, demo token minting, the demo fleet, the
demo upstream app. Nothing here is used by a non-demo configuration: the demo identity settings
point at the demo key's JWKS file only when the configuration says ``demo: true``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from policy_engine import DeviceSnapshot, OsFamily, Version

DEMO_ISSUER = "https://demo-idp.gatehouse.invalid"
DEMO_AUDIENCE = "gatehouse-demo"
DEMO_KID = "gatehouse-demo-1"
DEMO_KEY_FILE = "demo-user-signing-key.pem"
DEMO_JWKS_FILE = "demo-user-jwks.json"
DEVICE_CLAIM = "device_serial"


@dataclass(frozen=True, slots=True)
class DemoDevice:
    """A demo device: its serial, what it shows, and how to build its snapshot."""

    serial: str
    owner: str
    story: str


DEMO_DEVICES: tuple[DemoDevice, ...] = (
    DemoDevice("C02DEMOMAC1", "alice@example.com", "healthy MacBook (macOS 15.1)"),
    DemoDevice("PF3DEMOLNX1", "bob@example.com", "healthy Ubuntu 24.04 laptop"),
    DemoDevice("5CG3DEMOWIN1", "carol@example.com", "healthy Windows 11 laptop"),
    DemoDevice("C02DEMOOLD1", "alice@example.com", "MacBook on macOS 13.2.1 (too old)"),
    DemoDevice("C02DEMONOFW", "dave@example.com", "MacBook with the firewall off"),
    DemoDevice("PF3DEMONOLUKS", "bob@example.com", "Linux laptop with an unencrypted disk"),
    DemoDevice("5CG3DEMOSTALE", "carol@example.com", "Windows laptop not heard from for 3 days"),
)


def ensure_demo_key(var: Path) -> Path:
    """Create the demo-only ES256 user-token key and its public JWKS under ``var`` if missing."""
    var.mkdir(parents=True, exist_ok=True)
    key_path = var / DEMO_KEY_FILE
    if not key_path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        key_path.touch(mode=0o600)
        key_path.write_bytes(pem)
    private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    jwk = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": DEMO_KID, "alg": "ES256", "use": "sig"})
    (var / DEMO_JWKS_FILE).write_bytes(orjson.dumps({"keys": [jwk]}, option=orjson.OPT_INDENT_2))
    return key_path


def mint_demo_token(var: Path, *, user: str, device: str | None, now: datetime, lifetime: timedelta = timedelta(hours=12), groups: tuple[str, ...] = ()) -> str:
    """A user JWT signed by the demo key, carrying the device serial claim.

    Raises:
        FileNotFoundError: the demo key does not exist yet; `make run` creates it.
    """
    key_path = var / DEMO_KEY_FILE
    if not key_path.exists():
        raise FileNotFoundError(f"no demo key at `{key_path}`; start the demo once with `make run`")
    claims: dict[str, object] = {
        "iss": DEMO_ISSUER,
        "aud": DEMO_AUDIENCE,
        "sub": user,
        "email": user,
        "groups": list(groups),
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
    }
    if device:
        claims[DEVICE_CLAIM] = device
    return jwt.encode(claims, key_path.read_bytes(), algorithm="ES256", headers={"kid": DEMO_KID})


def demo_snapshots(now: datetime) -> list[DeviceSnapshot]:
    """The demo fleet as it looks at ``now``: one healthy device per platform, several failing."""
    fresh = now - timedelta(minutes=2)

    def mac(serial: str, owner: str, version: str, **facts: object) -> DeviceSnapshot:
        base: dict[str, object] = dict(
            firewall_enabled=True, disk_encrypted=True, screen_lock_enabled=True, screen_lock_delay_s=300,
            remote_login_enabled=False, auto_updates_enabled=True, sip_enabled=True, gatekeeper_enabled=True,
        )
        base.update(facts)
        return DeviceSnapshot(
            serial=serial, platform=OsFamily.DARWIN, os_name="macOS", os_version=Version.parse(version),
            collected_at=fresh, received_at=fresh, source="demo", hostname=f"{owner.split('@')[0]}-mbp",
            owners=(owner,), agent_name="osquery", agent_version=Version.parse("5.23.0"), **base,  # type: ignore[arg-type]
        )

    linux_facts = dict(firewall_enabled=True, screen_lock_enabled=True, screen_lock_delay_s=300, remote_login_enabled=False, auto_updates_enabled=True)
    return [
        mac("C02DEMOMAC1", "alice@example.com", "15.1"),
        DeviceSnapshot(
            serial="PF3DEMOLNX1", platform=OsFamily.LINUX, os_name="Ubuntu", os_version=Version.parse("24.04"),
            distribution="ubuntu", collected_at=fresh, received_at=fresh, source="demo", hostname="bob-thinkpad",
            owners=("bob@example.com",), agent_name="osquery", agent_version=Version.parse("5.23.0"),
            disk_encrypted=True, **linux_facts,  # type: ignore[arg-type]
        ),
        DeviceSnapshot(
            serial="5CG3DEMOWIN1", platform=OsFamily.WINDOWS, os_name="Windows 11 Pro", os_version=Version.parse("10.0.26100"),
            collected_at=fresh, received_at=fresh, source="demo", hostname="carol-laptop", owners=("carol@example.com",),
            agent_name="osquery", agent_version=Version.parse("5.23.0"), firewall_enabled=True, disk_encrypted=True,
            screen_lock_enabled=True, screen_lock_delay_s=600, remote_login_enabled=False, auto_updates_enabled=True,
        ),
        mac("C02DEMOOLD1", "alice@example.com", "13.2.1"),
        mac("C02DEMONOFW", "dave@example.com", "15.1", firewall_enabled=False),
        DeviceSnapshot(
            serial="PF3DEMONOLUKS", platform=OsFamily.LINUX, os_name="Ubuntu", os_version=Version.parse("24.04"),
            distribution="ubuntu", collected_at=fresh, received_at=fresh, source="demo", hostname="bob-desktop",
            owners=("bob@example.com",), agent_name="osquery", agent_version=Version.parse("5.23.0"),
            disk_encrypted=False, **linux_facts,  # type: ignore[arg-type]
        ),
        DeviceSnapshot(
            serial="5CG3DEMOSTALE", platform=OsFamily.WINDOWS, os_name="Windows 11 Pro", os_version=Version.parse("10.0.26100"),
            collected_at=now - timedelta(days=3), received_at=now - timedelta(days=3), source="demo", hostname="carol-old",
            owners=("carol@example.com",), agent_name="osquery", agent_version=Version.parse("5.23.0"), firewall_enabled=True,
            disk_encrypted=True, screen_lock_enabled=True, screen_lock_delay_s=600, remote_login_enabled=False, auto_updates_enabled=True,
        ),
    ]


async def _demo_service(request: web.Request) -> web.Response:
    who = request.headers.get("X-Gatehouse-Email", "(no verified user)")
    device = request.headers.get("X-Gatehouse-Device-Serial", "(no verified device)")
    body = {
        "service": "demo upstream",
        "path": request.path_qs,
        "user": who,
        "device": device,
        "gatehouse_headers": sorted(k for k in request.headers if k.lower().startswith("x-gatehouse-")),
    }
    return web.json_response(body)


def demo_upstream_app() -> web.Application:
    """The demo's upstream service: echoes the verified identity Gatehouse sent it."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _demo_service)
    return app


def print_next_steps(var: Path, out: object = sys.stdout) -> None:
    """What to try once the demo is up."""
    lines = [
        "",
        "Gatehouse demo is running:",
        "  proxy    http://127.0.0.1:8080   (routes: /public low, /wiki medium, /admin high)",
        "  metrics  http://127.0.0.1:9090/metrics",
        "",
        "Demo devices (serial, owner, state):",
        *(f"  {d.serial:<15} {d.owner:<20} {d.story}" for d in DEMO_DEVICES),
        "",
        "Try it (in another terminal):",
        "  TOKEN=$(.venv/bin/gatehouse demo token --user alice@example.com --device C02DEMOMAC1)",
        '  curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/wiki/',
        "  TOKEN=$(.venv/bin/gatehouse demo token --user alice@example.com --device C02DEMOOLD1)",
        '  curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/admin/',
        "",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), file=out)  # type: ignore[call-overload]
