"""A full Gatehouse while its PostgreSQL is down: decisions continue from memory, durable work is refused, then recovers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from breakglass import BreakglassService, Scope
from gateway.app import create_app
from gateway.ingest.snapshot_parse import parse_snapshot_item
from gateway.metrics import Metrics
from gateway.config.settings import Settings
from gateway.store.postgres import open_postgres_store
from tests.breakglass.factories import ALLOWED, make_config, make_request
from tests.pgcluster import Cluster
from tests.gateway.fullstack import catch_all_upstream, Keys, MovableClock, gatehouse_settings, ingest_headers, mac_item

pytestmark = pytest.mark.postgres

ALICE = "alice@example.com"
BOB = "bob@example.com"
CLIENT = {"X-Gatehouse-Client": "test"}
REASON = "the laptop is being re-encrypted and I need the wiki now"


@pytest.fixture
def cluster(own_postgres: Cluster) -> Cluster:
    return own_postgres


class Upstream:
    """A real upstream answering 200 to everything."""

    async def handle(self, request: web.Request) -> web.Response:
        return web.json_response({"upstream": "ok"})


async def _eventually(condition: Callable[[], Awaitable[bool]], *, within_s: float, step_s: float = 0.05) -> float:
    """Poll ``condition`` until it holds; returns how long that took, or fails after ``within_s``."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not true within {within_s} s")
        await asyncio.sleep(step_s)
    return time.monotonic() - started


