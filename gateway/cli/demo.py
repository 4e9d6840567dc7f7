"""The demo that `make run` starts: a demo signing key, demo devices, a demo upstream service and a demo Fleet server.

Owns: demo key generation under the demo's var directory, demo token minting, the demo fleet, the
demo upstream app, the demo's configuration (with a Fleet connector polling gateway/cli/demo_fleet.py's
stand-in server). The fleet's 90-day past (compliance history, access ledger, break-glass) is
gateway.cli.demo_history's; ``run_demo`` records it (``seed=``) before Gatehouse starts. Nothing here is used by a non-demo configuration: the demo identity settings
point at the demo key's JWKS file only when the configuration says ``demo: true``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import jwt
import orjson
import yaml
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.cli.demo_fleet import DEMO_FLEET_HOSTS, DEMO_FLEET_POLICY_MAP, DEMO_FLEET_TOKEN, demo_fleet_app
from policy_engine import DeviceSnapshot, OsFamily, Version

if TYPE_CHECKING:
    from gateway.config.settings import Settings

DEMO_ISSUER = "https://demo-idp.gatehouse.invalid"
DEMO_AUDIENCE = "gatehouse-demo"
DEMO_KID = "gatehouse-demo-1"
DEMO_KEY_FILE = "demo-user-signing-key.pem"
DEMO_JWKS_FILE = "demo-user-jwks.json"
DEVICE_CLAIM = "device_serial"
DEMO_HISTORY_DAYS = 89
"""Whole days before its first start the demo records (gateway.cli.demo_history); the store keeps 90 days of history."""


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
    DemoDevice("C02DEMONOFW", "dave@example.com", "MacBook with the firewall off (in its 72 h grace period)"),
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
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise ValueError(f"`{key_path}` holds no EC private key; delete it and the demo writes a new one")
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


DEMO_PROXY = ("127.0.0.1", 8080)
DEMO_METRICS = "127.0.0.1:9090"
DEMO_UPSTREAM = ("127.0.0.1", 8081)
DEMO_FLEET = ("127.0.0.1", 8082)
DEMO_INGEST_TOKEN = "demo-ingest-token-not-for-production"
DEMO_ENROLL_SECRET = "demo-osquery-enroll-secret"
DEMO_REPORT_EVERY_S = 60
_POLICY = Path(__file__).resolve().parents[2] / "deploy" / "policy.yaml"


def demo_config(
    var: Path, *, upstream: str = f"http://{DEMO_UPSTREAM[0]}:{DEMO_UPSTREAM[1]}", fleet: str = f"http://{DEMO_FLEET[0]}:{DEMO_FLEET[1]}",
) -> dict[str, object]:
    """The demo's configuration: the demo key for user tokens, the example policy, SQLite under ``var``, a Fleet connector to ``fleet``."""
    var = var.resolve()
    return {
        "demo": True,
        "listeners": [{"address": f"{DEMO_PROXY[0]}:{DEMO_PROXY[1]}"}],
        "metrics": {"address": DEMO_METRICS},
        "store": f"sqlite:///{var / 'gatehouse.db'}",
        "policy": str(_POLICY),
        "logging": {"level": "info", "format": "auto"},
        "routes": [
            {"id": "public", "path_prefix": "/public", "upstream": upstream, "tier": "low"},
            {"id": "wiki", "path_prefix": "/wiki", "upstream": upstream, "tier": "medium"},
            {"id": "admin", "path_prefix": "/admin", "upstream": upstream, "tier": "high"},
        ],
        "identity": {
            "sources": [{"kind": "bearer"}],
            "jwt": {
                "issuers": [DEMO_ISSUER],
                "audiences": [DEMO_AUDIENCE],
                "key_files": [str(var / DEMO_JWKS_FILE)],
                "claims": {"device_serial": DEVICE_CLAIM},
            },
            "device": {"sources": ["claim"]},
            "assertion": {"key_files": [str(var / "demo-assertion-key.pem")]},
        },
        "ingest": {
            "api_tokens": [{"value": DEMO_INGEST_TOKEN}], "osquery_enroll_secrets": [{"value": DEMO_ENROLL_SECRET}],
            # The demo Fleet server is a stand-in (gateway/cli/demo_fleet.py), polled every minute.
            "connectors": [{"kind": "fleet", "name": "demo-fleet", "url": fleet, "api_token": {"value": DEMO_FLEET_TOKEN},
                            "every_s": 60, "stale_after_s": 600, "policy_map": dict(DEMO_FLEET_POLICY_MAP)}],
        },
        "breakglass": {"reviewer_groups": ["security"], "approver_groups": ["security"]},
    }


