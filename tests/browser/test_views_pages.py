"""The gateway's own pages render in headless Chromium under their strict CSP, with their key texts.

Each page is rendered by the pure renderers in gateway/web/views, served from a tiny aiohttp app on
127.0.0.1, loaded in Chromium and saved as a screenshot under artifacts/screenshots/views-*.png.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Callable

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from gateway.errors import BadRequestTarget
from gateway.web.pages import gateway_error_response
from gateway.web.views import FleetFilter, Rendered, render_deny, render_fleet, render_privacy, render_status
from policy_engine.model import OsFamily
from tests.browser.conftest import screenshot
from tests.gateway.web.views import samples

def error_page(accept: str) -> Rendered:
    """The error page of a refused address (gateway/web/pages.py), as the proxy answers it."""
    response = gateway_error_response(accept, BadRequestTarget("`/admin./x` ends a segment with a dot, which some servers drop"),
                                      request_id="r-7f3a")
    assert isinstance(response.body, bytes)
    return Rendered(status=response.status, headers=dict(response.headers), body=response.body)


PAGES: dict[str, Callable[[str], Rendered]] = {
    "error-bad-target": error_page,
    "deny-checks-failed": lambda accept: render_deny(samples.deny_view(), accept=accept),
    "deny-unknown-device": lambda accept: render_deny(
        samples.deny_view(None, serial="C02UNKNOWN99", platform_hint=OsFamily.DARWIN), accept=accept),
    "deny-stale": lambda accept: render_deny(
        samples.deny_view(samples.outdated_mac(collected_at=samples.NOW - timedelta(hours=5),
                                               received_at=samples.NOW - timedelta(hours=5)), tier="high"),
        accept=accept),
    "status": lambda accept: render_status(samples.status_view(), accept=accept),
    "privacy": lambda accept: render_privacy(samples.privacy_view()),
    "fleet": lambda accept: render_fleet(samples.fleet_view(), accept=accept),
    "fleet-filtered": lambda accept: render_fleet(
        samples.fleet_view(FleetFilter(non_compliant=True, tier="low")), accept=accept),
}

KEY_TEXTS = {
    "error-bad-target": ["Bad request", "ends a segment with a dot", "bad-request-target", "r-7f3a"],
    "deny-checks-failed": ["Your macOS is 13.2.1; this service needs at least 14.4",
                           "Your firewall is off; this service needs it on",
                           "Your screen locks after 15 minutes; this service needs 10 minutes or less",
                           "This will block access from 24 Nov 16:00 UTC", "I fixed it, check again",
                           "How to fix it on macOS", "Need access right now?", "C02XK1JHJG5J", "medium"],
    "deny-unknown-device": ["Gatehouse has never received a health report from this device", "Install and start the health agent",
                            "C02UNKNOWN99", "I fixed it, check again"],
    "deny-stale": ["Gatehouse has not heard from this device recently", "Gatehouse last heard from this device on",
                   "22 Nov 10:00 UTC", "Get the health agent reporting again"],
    "status": ["Your devices", "alice-mbp", "alice-thinkpad", "Coming up", "Can reach now", "Production console"],
    "privacy": ["What Gatehouse knows about your device", "Who can see it", "90 days", "security-team"],
    "fleet": ["Devices", "carol-surface", "NEVERSEEN01", "Non-compliant devices", "CSV"],
    "fleet-filtered": ["alice-mbp", "1 match the filters"],
}


@pytest.fixture
async def pages_server(aiohttp_server: AiohttpServer) -> object:
    """Every page at /<name>, rendered for the request's own Accept header."""
    async def handle(request: web.Request) -> web.Response:
        render = PAGES.get(request.match_info["name"])
        if render is None:
            raise web.HTTPNotFound()
        return render(request.headers.get("Accept", "")).response()

    app = web.Application()
    app.router.add_get("/{name}", handle)
    return await aiohttp_server(app)


@pytest.mark.browser
@pytest.mark.parametrize("name", sorted(PAGES))
async def test_page_renders_under_its_csp(pages_server: object, browser_page: object, name: str) -> None:
    """The page loads with the strict CSP, its stylesheet applies, nothing is blocked, and it says what it must."""
    page = browser_page
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))  # type: ignore[attr-defined]

    response = await page.goto(str(pages_server.make_url(f"/{name}")))  # type: ignore[attr-defined]
    text = await page.inner_text("main")  # type: ignore[attr-defined]
    bar = await page.eval_on_selector("header.bar", "e => getComputedStyle(e).backgroundColor")  # type: ignore[attr-defined]
    headings = await page.eval_on_selector_all("h1", "els => els.length")  # type: ignore[attr-defined]
    unlabeled = await page.eval_on_selector_all(  # type: ignore[attr-defined]
        "input:not([type=hidden]), select, textarea",
        "els => els.filter(e => !(e.labels && e.labels.length)).map(e => e.name)",
    )
    shot = await screenshot(page, f"views-{name}")

    headers = response.headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert "nosniff" == headers["x-content-type-options"]
    assert "rgb(21, 32, 43)" == bar
    assert 1 == headings
    assert [] == unlabeled
    assert [] == [m for m in console if "Content Security Policy" in m]
    for expected in KEY_TEXTS[name]:
        assert expected in text
    assert shot.stat().st_size > 0


@pytest.mark.browser
@pytest.mark.parametrize("name", ["deny-checks-failed", "status", "privacy", "fleet"])
async def test_pages_fit_a_phone(pages_server: object, browser_page: object, name: str) -> None:
    """On a phone-sized screen the page fits the width: nothing but wide tables scrolls sideways."""
    page = browser_page
    await page.set_viewport_size({"width": 390, "height": 844})  # type: ignore[attr-defined]

    await page.goto(str(pages_server.make_url(f"/{name}")))  # type: ignore[attr-defined]
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")  # type: ignore[attr-defined]
    await screenshot(page, f"views-{name}-phone")

    assert scroll_width <= 390


@pytest.mark.browser
async def test_deny_page_in_dark_mode(pages_server: object, browser_page: object) -> None:
    """With the system in dark mode the page switches palette and stays readable."""
    page = browser_page
    await page.emulate_media(color_scheme="dark")  # type: ignore[attr-defined]

    await page.goto(str(pages_server.make_url("/deny-checks-failed")))  # type: ignore[attr-defined]
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")  # type: ignore[attr-defined]
    await screenshot(page, "views-deny-checks-failed-dark")

    assert "rgb(13, 17, 23)" == background
