"""The demo `make run` starts: its configuration is valid and its fleet gets the decisions the README shows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import create_app
from gateway.cli.demo import DEMO_DEVICES, DemoAgent, mint_demo_token, demo_upstream_app, snapshot_item, write_demo_files
from gateway.cli.demo_history import seed_demo_history
from gateway.cli.demo_fleet import DEMO_FLEET_HOSTS, demo_fleet_app
from gateway.keys import CONNECTORS, SNAPSHOT_CACHE
from gateway.config.settings import load_settings
from tests.gateway.fullstack import MovableClock

EXPECTED = {  # serial → (status on /wiki/ (medium), status on /admin/ (high), denied reason)
    "C02DEMOMAC1": (200, 200, None),
    "PF3DEMOLNX1": (200, 200, None),
    "5CG3DEMOWIN1": (200, 200, None),
    "C02DEMOOLD1": (403, 403, "checks-failed"),
    "C02DEMONOFW": (200, 200, None),
    "PF3DEMONOLUKS": (403, 403, "checks-failed"),
    "5CG3DEMOSTALE": (403, 403, "snapshot-stale"),
}


@pytest.fixture
async def demo(tmp_path: Path, aiohttp_client: Any, aiohttp_server: Any) -> Any:
    upstream = await aiohttp_server(demo_upstream_app())
    clock = MovableClock()
    fleet = await aiohttp_server(demo_fleet_app(clock))
    config = write_demo_files(tmp_path, upstream=str(upstream.make_url("")).rstrip("/"), fleet=str(fleet.make_url("")).rstrip("/"))
    settings = load_settings(config, {})
    settings = settings.model_copy(update={"metrics": settings.metrics.model_copy(update={"address": None})})
    await seed_demo_history(settings, now=clock())  # as run_demo does before it serves
    client = await aiohttp_client(create_app(settings, clock=clock))
    async with aiohttp.ClientSession() as session:
        await DemoAgent(str(client.make_url("")).rstrip("/"), now=clock).seed(session)
    return client, tmp_path, clock


async def test_every_demo_device_gets_the_documented_decision(demo: Any) -> None:
    """Each demo device is allowed or denied, per tier, exactly as the README's table says."""
    client, var, clock = demo
    seen = {}

    for device in DEMO_DEVICES:
        headers = {"Authorization": f"Bearer {mint_demo_token(var, user=device.owner, device=device.serial, now=clock())}"}
        wiki = await client.get("/wiki/", headers=headers)
        admin = await client.get("/admin/", headers=headers)
        seen[device.serial] = (wiki.status, admin.status, admin.headers.get("X-Gatehouse-Denied-Reason"))

    assert EXPECTED == seen


async def test_old_mac_is_told_its_version_and_the_required_one(demo: Any) -> None:
    """The old Mac's denial says the README's sentence: actual version, required version."""
    client, var, clock = demo
    headers = {"Authorization": f"Bearer {mint_demo_token(var, user='alice@example.com', device='C02DEMOOLD1', now=clock())}"}

    body = await (await client.get("/wiki/", headers=headers)).json()

    assert ["Your macOS is 13.2.1; this service needs at least 14.4"] == [f["message"] for f in body["failing"]]


async def test_demo_agent_refresh_keeps_a_posted_fix(demo: Any) -> None:
    """The demo agents re-report each device's latest state, so a fix posted by hand stays fixed."""
    client, var, clock = demo
    base = str(client.make_url("")).rstrip("/")
    agent = DemoAgent(base, now=clock)
    cache = client.server.app[SNAPSHOT_CACHE]
    async with aiohttp.ClientSession() as session:
        clock.advance(timedelta(minutes=1))
        item = snapshot_item(cache.get("PF3DEMONOLUKS"), collected_at=clock())
        item["disk_encrypted"] = True
        await agent.post(session, [item])
        clock.advance(timedelta(minutes=1))
        await agent.refresh(session, cache.get)
    headers = {"Authorization": f"Bearer {mint_demo_token(var, user='bob@example.com', device='PF3DEMONOLUKS', now=clock())}"}

    response = await client.get("/admin/", headers=headers)

    assert (200, True, clock()) == (response.status, cache.get("PF3DEMONOLUKS").disk_encrypted, cache.get("PF3DEMONOLUKS").collected_at)


async def test_the_demo_fleet_server_feeds_its_macs_through_the_connector(demo: Any) -> None:
    """The demo's Fleet connector stores both demo Fleet Macs: the healthy one opens the wiki, the other is told Fleet's view."""
    client, var, clock = demo
    assert "success" == await client.server.app[CONNECTORS]["demo-fleet"].sync_once()
    seen = {}

    for host in DEMO_FLEET_HOSTS:
        headers = {"Authorization": f"Bearer {mint_demo_token(var, user=host.owner, device=host.serial, now=clock())}"}
        wiki = await client.get("/wiki/", headers=headers)
        seen[host.serial] = (wiki.status, wiki.headers.get("X-Gatehouse-Denied-Reason"))
    denied = await (await client.get("/wiki/", headers={
        "Authorization": f"Bearer {mint_demo_token(var, user='erin@example.com', device='C02DEMOFLEET2', now=clock())}"})).json()

    assert {"C02DEMOFLEET1": (200, None), "C02DEMOFLEET2": (403, "checks-failed")} == seen
    assert "Fleet, from 5 minutes ago" == denied["device"]["reported_by"]
    assert ["disk_encryption"] == [f["check"] for f in denied["failing"]]
    assert ("erin@example.com",) == client.server.app[SNAPSHOT_CACHE].inventory("C02DEMOFLEET2").owners
