"""The browser the page tests rely on really launches and renders a page served on 127.0.0.1."""

from __future__ import annotations

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tests.browser.conftest import screenshot


@pytest.mark.browser
async def test_chromium_renders_a_local_page(aiohttp_server: AiohttpServer, browser_page: object) -> None:
    """Headless Chromium loads a page from a real local server and reads its heading."""
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>t</title><h1>Hello from 127.0.0.1</h1>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", hello)
    server = await aiohttp_server(app)

    await browser_page.goto(str(server.make_url("/")))  # type: ignore[attr-defined]
    heading = await browser_page.inner_text("h1")  # type: ignore[attr-defined]
    shot = await screenshot(browser_page, "smoke")

    assert "Hello from 127.0.0.1" == heading
    assert shot.stat().st_size > 0
