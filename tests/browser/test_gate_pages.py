"""The whole Gatehouse in headless Chromium: denied, fix the device, "check again", land on the upstream.

A real upstream and the full Gatehouse (``create_app`` without a gate: SQLite store, the example
policy from deploy/, ES256 user tokens, the ingest API, the portal pages) listen on 127.0.0.1.
Chromium sends the user's bearer token on every request; snapshots arrive through the ingest API
as an agent would send them, and a MovableClock stands in for the wall clock. Screenshots go to
artifacts/screenshots/gate-*.png; ``gate-deny.png`` is the one the README shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from gateway.app import create_app
from tests.browser.conftest import screenshot
from tests.gateway.fullstack import Keys, MovableClock, gatehouse_settings, ingest_headers, mac_item

pytestmark = pytest.mark.browser

ALICE = "alice@example.com"
MAC_SERIAL = "C02XK1JHJG5J"
MAC_NAME = "alice-mbp"


@dataclass
class Stack:
    """The running Gatehouse, its upstream, the key that signs user tokens and the clock."""

    gatehouse: TestServer
    upstream: TestServer
    keys: Keys
    clock: MovableClock

    def url(self, path: str) -> str:
        return str(self.gatehouse.make_url(path))

    async def ingest(self, *items: dict[str, Any]) -> None:
        """Send snapshots through the ingest API, as an agent's forwarder would."""
        async with aiohttp.ClientSession() as session:
            async with session.post(self.url("/.gatehouse/api/v1/snapshots"), json={"snapshots": list(items)},
                                    headers=ingest_headers()) as response:
                assert 200 == response.status, await response.text()

    async def sign_in(self, page: Any, user: str = ALICE, *, device: str | None = MAC_SERIAL,
                      groups: tuple[str, ...] = ()) -> None:
        """Make the browser send ``user``'s token (with ``device``) on every request."""
        token = self.keys.token(user, device=device, now=self.clock(), groups=groups)
        await page.context.set_extra_http_headers({"Authorization": f"Bearer {token}"})


async def wiki_upstream(request: web.Request) -> web.Response:
    """The service behind Gatehouse: a wiki page that says who it was shown to."""
    who = request.headers.get("X-Gatehouse-Email", "nobody")
    return web.Response(
        text=f"<!doctype html><html lang=en><title>Team wiki</title><h1>Team wiki</h1>"
             f"<p id=path>{request.path}</p><p id=who>Signed in as {who}</p></html>",
        content_type="text/html",
    )


@pytest.fixture
async def stack(aiohttp_server: AiohttpServer, tmp_path: Path) -> Stack:
    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", wiki_upstream)
    upstream = await aiohttp_server(upstream_app)
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    settings = gatehouse_settings(keys, store=f"sqlite:///{tmp_path}/gatehouse.db",
                                  upstream=str(upstream.make_url("")).rstrip("/"))
    gatehouse = await aiohttp_server(create_app(settings, clock=clock))
    return Stack(gatehouse, upstream, keys, clock)


def alice_mac(stack: Stack, **facts: Any) -> dict[str, Any]:
    return mac_item(MAC_SERIAL, at=stack.clock(), hostname=MAC_NAME, **facts)


async def test_denied_then_fixed_then_check_again_reaches_the_wiki(stack: Stack, browser_page: Any) -> None:
    """Alice is denied on the wiki, encrypts her disk, presses "check again" and lands on the page she wanted."""
    page = browser_page
    await stack.ingest(alice_mac(stack, disk_encrypted=False, os_version="13.2.1"))
    await stack.sign_in(page)

    denied = await page.goto(stack.url("/wiki/some/page"))
    text = await page.inner_text("main")
    await screenshot(page, "gate-deny")

    assert 403 == denied.status
    assert "Your device needs attention before you can open wiki" == await page.text_content("h1")
    assert "Your disk encryption is off; this service needs it on." in text
    assert "Your macOS is 13.2.1; this service needs at least 14.4." in text
    assert "How to fix it on macOS" in text
    assert "FileVault" in text
    assert MAC_SERIAL in text and MAC_NAME in text and "medium" in text
    assert await page.is_visible("button:has-text('I fixed it, check again')")

    stack.clock.advance(timedelta(minutes=3))
    await stack.ingest(alice_mac(stack, os_version="14.6.1"))
    await page.click("button:has-text('I fixed it, check again')")
    await page.wait_for_url(stack.url("/wiki/some/page"))
    await screenshot(page, "gate-after-recheck")

    assert "Team wiki" == await page.text_content("h1")
    assert f"Signed in as {ALICE}" == await page.text_content("#who")
