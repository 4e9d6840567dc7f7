"""The whole Gatehouse in headless Chromium: denied, fix the device, "check again", land on the upstream.

A real upstream and the full Gatehouse (``create_app`` without a gate: SQLite store, the example
policy from deploy/, ES256 user tokens, the ingest API, the portal pages) listen on 127.0.0.1, the
Gatehouse behind the listener ``gatehouse serve`` runs (tests/serving.py).
Chromium sends the user's bearer token on every request; snapshots arrive through the ingest API
as an agent would send them, and a MovableClock stands in for the wall clock. Screenshots go to
artifacts/screenshots/gate-*.png; ``gate-deny.png`` is the one the README shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from gateway.app import create_app
from tests.browser.conftest import screenshot
from tests.gateway.fullstack import Keys, MovableClock, gatehouse_settings, ingest_headers, mac_item
from tests.serving import serve_for_tests

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
async def stack(aiohttp_server: AiohttpServer, tmp_path: Path) -> AsyncIterator[Stack]:
    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", wiki_upstream)
    upstream = await aiohttp_server(upstream_app)
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    settings = gatehouse_settings(keys, store=f"sqlite:///{tmp_path}/gatehouse.db",
                                  upstream=str(upstream.make_url("")).rstrip("/"))
    gatehouse = serve_for_tests(create_app(settings, clock=clock))  # the listener `gatehouse serve` runs
    await gatehouse.start_server()
    yield Stack(gatehouse, upstream, keys, clock)
    await gatehouse.close()


def alice_mac(stack: Stack, **facts: Any) -> dict[str, Any]:
    return mac_item(MAC_SERIAL, at=stack.clock(), hostname=MAC_NAME, **facts)


async def test_denied_then_fixed_then_check_again_reaches_the_wiki(stack: Stack, browser_page: Any) -> None:
    """Alice is denied on the wiki, encrypts her disk, presses "check again" and lands on the page she wanted."""
    page = browser_page
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
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
    assert "This will block access from 29 Nov 15:00 UTC (in 7 days)." in text
    assert await page.is_visible("button:has-text('I fixed it, check again')")
    assert "default-src 'none'" in denied.headers["content-security-policy"]
    assert [] == [m for m in console if "Content Security Policy" in m]

    stack.clock.advance(timedelta(minutes=3))
    await stack.ingest(alice_mac(stack, os_version="13.2.1"))  # disk encrypted; the OS update is still in grace
    await page.click("button:has-text('I fixed it, check again')")
    await page.wait_for_url(stack.url("/wiki/some/page"))
    await screenshot(page, "gate-after-recheck")

    assert "Team wiki" == await page.text_content("h1")
    assert f"Signed in as {ALICE}" == await page.text_content("#who")


async def seed_fleet(stack: Stack) -> None:
    """Alice's Mac (OS update in grace) and Linux laptop (firewall off), Bob's stale PC, Carol's healthy Mac."""
    now = stack.clock()
    stack.clock.now = now - timedelta(days=3)  # Bob's PC last reported three days ago
    await stack.ingest(mac_item("5CG1234XYZ", at=stack.clock(), owner="bob@example.com", hostname="bob-elitebook",
                                platform="windows", os_name="Windows 11 Pro", os_version="10.0.22631",
                                sip_enabled=None, gatekeeper_enabled=None))
    stack.clock.now = now
    await stack.ingest(
        alice_mac(stack, os_version="13.2.1"),
        mac_item("PF3ABCDE", at=now, hostname="alice-thinkpad", platform="linux", os_name="Ubuntu",
                 distribution="ubuntu", os_version="24.04", firewall_enabled=False, sip_enabled=None,
                 gatekeeper_enabled=None),
        mac_item("C02CAROL001", at=now, owner="carol@example.com", hostname="carol-mbp"),
    )


async def test_status_page_lists_alices_devices_with_their_deadlines(stack: Stack, browser_page: Any) -> None:
    """Alice's status page shows her two devices, what each can reach, and the grace deadlines coming up."""
    page = browser_page
    await seed_fleet(stack)
    await stack.sign_in(page)

    response = await page.goto(stack.url("/.gatehouse/"))
    text = await page.inner_text("main")
    await screenshot(page, "gate-status")

    assert 200 == response.status
    assert "Your devices" == await page.text_content("h1")
    assert ["alice-mbp", "alice-thinkpad"] == await page.eval_on_selector_all("main section h2[id]", "els => els.map(e => e.textContent)")
    assert "Coming up" in text
    assert "Update the operating system on alice-mbp: blocks access from 29 Nov 15:00 UTC (in 7 days)." in text
    assert "Turn on the firewall on alice-thinkpad: blocks access from 25 Nov 15:00 UTC (in 3 days)." in text
    assert "bob-elitebook" not in text and "carol-mbp" not in text


