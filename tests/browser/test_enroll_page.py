"""Headless Chromium on this Linux machine, signed in but without a device: the page says how to enroll it.

The full Gatehouse with its device CA configured (so it enrolls laptops) behind the listener
``gatehouse serve`` runs (tests/serving.py); Chromium sends Alice's bearer token and no device.
Chromium's own User-Agent (``X11; Linux x86_64``) picks the Linux commands. The screenshot is
artifacts/screenshots/enroll-deny.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from gateway.app import create_app
from gateway.web.views.enroll import enroll_commands
from policy_engine.model import OsFamily
from tests.browser.conftest import screenshot
from tests.gateway.fullstack import Keys, MovableClock
from tests.gateway.web.test_enroll_pages import ALICE, enrolling_settings, upstream
from tests.serving import serve_for_tests

pytestmark = pytest.mark.browser


@pytest.fixture
async def gatehouse(aiohttp_server: AiohttpServer, tmp_path: Path) -> AsyncIterator[tuple[TestServer, Keys, MovableClock]]:
    keys, clock = Keys(tmp_path / "keys"), MovableClock()
    settings = enrolling_settings(keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=await upstream(aiohttp_server))
    server = serve_for_tests(create_app(settings, clock=clock))
    await server.start_server()
    yield server, keys, clock  # type: ignore[misc]
    await server.close()


async def test_a_signed_in_browser_without_a_device_sees_how_to_enroll_this_linux_laptop(
    gatehouse: tuple[TestServer, Keys, MovableClock], browser_page: Any,
) -> None:
    """Chromium on Linux, signed in with no device, sees the Linux download and enroll commands and nothing about osquery."""
    server, keys, clock = gatehouse
    page = browser_page
    await page.context.set_extra_http_headers({"Authorization": f"Bearer {keys.token(ALICE, now=clock())}"})
    origin = str(server.make_url("")).rstrip("/")
    linux = enroll_commands(origin, OsFamily.LINUX)

    denied = await page.goto(origin + "/wiki/")
    steps = page.locator('ol.enroll-steps[data-platform="linux"]')
    await screenshot(page, "enroll-deny")

    assert 403 == denied.status
    assert "Enroll this laptop to open wiki" == await page.text_content("h1")
    assert 1 == await page.locator("ol.enroll-steps").count()
    assert await steps.is_visible()
    assert [linux.install, linux.enroll] == await steps.locator("code.cmd").all_inner_texts()
    assert "osquery" not in await page.inner_text("main")