class Stack:
    """A full Gatehouse (in process, real sockets) on the cluster, restartable on the same store."""

    def __init__(self, aiohttp_client: Any, settings: Settings, keys: Keys, clock: MovableClock) -> None:
        self._make_client = aiohttp_client
        self.settings, self.keys, self.clock = settings, keys, clock
        self.client: TestClient[web.Request, web.Application] | None = None

    async def start(self) -> TestClient[web.Request, web.Application]:
        app = create_app(self.settings, clock=self.clock, metrics=Metrics(CollectorRegistry()))
        self.client = await self._make_client(app)
        return self.client

    async def restart(self) -> TestClient[web.Request, web.Application]:
        assert self.client is not None
        await self.client.close()
        return await self.start()

    def user(self, device: str, user: str = ALICE) -> dict[str, str]:
        token = self.keys.token(user, device=device, now=self.clock())
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    async def get(self, path: str, device: str, user: str = ALICE) -> tuple[int, str]:
        assert self.client is not None
        response = await self.client.get(path, headers=self.user(device, user))
        await response.read()
        return response.status, response.headers.get("X-Gatehouse-Denied-Reason", "")

    async def ingest(self, *items: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert self.client is not None
        response = await self.client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": list(items)}, headers=ingest_headers())
        return response.status, await response.json()

    async def break_glass(self, device: str) -> tuple[int, dict[str, Any]]:
        assert self.client is not None
        response = await self.client.post(
            "/.gatehouse/api/v1/break-glass", json={"route": "public", "reason": REASON}, headers={**self.user(device), **CLIENT},
        )
        return response.status, await response.json()

    async def grants(self, device: str, user: str = ALICE) -> list[dict[str, Any]]:
        assert self.client is not None
        response = await self.client.get("/.gatehouse/api/v1/break-glass", headers=self.user(device, user))
        body = await response.json()
        assert 200 == response.status, body
        return list(body["grants"])

    async def readiness(self, *, strict: bool = False) -> tuple[int, dict[str, Any]]:
        assert self.client is not None
        response = await self.client.get("/.gatehouse/readyz" + ("?strict=1" if strict else ""))
        return response.status, await response.json()

    async def ready(self) -> bool:
        """Fully ready, the store included."""
        return (await self.readiness(strict=True))[0] == 200


@pytest.fixture
async def stack(aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, cluster: Cluster) -> Stack:
    upstream_url = await catch_all_upstream(aiohttp_server, Upstream().handle)
    keys = Keys(tmp_path / "keys")
    settings = gatehouse_settings(keys, store=cluster.dsn, upstream=upstream_url)
    stack = Stack(aiohttp_client, settings, keys, MovableClock())
    await stack.start()
    return stack


class TestPostgresOutage:
    async def test_decisions_continue_from_memory_durable_work_is_refused_then_recovers_with_nothing_lost(
        self, stack: Stack, cluster: Cluster
    ) -> None:
        """PostgreSQL down: the allowed device is still allowed and the failing one denied from memory, readiness
        names the store, ingest and break-glass answer 503 storing nothing; PostgreSQL back: readiness, ingest and
        grants work again, and everything acknowledged before the outage survives a restart of the app."""
        now = stack.clock()
        ingested = await stack.ingest(
            mac_item("C02OK", at=now), mac_item("C02BAD", at=now, disk_encrypted=False),
            mac_item("C02USED", at=now, disk_encrypted=False), mac_item("C02IDLE", at=now, disk_encrypted=False),
        )
        used_grant = await stack.break_glass("C02USED")
        idle_grant = await stack.break_glass("C02IDLE")
        first_use = await stack.get("/public/", "C02USED")
        ready_before = await stack.readiness()

        cluster.stop("immediate")
        stack.clock.advance(timedelta(seconds=30))
        allowed_during = await stack.get("/public/", "C02OK")
        denied_during = await stack.get("/public/", "C02BAD")
        used_during = await stack.get("/public/", "C02USED")
        idle_during = await stack.get("/public/", "C02IDLE")
        idle_problem = await (await stack.client.get("/public/", headers=stack.user("C02IDLE", ALICE))).json()  # type: ignore[union-attr]
        started = time.monotonic()
        ready_during = await stack.readiness()
        readiness_s = time.monotonic() - started
        strict_during = await stack.readiness(strict=True)
        ingest_during = await stack.ingest(mac_item("C02DURING", at=stack.clock()))
        grant_during = await stack.break_glass("C02BAD")
        still_allowed = await stack.get("/public/", "C02OK")

        assert (200, 201, 201, (200, ""), 200) == (ingested[0], used_grant[0], idle_grant[0], first_use, ready_before[0])
        assert ((200, ""), (403, "checks-failed"), (200, "")) == (allowed_during, denied_during, used_during)
        assert 503 == idle_during[0]  # a grant's first use must be on record before it is served
        assert "audit-unavailable" == idle_problem["code"]
        assert (200, [], ["store"], False) == (ready_during[0], ready_during[1]["not_ready"], ready_during[1]["degraded"], ready_during[1]["checks"]["store"])
        assert (503, ["store"]) == (strict_during[0], strict_during[1]["not_ready"])
        assert readiness_s < 2.0
        assert (503, "store-unavailable") == (ingest_during[0], ingest_during[1]["code"])
        assert "nothing from this request was stored" in ingest_during[1]["detail"]
        assert (503, "audit-unavailable") == (grant_during[0], grant_during[1]["code"])
        assert "no grant was given" in grant_during[1]["detail"]
        assert (200, "") == still_allowed

        cluster.start()
        peer_grant = await _write_as_another_replica(cluster.dsn, mac_item("C02PEER", at=stack.clock(), owner=BOB, disk_encrypted=False), stack)
        recovered_s = await _eventually(stack.ready, within_s=10)
        ingest_after = await stack.ingest(mac_item("C02AFTER", at=stack.clock()))
        grant_after = await stack.break_glass("C02BAD")
        after_grant = await stack.get("/public/", "C02BAD")
        peer_s = await _eventually(lambda: _is_allowed(stack, "C02PEER", BOB), within_s=5)

        assert recovered_s < 10
        assert peer_s < 5  # the change listener reconnected and re-synced: notices sent before then were missed
        assert (200, "stored") == (ingest_after[0], ingest_after[1]["results"][0]["outcome"])
        assert 201 == grant_after[0], grant_after[1]
        assert (200, "") == after_grant

        await stack.restart()
        serials = ("C02OK", "C02BAD", "C02USED", "C02IDLE", "C02AFTER", "C02PEER", "C02DURING")
        restarted = {serial: await stack.get("/public/", serial, BOB if serial == "C02PEER" else ALICE) for serial in serials}
        grants = {g["id"] for g in await stack.grants("C02OK")}
        peer_grants = {g["id"] for g in await stack.grants("C02PEER", BOB)}

        assert {
            "C02OK": (200, ""), "C02BAD": (200, ""), "C02USED": (200, ""), "C02IDLE": (200, ""), "C02AFTER": (200, ""),
            "C02PEER": (200, ""), "C02DURING": (403, "device-unknown"),
        } == restarted
        assert {used_grant[1]["id"], idle_grant[1]["id"], grant_after[1]["id"]} == grants
        assert {peer_grant} == peer_grants


async def _is_allowed(stack: Stack, serial: str, user: str) -> bool:
    return (await stack.get("/public/", serial, user))[0] == 200


async def _write_as_another_replica(dsn: str, item: dict[str, Any], stack: Stack) -> str:
    """Store a failing snapshot and grant its device the low tier through a store of its own, as another
    replica would the moment the database is back; returns the grant id."""
    now = stack.clock()
    snapshot = parse_snapshot_item(item, where="peer", received_at=now, max_future_skew=timedelta(minutes=5))
    store = await open_postgres_store(dsn, max_connections=2)
    try:
        await store.put_snapshots([snapshot])
        service = await BreakglassService.open(await store.audit_sink(), config=make_config())
        grant = await service.request(
            make_request(user="bob", user_email=BOB, device_serial=snapshot.serial, scope=Scope.for_tier("low")),
            rule=ALLOWED, now=now,
        )
    finally:
        await store.close()
    return grant.id
