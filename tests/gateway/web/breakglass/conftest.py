"""Fixtures for the break-glass HTTP tests: the harness and a client on a real 127.0.0.1 socket."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.gateway.web.breakglass.support import Harness, build_app


@pytest.fixture
def harness() -> Harness:
    return build_app()


@pytest.fixture
async def client(harness: Harness, aiohttp_client: AiohttpClient) -> TestClient:  # type: ignore[type-arg]
    return await aiohttp_client(harness.app)
