"""A demo stand-in for a Fleet server, started by `make run` so the demo can show a pull connector.

Owns: DemoHost, DEMO_FLEET_HOSTS, DEMO_FLEET_POLICY_MAP, DEMO_FLEET_TOKEN, demo_fleet_app.
Must not import: tests, gateway.app, gateway.cli.demo (which imports this). Nothing outside the demo uses it.

THIS IS NOT FLEET. It answers the handful of requests Gatehouse's Fleet connector makes
(gateway/ingest/connectors/fleet.py), shaped as Fleet's REST API reference documents them
("List hosts" with ``order_key=id``/``after``/``per_page``, "Get host by identifier", "Refetch host",
"Get host's device mapping"), for two made-up Macs. Fleet itself cannot run inside the demo; the
connector is tested against recorded Fleet answers in tests/gateway/ingest/connectors/.

Each host's details are dated five minutes before the request (whole minutes), as if the hosts'
agents kept checking in; a refetch is accepted and changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web


@dataclass(frozen=True, slots=True)
class DemoHost:
    """A made-up Mac the demo Fleet server reports."""

    serial: str
    owner: str
    story: str
    encrypted: bool


DEMO_FLEET_TOKEN = "demo-fleet-token-not-for-production"
DEMO_FLEET_HOSTS: tuple[DemoHost, ...] = (
    DemoHost("C02DEMOFLEET1", "erin@example.com", "healthy MacBook, reported by the demo Fleet server", encrypted=True),
    DemoHost("C02DEMOFLEET2", "erin@example.com", "MacBook the demo Fleet server reports with FileVault off", encrypted=False),
)
DEMO_FLEET_POLICY_MAP = {
    "Firewall enabled": "firewall_enabled",
    "Screen lock enabled": "screen_lock_enabled",
    "Automatic updates enabled": "auto_updates_enabled",
    "System Integrity Protection enabled": "sip_enabled",
    "Gatekeeper enabled": "gatekeeper_enabled",
}
"""The demo's Fleet policy names -> Gatehouse facts (``policy_map`` in the demo's configuration)."""


def _host(number: int, device: DemoHost, *, now: datetime) -> dict[str, object]:
    """One host as Fleet's "List hosts" item (with ``populate_policies`` and ``device_mapping``)."""
    updated = (now - timedelta(minutes=5)).replace(second=0, microsecond=0).isoformat().replace("+00:00", "Z")
    name = f"erin-mbp-{number}"
    return {
        "id": number, "hardware_serial": device.serial, "hostname": name, "computer_name": name, "display_name": name,
        "platform": "darwin", "platform_like": "darwin", "os_version": "macOS 15.1", "build": "24B83",
        "osquery_version": "5.23.0", "status": "online", "detail_updated_at": updated, "seen_time": updated,
        "disk_encryption_enabled": device.encrypted, "refetch_requested": False,
        "policies": [{"id": i, "name": policy, "response": "pass", "critical": False}
                     for i, policy in enumerate(DEMO_FLEET_POLICY_MAP, start=1)],
        "device_mapping": [{"email": device.owner, "source": "custom"}],
    }


def demo_fleet_app(now: Callable[[], datetime]) -> web.Application:
    """The demo's Fleet-shaped server: the demo hosts to whoever sends ``DEMO_FLEET_TOKEN``."""

    def hosts() -> list[dict[str, object]]:
        moment = now()
        return [_host(n, d, now=moment) for n, d in enumerate(DEMO_FLEET_HOSTS, start=1)]

    @web.middleware
    async def token(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {DEMO_FLEET_TOKEN}":
            return web.json_response({"message": "Authentication required"}, status=401)
        return await handler(request)

    def one(request: web.Request, key: str, value: str) -> dict[str, object]:
        found = [h for h in hosts() if str(h[key]) == value]
        if not found:
            raise web.HTTPNotFound(text='{"message": "Resource Not Found"}', content_type="application/json")
        return found[0]

    async def list_hosts(request: web.Request) -> web.Response:
        after = int(request.query.get("after") or 0)
        per_page = int(request.query.get("per_page") or 100)
        return web.json_response({"hosts": [h for h in hosts() if int(h["id"]) > after][:per_page]})  # type: ignore[call-overload]

    async def by_identifier(request: web.Request) -> web.Response:
        return web.json_response({"host": one(request, "hardware_serial", request.match_info["identifier"])})

    async def refetch(request: web.Request) -> web.Response:
        one(request, "id", request.match_info["id"])
        return web.json_response({})

    async def device_mapping(request: web.Request) -> web.Response:
        host = one(request, "id", request.match_info["id"])
        return web.json_response({"host_id": host["id"], "device_mapping": host["device_mapping"]})

    app = web.Application(middlewares=[token])
    app.router.add_get("/api/v1/fleet/hosts", list_hosts)
    app.router.add_get("/api/v1/fleet/hosts/identifier/{identifier}", by_identifier)
    app.router.add_post("/api/v1/fleet/hosts/{id}/refetch", refetch)
    app.router.add_get("/api/v1/fleet/hosts/{id}/device_mapping", device_mapping)
    return app


__all__ = ["DEMO_FLEET_HOSTS", "DemoHost", "DEMO_FLEET_POLICY_MAP", "DEMO_FLEET_TOKEN", "demo_fleet_app"]