def write_demo_files(
    var: Path, *, upstream: str = f"http://{DEMO_UPSTREAM[0]}:{DEMO_UPSTREAM[1]}", fleet: str = f"http://{DEMO_FLEET[0]}:{DEMO_FLEET[1]}",
) -> Path:
    """Create the demo keys and configuration under ``var``; returns the configuration file."""
    ensure_demo_key(var)
    assertion = var / "demo-assertion-key.pem"
    if not assertion.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        assertion.touch(mode=0o600)
        assertion.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path = var / "gatehouse-demo.yaml"
    path.write_text(yaml.safe_dump(demo_config(var, upstream=upstream, fleet=fleet), sort_keys=False))
    return path


def snapshot_item(snapshot: DeviceSnapshot, *, collected_at: datetime) -> dict[str, object]:
    """A snapshot as a JSON ingest item, reported again at ``collected_at``."""
    item: dict[str, object] = {
        "serial": snapshot.serial, "collected_at": collected_at.isoformat(), "platform": snapshot.platform.value,
        "os_name": snapshot.os_name, "os_version": snapshot.os_version.text if snapshot.os_version else None,
        "hostname": snapshot.hostname, "owners": list(snapshot.owners), "agent_name": snapshot.agent_name,
        "agent_version": snapshot.agent_version.text if snapshot.agent_version else None,
    }
    if snapshot.distribution:
        item["distribution"] = snapshot.distribution
    for fact in ("firewall_enabled", "disk_encrypted", "screen_lock_enabled", "screen_lock_delay_s", "remote_login_enabled",
                 "auto_updates_enabled", "sip_enabled", "gatekeeper_enabled"):
        item[fact] = getattr(snapshot, fact)
    return item


class DemoAgent:
    """Plays the demo fleet's agents: seeds each device once, then re-reports its latest state.

    Like a real agent it reports through Gatehouse's ingest API. It re-sends whatever state the
    device has now (so a fix you POST yourself sticks), with a fresh collection time; the stale
    demo device is never refreshed.
    """

    def __init__(self, base_url: str, *, now: Callable[[], datetime]) -> None:
        self.base_url = base_url
        self.now = now

    async def post(self, session: aiohttp.ClientSession, items: list[dict[str, object]]) -> None:
        async with session.post(
            f"{self.base_url}/.gatehouse/api/v1/snapshots", json={"snapshots": items},
            headers={"Authorization": f"Bearer {DEMO_INGEST_TOKEN}"},
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"demo ingest answered {response.status}: {await response.text()}")

    async def seed(self, session: aiohttp.ClientSession) -> None:
        # The devices' past (the old Mac's eight days on macOS 13.2.1, past its 7-day grace, among
        # others) is gateway.cli.demo_history's, recorded into the store before Gatehouse starts.
        fleet = demo_snapshots(self.now())
        await self.post(session, [snapshot_item(s, collected_at=s.collected_at) for s in fleet])
        await self.bind_owners(session)

    async def bind_owners(self, session: aiohttp.ClientSession) -> None:
        """Record each demo device's owner in the owner inventory, as an MDM sync would (snapshot owners are not trusted)."""
        owners: dict[str, list[str]] = {}
        for device in DEMO_DEVICES:
            owners.setdefault(device.serial, []).append(device.owner)
        for serial, emails in owners.items():
            async with session.put(
                f"{self.base_url}/.gatehouse/api/v1/devices/{serial}/owners", json={"owners": emails, "set_by": "demo"},
                headers={"Authorization": f"Bearer {DEMO_INGEST_TOKEN}"},
            ) as response:
                if response.status != 200:
                    raise RuntimeError(f"demo owner binding answered {response.status}: {await response.text()}")

    async def refresh(self, session: aiohttp.ClientSession, latest: Callable[[str], DeviceSnapshot | None]) -> None:
        now = self.now()
        items = [
            snapshot_item(snap, collected_at=now)
            for device in DEMO_DEVICES
            if device.serial != "5CG3DEMOSTALE" and (snap := latest(device.serial)) is not None
        ]
        if items:
            await self.post(session, items)