async def test_privacy_page_is_public(stack: Stack, browser_page: Any) -> None:
    """Anyone can read what Gatehouse collects, before signing in."""
    page = browser_page

    response = await page.goto(stack.url("/.gatehouse/privacy"))
    text = await page.inner_text("main")
    await screenshot(page, "gate-privacy")

    assert 200 == response.status
    assert "What Gatehouse knows about your device" in text
    assert "security" in text


async def test_fleet_page_for_a_reviewer(stack: Stack, browser_page: Any) -> None:
    """A member of `security` sees every device and can narrow the list to non-compliant ones."""
    page = browser_page
    await seed_fleet(stack)
    await stack.sign_in(page, "rita@example.com", device=None, groups=("security",))

    response = await page.goto(stack.url("/.gatehouse/admin/devices"))
    everything = await page.inner_text("main")
    await screenshot(page, "gate-fleet")
    await page.check("#f-non_compliant")
    await page.click("button:has-text('Apply filters')")
    await page.wait_for_url("**non_compliant=1**")
    filtered = await page.inner_text("main")
    await screenshot(page, "gate-fleet-non-compliant")

    assert 200 == response.status
    assert all(name in everything for name in ("alice-mbp", "alice-thinkpad", "bob-elitebook", "carol-mbp"))
    assert "4 devices, 3 non-compliant, 0 owned by nobody." in everything
    assert "carol-mbp" not in filtered and "bob-elitebook" in filtered


async def test_fleet_page_narrows_to_the_devices_nobody_owns(stack: Stack, browser_page: Any) -> None:
    """Ticking "Owned by nobody" leaves only the Mac no one owns, marked unowned; a serial the inventory binds stays off the list."""
    page = browser_page
    await seed_fleet(stack)
    await stack.ingest(mac_item("C02SPARE01", at=stack.clock(), hostname="spare-mbp", owners=[]))
    async with aiohttp.ClientSession() as session:
        async with session.put(stack.url("/.gatehouse/api/v1/devices/C02DAVE001/owners"), json={"owners": ["dave@example.com"]},
                               headers=ingest_headers()) as bound:
            assert 200 == bound.status, await bound.text()
    await stack.sign_in(page, "rita@example.com", device=None, groups=("security",))

    await page.goto(stack.url("/.gatehouse/admin/devices"))
    listed = await page.eval_on_selector_all("main tbody tr th code", "els => els.map(e => e.textContent)")
    await page.check("#f-unowned")
    await page.click("button:has-text('Apply filters')")
    await page.wait_for_url("**unowned=1**")
    filtered = await page.eval_on_selector_all("main tbody tr th code", "els => els.map(e => e.textContent)")
    summary = await page.inner_text("main p")
    owner_cell = await page.inner_text("main tbody tr td[data-label='Owner']")
    await screenshot(page, "gate-fleet-unowned")

    assert {"C02SPARE01", "C02DAVE001"} <= set(listed) and 6 == len(listed)
    assert ["C02SPARE01"] == filtered
    assert "6 devices, 4 non-compliant, 1 owned by nobody. 1 match the filters." == summary.strip()
    assert ("unowned", True) == (owner_cell.strip(), await page.is_checked("#f-unowned"))
    assert await page.is_visible("main tbody .badge.warn:has-text('unowned')")


async def test_fleet_page_refusal_names_the_groups(stack: Stack, browser_page: Any) -> None:
    """Someone outside the reviewer groups reads which groups may open the fleet view, in Gatehouse's page."""
    page = browser_page
    await seed_fleet(stack)
    await stack.sign_in(page, "bob@example.com", device=None, groups=("engineering",))

    response = await page.goto(stack.url("/.gatehouse/admin/devices"))
    text = await page.inner_text("main")
    await screenshot(page, "gate-fleet-refused")

    assert 403 == response.status
    assert "Access denied" == await page.text_content("h1")
    assert "the fleet view is open to members of `security`" in text
    assert "alice-mbp" not in text
    assert "default-src 'none'" in response.headers["content-security-policy"]


async def test_denial_fits_a_phone(stack: Stack, browser_page: Any) -> None:
    """On a phone-sized screen the real denial fits the width and the check-again button is on screen."""
    page = browser_page
    await page.set_viewport_size({"width": 390, "height": 844})
    await stack.ingest(alice_mac(stack, disk_encrypted=False, os_version="13.2.1"))
    await stack.sign_in(page)

    await page.goto(stack.url("/wiki/some/page"))
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    await screenshot(page, "gate-deny-phone")

    assert scroll_width <= 390
    assert await page.is_visible("button:has-text('I fixed it, check again')")
