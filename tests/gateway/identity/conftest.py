"""Fixtures for the identity tests: a JWKS server that counts fetches, a recording server, the test app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.gateway.identity.support import PrivateKey, public_jwk, rsa_key


@dataclass
class JwksServer:
    """A real JWKS endpoint on 127.0.0.1; `hits` counts fetches, `keys` is what it serves."""

    keys: list[tuple[PrivateKey, str]] = field(default_factory=lambda: [(rsa_key(), "k1")])
    hits: int = 0
    url: str = ""
    failing: bool = False

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.failing:
            return web.Response(status=500)
        return web.json_response({"keys": [public_jwk(k, kid) for k, kid in self.keys]})


@pytest.fixture
async def jwks_server(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> JwksServer:
    """Serves the `main` RSA key as kid `k1` at /jwks."""
    server = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks", server.handle)
    running = await aiohttp_server(app)
    server.url = str(running.make_url("/jwks"))
    return server


@dataclass
class RecordingServer:
    """Answers anything with a JWKS of an attacker's key and records every request it gets."""

    hits: list[str] = field(default_factory=list)
    base: str = ""
    served: dict[str, Any] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        return web.json_response(self.served)


@pytest.fixture
async def recording_server(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> RecordingServer:
    server = RecordingServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    running = await aiohttp_server(app)
    server.base = str(running.make_url("/")).rstrip("/")
    return server
