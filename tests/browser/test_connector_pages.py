"""A Jamf-Pro-fed Mac in headless Chromium: the denial names Jamf Pro and its inventory age, check again lets it in.

The Jamf Pro contract server (tests/gateway/ingest/connectors/contract.py), a real upstream and a
full Gatehouse polling it listen on 127.0.0.1, the Gatehouse behind the listener ``gatehouse serve``
runs. Screenshots go to artifacts/screenshots/connector-*.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from gateway.app import create_app
from gateway.keys import CONNECTORS
from tests.browser.conftest import screenshot
from tests.gateway.fullstack import Keys, MovableClock
from tests.gateway.ingest.connectors.contract import VendorState, jamf_app
from tests.gateway.ingest.connectors.freshness import JAMF_SERIAL, connector_gatehouse, failing_jamf_computer, fix_jamf_computer
from tests.serving import serve_for_tests

pytestmark = pytest.mark.browser


async def wiki(request: web.Request) -> web.Response:
    return web.Response(text="<!doctype html><html lang=en><title>Intranet</title><h1>Intranet</h1></html>", content_type="text/html")


async def test_the_denial_names_jamf_pro_and_check_again_reads_the_mac_from_it(
    aiohttp_server: AiohttpServer, tmp_path: Path, browser_page: Any,
) -> None:
    """The page says "Jamf Pro, inventory from 3 hours ago" and how Jamf Pro updates; after `jamf recon`, check again opens the page."""
    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", wiki)
    upstream = await aiohttp_server(upstream_app)
    clock = MovableClock()
    computers = [failing_jamf_computer(clock())]
    vendor = await aiohttp_server(jamf_app(VendorState(), computers))
    keys = Keys(tmp_path / "keys")
    settings = connector_gatehouse(keys, tmp_path, kind="jamf", url=str(vendor.make_url("")).rstrip("/"),
                                   upstream=str(upstream.make_url("")).rstrip("/"))
    gatehouse = serve_for_tests(create_app(settings, clock=clock))
    await gatehouse.start_server()
    try:
        assert "success" == await gatehouse.app[CONNECTORS]["macs"].sync_once()
        page = browser_page
        token = keys.token("ana@corp.example", device=JAMF_SERIAL, now=clock())
        await page.context.set_extra_http_headers({"Authorization": f"Bearer {token}"})

        denied = await page.goto(str(gatehouse.make_url("/public/")))
        text = await page.inner_text("main")
        await screenshot(page, "connector-deny")

        assert 403 == denied.status
        assert "Reported by\nJamf Pro, inventory from 3 hours ago" in text
        assert "Gatehouse gets this device's health from Jamf Pro, and asks Jamf Pro for the newest before deciding." in text
        assert "Jamf's default is once a week" in text and "sudo jamf recon" in text

        fix_jamf_computer(computers[0], clock())
        await page.click("button:has-text('I fixed it, check again')")
        await page.wait_for_url(str(gatehouse.make_url("/public/")))

        assert "Intranet" == await page.text_content("h1")
    finally:
        await gatehouse.close()
