"""Two Gatehouse processes on one PostgreSQL: what one replica stores takes effect on the other within a second."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.ingest.snapshot_parse import parse_snapshot_item
from gateway.keys import SNAPSHOT_CACHE
from gateway.metrics import Metrics
from gateway.store.postgres import open_postgres_store
from tests.gateway.fullstack import START, Keys, MovableClock, gatehouse_config, gatehouse_settings, ingest_headers, mac_item

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
ALICE = "alice@example.com"
PROPAGATION_S = 1.0
CLIENT = {"X-Gatehouse-Client": "test"}

_CHILD = """
import sys
from gateway.logging import configure_logging
from gateway.serve.workers import run
configure_logging(fmt="json")
sys.exit(run(sys.argv[1], environ={}))
"""


@dataclass
class Replica:
    """One ``gateway.serve.workers.run`` subprocess, its JSON log events and the tail of its raw output."""

    name: str
    child: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    url: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, name: str, config: Path) -> Replica:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        assert child.stdout is not None and child.stderr is not None
        replica = cls(name, child)
        replica.pumps = [asyncio.create_task(replica._pump(child.stdout)), asyncio.create_task(replica._pump(child.stderr))]
        return replica

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        """Read every line (a full pipe would block the child), keeping the JSON events."""
        while line := await stream.readline():
            self.tail = [*self.tail[-30:], line.decode(errors="replace").rstrip()]
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                self.events.append(event)
                if event.get("event") == "gateway.started":
                    self.url = event["listeners"][0]
                    self.ready.set()

    async def started(self, timeout_s: float) -> str:
        """The listener URL from the ``gateway.started`` event; fails with the child's last output."""
        waits = {asyncio.ensure_future(self.child.wait()), asyncio.ensure_future(self.ready.wait())}
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        if not self.ready.is_set():
            output = "\n".join(self.tail)
            raise AssertionError(f"replica {self.name} did not start within {timeout_s} s (exit {self.child.returncode}):\n{output}")
        return self.url

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 15 s."""
        if self.child.returncode is None:
            self.child.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.child.wait(), 15)
            except TimeoutError:
                self.child.kill()
                await self.child.wait()
        await asyncio.gather(*self.pumps)


@pytest.fixture
async def replicas(tmp_path: Path, postgres_dsn: str, upstream_url: str) -> AsyncIterator[tuple[str, str, Keys]]:
    """Replicas A and B: the same configuration on one PostgreSQL database, each on its own port."""
    keys = Keys(tmp_path / "keys")
    raw = gatehouse_config(keys, store=postgres_dsn, upstream=upstream_url)
    config = tmp_path / "gatehouse.yaml"
    config.write_text(yaml.safe_dump(raw))
    # Started together, as a Deployment's pods are: both migrate the empty database, one after the other.
    started = [await Replica.start("A", config), await Replica.start("B", config)]
    try:
        url_a, url_b = await asyncio.gather(*(replica.started(30) for replica in started))
        yield url_a, url_b, keys
    finally:
        await asyncio.gather(*(replica.stop() for replica in started))


def _user(keys: Keys, device: str) -> dict[str, str]:
    token = keys.token(ALICE, device=device, now=datetime.now(UTC))
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def _status(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with session.get(url, headers=headers) as response:
        await response.read()
        return response.status, response.headers.get("X-Gatehouse-Denied-Reason", "")


async def _within(deadline_s: float, condition: Callable[[], Awaitable[bool]], *, step_s: float = 0.01) -> float:
    """Poll ``condition`` until it holds; returns how long that took, or fails after ``deadline_s``."""
    started = time.monotonic()
    while not await condition():
        if time.monotonic() - started > deadline_s:
            raise AssertionError(f"not true within {deadline_s} s")
        await asyncio.sleep(step_s)
    return time.monotonic() - started


async def _ingest(session: aiohttp.ClientSession, url: str, item: dict[str, Any]) -> None:
    async with session.post(f"{url}/.gatehouse/api/v1/snapshots", json={"snapshots": [item]}, headers=ingest_headers()) as response:
        body = await response.json()
        assert (200, "stored") == (response.status, body["results"][0]["outcome"]), body


class TestTwoReplicas:
    async def test_a_snapshot_ingested_on_one_replica_admits_on_the_other_within_a_second(self, replicas: tuple[str, str, Keys]) -> None:
        """A healthy snapshot ingested through A lets the device through B within one second."""
        url_a, url_b, keys = replicas
        headers = _user(keys, "C02REPL")
        async with aiohttp.ClientSession() as session:
            before = await _status(session, f"{url_b}/public/", headers)

            await _ingest(session, url_a, mac_item("C02REPL", at=datetime.now(UTC)))
            delay_s = await _within(PROPAGATION_S, lambda: _allowed(session, f"{url_b}/public/", headers))

        assert (403, "device-unknown") == before
        assert delay_s < PROPAGATION_S
        print(f"snapshot propagation A -> B: {delay_s * 1000:.0f} ms")

    async def test_a_grant_made_and_ended_on_one_replica_takes_effect_on_the_other_within_a_second(
        self, replicas: tuple[str, str, Keys]
    ) -> None:
        """A break-glass grant issued through A admits a failing device on B within a second; ending it on A
        denies it on B again within a second."""
        url_a, url_b, keys = replicas
        headers = _user(keys, "C02NOENC")
        async with aiohttp.ClientSession() as session:
            await _ingest(session, url_a, mac_item("C02NOENC", at=datetime.now(UTC), disk_encrypted=False))
            await _within(PROPAGATION_S, lambda: _denied_for(session, f"{url_b}/public/", headers, "checks-failed"))

            async with session.post(
                f"{url_a}/.gatehouse/api/v1/break-glass", headers={**headers, **CLIENT},
                json={"route": "public", "reason": "the laptop is being re-encrypted and I need the wiki now"},
            ) as response:
                grant = await response.json()
                assert 201 == response.status, grant
            granted_s = await _within(PROPAGATION_S, lambda: _allowed(session, f"{url_b}/public/", headers))

            async with session.post(
                f"{url_a}/.gatehouse/api/v1/break-glass/{grant['id']}/end", headers={**headers, **CLIENT},
                json={"reason": "done"},
            ) as response:
                ended = await response.json()
                assert 200 == response.status, ended
            ended_s = await _within(PROPAGATION_S, lambda: _denied_for(session, f"{url_b}/public/", headers, "checks-failed"))

        assert granted_s < PROPAGATION_S and ended_s < PROPAGATION_S
        print(f"grant propagation A -> B: {granted_s * 1000:.0f} ms; end: {ended_s * 1000:.0f} ms")


async def _allowed(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> bool:
    return (await _status(session, url, headers))[0] == 200


async def _denied_for(session: aiohttp.ClientSession, url: str, headers: dict[str, str], reason: str) -> bool:
    return await _status(session, url, headers) == (403, reason)


class TestChangeFeed:
    async def test_a_burst_of_writes_by_another_replica_all_reach_the_cache_within_a_second(
        self, postgres_dsn: str, aiohttp_client: Any, tmp_path: Path
    ) -> None:
        """200 snapshots stored one at a time by another replica are all in this replica's cache within a second
        of the last write (notices arriving during a catch-up are folded into the next one, none is lost)."""
        keys = Keys(tmp_path / "keys")
        settings = gatehouse_settings(keys, store=postgres_dsn, upstream="http://127.0.0.1:9")
        client = await aiohttp_client(create_app(settings, clock=MovableClock(), metrics=Metrics(CollectorRegistry())))
        cache = client.app[SNAPSHOT_CACHE]
        other = await open_postgres_store(postgres_dsn, max_connections=4)
        snapshots = [
            parse_snapshot_item(mac_item(f"C02B{i:04d}", at=START), where="burst", received_at=START, max_future_skew=timedelta(0))
            for i in range(200)
        ]
        try:
            await asyncio.gather(*(other.put_snapshots([s]) for s in snapshots))
            started = time.monotonic()
            while not all(s.serial in cache for s in snapshots):
                if time.monotonic() - started > PROPAGATION_S:
                    break
                await asyncio.sleep(0.01)
            missing = [s.serial for s in snapshots if s.serial not in cache]
        finally:
            await other.close()

        assert [] == missing
