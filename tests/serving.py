"""Serve a Gatehouse app in tests exactly as ``gatehouse serve`` does: GatewaySite and its proxy.

Owns: GatehouseTestServer, serve_for_tests (what the ``aiohttp_client`` override in tests/conftest.py uses).

aiohttp's own TestServer serves an app through aiohttp's RequestHandler only, which would leave the
proxy (``gateway.proxy``) untested. Every Gatehouse app a test starts through
``aiohttp_client`` or ``make_gateway`` is served by this server instead; apps that are not
Gatehouse apps (fake identity providers, upstreams) keep aiohttp's.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer
from yarl import URL

from gateway.proxy.lane import Lane
from gateway.keys import CONFIG, GATE
from gateway.serve.server import GatewaySite


def is_gatehouse_app(app: web.Application) -> bool:
    """True for an app built by ``gateway.app.create_app``."""
    return CONFIG in app and GATE in app


class GatehouseTestServer(TestServer):
    """A TestServer whose listener is Gatehouse's own (``GatewaySite`` with its proxy) on 127.0.0.1."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, host="127.0.0.1", **kwargs)
        self.site: GatewaySite | None = None

    async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
        if self.runner:
            return
        self.runner = await self._make_runner(access_log=None, **kwargs)
        await self.runner.setup()
        server = self.app[CONFIG].current.settings.server
        self.site = GatewaySite(self.runner, "127.0.0.1", 0, ssl_context=None, server_settings=server)
        await self.site.start()
        self.port = self.site.port
        self.scheme = "http"
        self._root = URL(f"http://127.0.0.1:{self.port}")

    @property
    def lane(self) -> Lane:
        assert self.site is not None and self.site.lane is not None
        return self.site.lane


def serve_for_tests(app: web.Application, **kwargs: Any) -> BaseTestServer:
    """The test server for ``app``: Gatehouse's listener for a Gatehouse app, aiohttp's otherwise."""
    if is_gatehouse_app(app):
        return GatehouseTestServer(app, **kwargs)
    return TestServer(app, host="127.0.0.1", **kwargs)
