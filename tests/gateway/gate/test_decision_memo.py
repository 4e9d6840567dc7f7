"""The decision memo of a running Gatehouse holds only the decisions of the snapshots it holds.

A full Gatehouse behind the production listener, a real upstream, snapshots through the ingest API
and requests at every tier: replacing a device's snapshot drops its remembered decisions at once,
and under steady snapshot churn the memo stays bounded by the devices it has seen (one decision
per device and tier), not by its size cap.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.keys import POLICY
from tests.gateway.fullstack import Keys, MovableClock, gatehouse_settings, ingest_headers, mac_item

PATHS = ("/public/", "/wiki/", "/admin/")  # tiers low, medium and high


class Stack:
    """A running Gatehouse with its user-token key and clock."""

    def __init__(self, client: TestClient[web.Request, web.Application], keys: Keys, clock: MovableClock) -> None:
        self.client, self.keys, self.clock = client, keys, clock

    @property
    def memo_size(self) -> int:
        return len(self.client.server.app[POLICY].memo)

    async def report(self, *serials: str) -> None:
        """Each device sends a fresh snapshot (a minute after the last)."""
        self.clock.advance(timedelta(minutes=1))
        items = [mac_item(s, at=self.clock()) for s in serials]
        response = await self.client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": items}, headers=ingest_headers())
        assert 200 == response.status, await response.text()

    async def browse(self, serial: str) -> None:
        """The device's user opens a service at every tier; every request is allowed."""
        token = self.keys.token("alice@example.com", device=serial, now=self.clock())
        for path in PATHS:
            response = await self.client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert 200 == response.status, await response.text()


@pytest.fixture
async def stack(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path) -> Stack:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", ok)
    upstream = await aiohttp_server(upstream_app)
    keys = Keys(tmp_path / "keys")
    clock = MovableClock()
    settings = gatehouse_settings(keys, store=f"sqlite:///{tmp_path}/g.db", upstream=str(upstream.make_url("")).rstrip("/"))
    return Stack(await aiohttp_client(create_app(settings, clock=clock)), keys, clock)


class TestDecisionMemo:
    async def test_replacing_a_snapshot_drops_its_decisions(self, stack: Stack) -> None:
        """Once a device's new snapshot is in memory, no decision made for its old snapshot is kept."""
        await stack.report("C02MEMO1", "C02MEMO2")
        await stack.browse("C02MEMO1")
        await stack.browse("C02MEMO2")
        before = stack.memo_size

        await stack.report("C02MEMO1")

        assert (6, 3) == (before, stack.memo_size)

    async def test_memo_stays_bounded_by_live_snapshots_under_churn(self, stack: Stack) -> None:
        """However often devices report, the memo holds at most one decision per device and tier."""
        serials = [f"C02CHURN{i}" for i in range(4)]
        sizes = []

        for _ in range(10):
            await stack.report(*serials)
            for serial in serials:
                await stack.browse(serial)
            sizes.append(stack.memo_size)

        assert [len(serials) * len(PATHS)] * 10 == sizes