def run_demo(var: Path, *, seed: Callable[[Settings], Awaitable[object]]) -> int:
    """Run the whole demo (blocking): demo upstream, demo Fleet server, Gatehouse, demo fleet; Ctrl-C stops it.

    ``seed(settings)`` runs first: it records the demo's past into the store (the command passes
    ``gateway.cli.demo_history``'s; that module builds on this one, so it comes in as a value).
    """
    from gateway.keys import SNAPSHOT_CACHE
    from gateway.logging import configure_logging
    from gateway.serve.server import Gateway, serve
    from gateway.config.settings import load_settings

    config = write_demo_files(var)
    configure_logging("info", "auto")

    async def main() -> int:
        await seed(load_settings(config))
        upstream = web.AppRunner(demo_upstream_app(), access_log=None)
        await upstream.setup()
        await web.TCPSite(upstream, *DEMO_UPSTREAM).start()
        fleet = web.AppRunner(demo_fleet_app(lambda: datetime.now(UTC)), access_log=None)
        await fleet.setup()
        await web.TCPSite(fleet, *DEMO_FLEET).start()
        tasks: list[asyncio.Task[None]] = []

        def started(gateway: Gateway) -> None:
            async def agent_loop() -> None:
                agent = DemoAgent(f"http://{DEMO_PROXY[0]}:{DEMO_PROXY[1]}", now=lambda: datetime.now(UTC))
                async with aiohttp.ClientSession() as session:
                    await agent.seed(session)
                    print_next_steps(var, today=agent.now().date())
                    while True:
                        await asyncio.sleep(DEMO_REPORT_EVERY_S)  # the agents' reporting interval, not a test wait
                        await agent.refresh(session, gateway.app[SNAPSHOT_CACHE].get)

            tasks.append(asyncio.create_task(agent_loop(), name="demo-agents"))

        try:
            return await serve(lambda: load_settings(config), on_started=started)
        finally:
            for task in tasks:
                task.cancel()
            await fleet.cleanup()
            await upstream.cleanup()

    try:
        return asyncio.run(main())
    except OSError as exc:
        print(f"the demo could not start: {exc}; is something else using ports 8080, 8081, 8082 or 9090?", file=sys.stderr)
        return 1


def print_next_steps(var: Path, *, today: date, out: object = sys.stdout) -> None:
    """What to try once the demo is up (``today`` dates the compliance report's period)."""
    lines = [
        "",
        "Gatehouse demo is running:",
        "  proxy    http://127.0.0.1:8080   (routes: /public low, /wiki medium, /admin high)",
        "  metrics  http://127.0.0.1:9090/metrics",
        "  fleet    http://127.0.0.1:8082   (a demo stand-in for a Fleet server, polled by the connector `demo-fleet`)",
        "",
        "Demo devices (serial, owner, state):",
        *(f"  {d.serial:<15} {d.owner:<20} {d.story}" for d in DEMO_DEVICES),
        *(f"  {h.serial:<15} {h.owner:<20} {h.story}" for h in DEMO_FLEET_HOSTS),
        "",
        "Try it (in another terminal):",
        "  TOKEN=$(.venv/bin/gatehouse demo token --user alice@example.com --device C02DEMOMAC1)",
        '  curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/wiki/',
        "  TOKEN=$(.venv/bin/gatehouse demo token --user alice@example.com --device C02DEMOOLD1)",
        '  curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/wiki/',
        "",
        f"The compliance report over the demo's recorded {DEMO_HISTORY_DAYS} days:",
        f"  .venv/bin/gatehouse report --config {var}/gatehouse-demo.yaml --since {today - timedelta(days=DEMO_HISTORY_DAYS)} "
        "--format html -o report.html",
        "",
        "More in the README's \"Try it\" section. Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), file=out, flush=True)  # type: ignore[call-overload]
