"""The access ledger end to end: requests through the production listener, counted per verdict, equal what was sent.

SQLite with one gateway; PostgreSQL with two gateways on one cluster and the database stopped in the
middle (within the ledger's bound): every request is counted exactly once.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from gateway.app import create_app
from gateway.keys import LEDGER, METRICS, STORE
from gateway.metrics import Metrics
from gateway.config.settings import Settings
from gateway.store import open_store
from gateway.store.base import AccessVerdict
from tests.gateway.fullstack import Keys, MovableClock, gatehouse_settings, ingest_headers, mac_item
from tests.pgcluster import Cluster

ALICE = "alice@example.com"
REASON = "the laptop is being re-encrypted and I need the wiki now"
A, G, B, M, D = AccessVerdict.ALLOWED, AccessVerdict.GRACE, AccessVerdict.BREAK_GLASS, AccessVerdict.MONITOR, AccessVerdict.DENIED

# (path, device or None for no token, expected status, route, verdict, reason); every kind the ledger tells apart.
PLAN: tuple[tuple[str, str | None, int, str, AccessVerdict, str], ...] = (
    ("/public/a", "C02OK", 200, "public", A, ""),
    ("/public/b", "C02NUDGE", 200, "public", G, "nudge"),
    ("/wiki/c", "C02GRACE", 200, "wiki", G, "in-grace"),
    ("/public/d", "C02GLASS", 200, "public", B, "checks-failed"),
    ("/shadow/e", "C02BAD", 200, "shadow", M, "checks-failed"),
    ("/public/f", "C02BAD", 403, "public", D, "checks-failed"),
    ("/admin/g", "C02OK", 403, "admin", D, "snapshot-stale"),
    ("/public/h", None, 401, "public", D, "missing"),
)
TIERS = {"public": "low", "wiki": "medium", "admin": "high", "shadow": "high"}

Key = tuple[str, str, str, str, AccessVerdict, str]


class Gateway:
    """One full Gatehouse served by the production listener, and what was sent through it."""

    def __init__(self, client: TestClient[web.Request, web.Application], keys: Keys, clock: MovableClock) -> None:
        self.client, self.keys, self.clock = client, keys, clock
        self.app = client.server.app
        assert self.app is not None

    def headers(self, device: str | None) -> dict[str, str]:
        if device is None:
            return {"Accept": "application/json"}
        return {"Authorization": f"Bearer {self.keys.token(ALICE, device=device, now=self.clock())}", "Accept": "application/json"}

    async def send(self, rounds: int, sent: Counter[Key]) -> None:
        """Send every request of the plan ``rounds`` times: odd rounds each on a new connection, even rounds on one
        kept connection (the gate decides the allowed ones from memory after the first)."""
        headers = {device: self.headers(device) for _, device, *_ in PLAN}
        for number in range(rounds):
            extra = {"Connection": "close"} if number % 2 == 0 else {}
            for path, device, status, route, verdict, reason in PLAN:
                response = await self.client.get(path, headers={**headers[device], **extra})
                await response.read()
                assert status == response.status, (path, device, response.status)
                user = ALICE if device is not None else ""
                sent[(route, TIERS[route], user, device or "", verdict, reason)] += 1

    async def flush(self) -> bool:
        return await self.app[LEDGER].flush(self.app[STORE])

    def metric(self, name: str, **labels: str) -> float:
        return self.app[METRICS].registry.get_sample_value(name, labels) or 0.0


async def start(aiohttp_client: Any, settings: Settings, keys: Keys, clock: MovableClock) -> Gateway:
    app = create_app(settings, clock=clock, metrics=Metrics(CollectorRegistry()))
    return Gateway(await aiohttp_client(app), keys, clock)


async def prepare_fleet(gateway: Gateway) -> None:
    """Snapshots for every device of the plan, and a break-glass grant for C02GLASS on `public`."""
    now = gateway.clock()
    items = [
        mac_item("C02OK", at=now - timedelta(minutes=30)),  # too old for `high` (15 min), fine elsewhere
        mac_item("C02NUDGE", at=now, auto_updates_enabled=False),
        mac_item("C02GRACE", at=now, firewall_enabled=False),
        mac_item("C02GLASS", at=now, disk_encrypted=False),
        mac_item("C02BAD", at=now, disk_encrypted=False),
    ]
    response = await gateway.client.post("/.gatehouse/api/v1/snapshots", json={"snapshots": items}, headers=ingest_headers())
    assert 200 == response.status, await response.text()
    response = await gateway.client.post(
        "/.gatehouse/api/v1/break-glass", json={"route": "public", "reason": REASON},
        headers={**gateway.headers("C02GLASS"), "X-Gatehouse-Client": "test"},
    )
    assert 201 == response.status, await response.text()


async def ledger_counts(dsn: str) -> Counter[Key]:
    """What the store holds, read through a store of its own."""
    store = await open_store(dsn)
    try:
        counts: Counter[Key] = Counter()
        async for row in store.iter_access(since=MovableClock().now - timedelta(days=1)):
            counts[(row.route, row.tier, row.user, row.device, row.verdict, row.reason)] += row.count
        return counts
    finally:
        await store.close()


@pytest.fixture
async def upstream(aiohttp_server: Any) -> str:
    app = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"upstream": "ok"})

    app.router.add_route("*", "/{tail:.*}", ok)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


class TestLedgerEndToEnd:
    async def test_sqlite_ledger_counts_equal_the_requests_sent(self, aiohttp_client: Any, upstream: str, tmp_path: Path) -> None:
        """Every verdict (allowed, in grace, nudged, break-glass, monitored, denied, unauthenticated) is counted once per request."""
        keys, clock = Keys(tmp_path / "keys"), MovableClock()
        settings = gatehouse_settings(keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=upstream)
        gateway = await start(aiohttp_client, settings, keys, clock)
        await prepare_fleet(gateway)
        sent: Counter[Key] = Counter()

        await gateway.send(5, sent)
        flushed = await gateway.flush()

        assert True is flushed
        assert sent == await ledger_counts(settings.store.reveal())
        assert 0 < gateway.metric("gatehouse_gate_paths_total", path="memory")
        assert 0 < gateway.metric("gatehouse_gate_paths_total", path="awaited")
        assert 0 == gateway.metric("gatehouse_ledger_rows_pending")

    async def test_kept_admissions_are_counted_exactly_across_flushes_and_hours(
        self, aiohttp_client: Any, upstream: str, tmp_path: Path,
    ) -> None:
        """The same allowed request again and again (a kept admission) is counted once each, in its hour, with flushes in between."""
        keys, clock = Keys(tmp_path / "keys"), MovableClock()
        settings = gatehouse_settings(keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=upstream)
        gateway = await start(aiohttp_client, settings, keys, clock)
        await prepare_fleet(gateway)
        headers = {**gateway.headers("C02OK"), "Connection": "close"}  # each on a new connection, decided from memory
        hour = clock.now.replace(minute=0, second=0, microsecond=0)

        for sends, step in ((3, timedelta(minutes=10)), (4, timedelta(minutes=49, seconds=59)), (2, timedelta(seconds=2)), (5, timedelta(0))):
            for _ in range(sends):
                response = await gateway.client.get("/public/a", headers=headers)
                assert 200 == response.status
            await gateway.flush()
            clock.advance(step)
        store = gateway.app[STORE]
        rows = [(r.hour, r.count) async for r in store.iter_access(since=hour) if r.device == "C02OK" and r.route == "public"]

        assert [(hour, 9), (hour + timedelta(hours=1), 5)] == rows
        assert 13 <= gateway.metric("gatehouse_gate_paths_total", path="memory")  # all but the first, which verifies the token

    @pytest.mark.postgres
    async def test_two_gateways_on_postgresql_count_every_request_once_across_an_outage(
        self, aiohttp_client: Any, upstream: str, tmp_path: Path, own_postgres: Cluster,
    ) -> None:
        """Two gateways add to the same rows; with PostgreSQL stopped their counts are held (within the bound) and stored once it is back."""
        keys, clock = Keys(tmp_path / "keys"), MovableClock()
        settings = gatehouse_settings(keys, store=own_postgres.dsn, upstream=upstream)
        one = await start(aiohttp_client, settings, keys, clock)
        await prepare_fleet(one)
        sent: Counter[Key] = Counter()
        await one.send(1, sent)  # the grant's first use goes on record before the second gateway loads the audit log
        two = await start(aiohttp_client, settings, keys, clock)
        await one.send(3, sent)
        await two.send(4, sent)
        before = (await one.flush(), await two.flush())

        own_postgres.stop("immediate")
        await one.send(2, sent)
        await two.send(3, sent)
        during = (await one.flush(), await two.flush())
        held = (one.metric("gatehouse_ledger_requests_pending"), two.metric("gatehouse_ledger_requests_pending"))
        own_postgres.start()
        after = (await one.flush(), await two.flush())

        assert ((True, True), (False, False), (True, True)) == (before, during, after)
        assert (2 * len(PLAN), 3 * len(PLAN)) == held
        assert (0.0, 0.0) == (one.metric("gatehouse_ledger_dropped_requests_total"), two.metric("gatehouse_ledger_dropped_requests_total"))
        assert sent == await ledger_counts(settings.store.reveal())
        assert 13 * len(PLAN) == sum(sent.values())


class TestLedgerOff:
    async def test_ledger_off_counts_nothing_and_says_so_at_start(self, aiohttp_client: Any, upstream: str, tmp_path: Path) -> None:
        """With `evidence.ledger_enabled: false` (for benchmarking) requests are served, nothing reaches the ledger, and a warning names the gap."""
        keys, clock = Keys(tmp_path / "keys"), MovableClock()
        settings = gatehouse_settings(keys, store=f"sqlite:///{tmp_path}/gatehouse.db", upstream=upstream, evidence={"ledger_enabled": False})
        with capture_logs() as logs:
            gateway = await start(aiohttp_client, settings, keys, clock)
        await prepare_fleet(gateway)
        sent: Counter[Key] = Counter()

        await gateway.send(2, sent)

        assert 2 * len(PLAN) == sum(sent.values())
        assert LEDGER not in gateway.app
        assert Counter() == await ledger_counts(settings.store.reveal())
        assert ["ledger.disabled"] == [e["event"] for e in logs if e["log_level"] == "warning" and e["event"].startswith("ledger.")]
