"""Gatehouse on several cores: a supervisor and worker processes on one port, for real (subprocesses on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.keys import STORE
from gateway.config.settings import parse_settings
from gateway.store.sqlite import SqliteStore
from gateway.serve.workers import WorkerLink, run, worker_settings
from tests.breakglass.factories import make_chain
from tests.gateway.conftest import Recorder
from tests.gateway.fullstack import Keys, gatehouse_config, ingest_headers, mac_item
from tests.gateway.store.snapshots import make_snapshot

ROOT = Path(__file__).resolve().parents[3]
ALICE = "alice@example.com"
T = TypeVar("T")
Events = list[dict[str, Any]]

_CHILD = """
import sys
from gateway.logging import configure_logging
from gateway.serve.workers import run
configure_logging(fmt="json")
sys.exit(run(sys.argv[1], environ={}, workers=int(sys.argv[2])))
"""


@dataclass
class Supervised:
    """One ``run(path, workers=N)`` subprocess and every JSON log line it and its workers wrote."""

    child: asyncio.subprocess.Process
    events: Events = field(default_factory=list)
    ended: bool = False
    _more: asyncio.Event = field(default_factory=asyncio.Event)

    async def pump(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            with contextlib.suppress(orjson.JSONDecodeError):
                event = orjson.loads(line)
                if isinstance(event, dict):
                    self.events.append(event)
                    self._more.set()
        self.ended = True
        self._more.set()

    async def until(self, found: Callable[[Events], T | None], what: str, timeout: float = 20) -> T:
        """Wait until ``found(events)`` is truthy (polled on every new line) and return it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            self._more.clear()
            result = found(self.events)
            if result:
                return result
            remaining = deadline - asyncio.get_running_loop().time()
            if self.ended or remaining <= 0:
                raise AssertionError(f"no {what} ({'the gateway exited' if self.ended else 'timed out'}); events: {[e.get('event') for e in self.events]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._more.wait(), remaining)

    def named(self, name: str) -> Events:
        return [e for e in self.events if e.get("event") == name]

    async def started(self) -> dict[str, Any]:
        """The supervisor's ``supervisor.started`` event (every worker serves)."""
        return await self.until(lambda _: next(iter(self.named("supervisor.started")), None), "supervisor.started")

    def worker_pids(self, name: str = "gateway.started") -> set[int]:
        return {e["pid"] for e in self.named(name)}


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    launched: list[tuple[Supervised, asyncio.Task[None]]] = []

    async def start(raw: dict[str, Any], workers: int = 2) -> Supervised:
        config = tmp_path / "gatehouse.yaml"
        config.write_text(yaml.safe_dump(raw))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, str(config), str(workers), stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )
        assert child.stdout is not None
        supervised = Supervised(child)
        launched.append((supervised, asyncio.create_task(supervised.pump(child.stdout))))
        return supervised

    yield start
    for supervised, pump in launched:
        if supervised.child.returncode is None:
            for pid in supervised.worker_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            supervised.child.kill()
            await supervised.child.wait()
        await pump


def _config(tmp_path: Path, upstream: str, **sections: Any) -> tuple[dict[str, Any], Keys]:
    keys = Keys(tmp_path / "keys")
    raw = gatehouse_config(keys, store=f"sqlite:///{tmp_path}/g.db", upstream=upstream, **sections)
    raw["routes"] = [{"id": "app", "upstream": upstream, "tier": "low"}]
    return raw, keys


def _requests_total(text: str) -> float:
    return sum(
        sample.value for family in text_string_to_metric_families(text) for sample in family.samples
        if sample.name == "gatehouse_requests_total"
    )


async def _spread_requests(url: str, count: int, headers: dict[str, str] | None = None) -> list[int]:
    """``count`` requests, each on a new connection, so the kernel spreads them over the workers."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        statuses = []
        for _ in range(count):
            async with session.get(url, headers=headers) as response:
                await response.read()
                statuses.append(response.status)
        return statuses


def _served_by(events: Events, path: str, status: int = 200) -> set[int]:
    return {e["pid"] for e in events if e.get("event") == "request.completed" and e.get("path") == path and e.get("status") == status}


async def _ingest(url: str, serial: str, now: datetime) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/.gatehouse/api/v1/snapshots", json={"snapshots": [mac_item(serial, at=now)]}, headers=ingest_headers()) as ingested:
            assert 200 == ingested.status


async def _until_allowed_by(gatehouse: Supervised, url: str, token: str, pids: set[int], timeout: float) -> int:
    """Send requests on new connections until every worker in ``pids`` let one through; how many it took."""
    deadline = asyncio.get_running_loop().time() + timeout
    sent = 0
    while not pids <= _served_by(gatehouse.events, "/probe"):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"workers {pids - _served_by(gatehouse.events, '/probe')} never let the device in")
        await _spread_requests(f"{url}/probe", 1, headers={"Authorization": f"Bearer {token}"})
        sent += 1
        await gatehouse.until(lambda events, sent=sent: sum(1 for e in events if e.get("path") == "/probe") >= sent, "the probe's log line")
    return sent


class TestWorkers:
    async def test_two_workers_share_the_port_and_metrics_add_up(self, tmp_path: Path, upstream_url: str, launch: Callable[..., Any]) -> None:
        """Two workers (on uvloop when installed) serve one port; the one metrics endpoint counts every request."""
        raw, _ = _config(tmp_path, upstream_url, metrics={"address": "127.0.0.1:0"})
        gatehouse = await launch(raw)
        started = await gatehouse.started()
        listeners = {tuple(e["listeners"]) for e in gatehouse.named("gateway.started")}

        statuses = await _spread_requests(f"{started['listeners'][0]}/.gatehouse/healthz", 40)
        async with aiohttp.ClientSession() as session, session.get(started["metrics"]) as scraped:
            metrics_text = await scraped.text()

        assert 2 == len(set(started["pids"])) == len(gatehouse.worker_pids())
        assert {tuple(started["listeners"])} == listeners
        assert not started["listeners"][0].endswith(":0")
        assert [200] * 40 == statuses
        assert set(started["pids"]) == _served_by(gatehouse.events, "/.gatehouse/healthz")
        assert 40.0 == _requests_total(metrics_text)
        assert ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio") == started["loop"]

    async def test_ingest_through_one_worker_reaches_the_other_at_once(self, tmp_path: Path, upstream_url: str, launch: Callable[..., Any]) -> None:
        """A snapshot ingested through one worker lets the device in through every worker, long before the periodic refresh."""
        raw, keys = _config(tmp_path, upstream_url)
        raw["ingest"]["cache_refresh_s"] = 300
        gatehouse = await launch(raw)
        started = await gatehouse.started()
        url = started["listeners"][0]
        now = datetime.now(UTC)  # the workers run on the real clock

        await _ingest(url, "C02OK", now)
        began = asyncio.get_running_loop().time()
        await _until_allowed_by(gatehouse, url, keys.token(ALICE, device="C02OK", now=now), set(started["pids"]), timeout=5)
        took = asyncio.get_running_loop().time() - began

        assert 1 == len(gatehouse.named("ingest.batch_received"))
        assert took < 5  # the periodic refresh is 300 s away

    async def test_sigterm_drains_every_worker_and_exits_0(self, tmp_path: Path, upstream_url: str, recorder: Recorder, launch: Callable[..., Any]) -> None:
        """On SIGTERM no worker accepts once `gateway.stopping` is logged, the in-flight request finishes, and the exit code is 0."""
        raw, keys = _config(tmp_path, upstream_url, server={"shutdown_grace_s": 10})
        gatehouse = await launch(raw)
        started = await gatehouse.started()
        url = started["listeners"][0]
        now = datetime.now(UTC)
        token = keys.token(ALICE, device="C02OK", now=now)
        await _ingest(url, "C02OK", now)
        await _until_allowed_by(gatehouse, url, token, set(started["pids"]), timeout=5)

        async with aiohttp.ClientSession() as session:
            in_flight = asyncio.create_task(session.get(f"{url}/slow", headers={"Authorization": f"Bearer {token}"}))
            await asyncio.wait_for(recorder.arrived.wait(), 10)
            gatehouse.child.send_signal(signal.SIGTERM)
            await gatehouse.until(lambda _: gatehouse.named("gateway.stopping"), "gateway.stopping")
            refused = 0
            for _ in range(10):  # each on a new connection, whichever worker the kernel would pick
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    await _spread_requests(f"{url}/late", 1)
                    continue
                refused += 1
            recorder.release.set()
            response = await asyncio.wait_for(in_flight, 10)
            body = await response.read()
            response.release()
        exit_code = await asyncio.wait_for(gatehouse.child.wait(), 20)

        assert 10 == refused
        assert 200 == response.status
        assert b'"raw_path":"/slow"' in body
        assert set(started["pids"]) == gatehouse.worker_pids("gateway.stopped")
        assert 0 == exit_code
        assert [0] == [e["exit_code"] for e in gatehouse.named("supervisor.stopped")]

    async def test_killed_worker_is_restarted_and_its_counts_stay(self, tmp_path: Path, upstream_url: str, launch: Callable[..., Any]) -> None:
        """A worker killed with SIGKILL is logged and replaced; requests it counted stay in the aggregated metrics."""
        raw, _ = _config(tmp_path, upstream_url, metrics={"address": "127.0.0.1:0"})
        gatehouse = await launch(raw)
        started = await gatehouse.started()
        healthz = f"{started['listeners'][0]}/.gatehouse/healthz"
        await _spread_requests(healthz, 20)
        victim = started["pids"][0]

        os.kill(victim, signal.SIGKILL)
        exited = await gatehouse.until(lambda _: next((e for e in gatehouse.named("worker.exited") if e["pid"] == victim), None), "worker.exited")
        replacement = await gatehouse.until(lambda _: gatehouse.worker_pids() - set(started["pids"]), "a new worker")
        statuses = await _spread_requests(healthz, 20)
        async with aiohttp.ClientSession() as session, session.get(started["metrics"]) as scraped:
            metrics_text = await scraped.text()

        assert ("SIGKILL", 0.5) == (exited["signal"], exited["restart_in_s"])
        assert 1 == len(replacement)
        assert [200] * 20 == statuses
        assert 40.0 == _requests_total(metrics_text)
        assert None is gatehouse.child.returncode

    async def test_sighup_reloads_every_worker(self, tmp_path: Path, upstream_url: str, launch: Callable[..., Any]) -> None:
        """SIGHUP to the supervisor makes every worker load the configuration again, without asking for a restart."""
        raw, _ = _config(tmp_path, upstream_url)
        gatehouse = await launch(raw)
        started = await gatehouse.started()
        raw["routes"].insert(0, {"id": "new", "upstream": upstream_url, "tier": "low", "path_prefix": "/new"})
        (tmp_path / "gatehouse.yaml").write_text(yaml.safe_dump(raw))

        gatehouse.child.send_signal(signal.SIGHUP)
        reloaded = await gatehouse.until(
            lambda _: gatehouse.named("config.reloaded") if gatehouse.worker_pids("config.reloaded") == set(started["pids"]) else None,
            "config.reloaded from every worker",
        )

        assert [(2, False)] * 2 == [(e["routes"], e["restart_needed"]) for e in reloaded]

    async def test_workers_stop_when_the_supervisor_is_killed(self, tmp_path: Path, upstream_url: str, launch: Callable[..., Any]) -> None:
        """Workers whose supervisor died (SIGKILL) notice the closed control socket and stop instead of lingering."""
        raw, _ = _config(tmp_path, upstream_url)
        gatehouse = await launch(raw)
        started = await gatehouse.started()

        gatehouse.child.kill()
        await gatehouse.until(lambda _: gatehouse.worker_pids("gateway.stopped") == set(started["pids"]), "gateway.stopped from every worker")

        assert set(started["pids"]) == gatehouse.worker_pids("worker.orphaned")

    async def test_worker_that_cannot_bind_fails_the_start(self, tmp_path: Path, upstream_url: str, launch: Callable[..., Any]) -> None:
        """A listener port held by another program (without SO_REUSEPORT) stops every worker; the exit code is 1."""
        raw, _ = _config(tmp_path, upstream_url)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            raw["listeners"] = [{"address": f"127.0.0.1:{taken.getsockname()[1]}"}]
            gatehouse = await launch(raw)

            exit_code = await asyncio.wait_for(gatehouse.child.wait(), 30)
            await gatehouse.until(lambda _: gatehouse.ended, "the end of the log")

        assert 1 == exit_code
        assert gatehouse.named("gateway.start_failed")
        assert [] == gatehouse.named("supervisor.started")


class TestWorkerLink:
    async def test_the_store_s_local_notices_are_forwarded_to_the_supervisor(self, tmp_path: Path) -> None:
        """Each write the worker's SQLite store announces (snapshots, audit) reaches the supervisor as `changed`; a write that changes nothing does not."""
        ours, theirs = socket.socketpair()
        store = await SqliteStore.open(tmp_path / "gatehouse.db")
        app = web.Application()
        app[STORE] = store
        WorkerLink(theirs).prepare(app)
        runner = web.AppRunner(app)
        await runner.setup()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        try:
            await store.put_snapshots([make_snapshot()])
            await store.put_snapshots([make_snapshot()])  # a duplicate: nothing changed
            await (await store.audit_sink()).append(make_chain(1))
            lines = [await asyncio.wait_for(reader.readline(), 5) for _ in range(2)]
        finally:
            await runner.cleanup()  # before our end closes: an orphaned link would stop this process
            await store.close()
        rest = await asyncio.wait_for(reader.read(), 5)
        writer.close()

        assert ([b"changed\n", b"changed\n"], b"") == (lines, rest)


class TestWorkerSettings:
    def test_worker_settings_share_ports_and_secret_and_drop_metrics(self, tmp_path: Path) -> None:
        """A worker binds the reserved ports, serves no metrics, shares the CSRF secret and refreshes its cache every second."""
        raw, _ = _config(tmp_path, "http://127.0.0.1:1")
        raw["listeners"] = [{"address": "127.0.0.1:0"}, {"address": "127.0.0.1:8443"}]
        raw["metrics"] = {"address": "127.0.0.1:9090"}
        settings = parse_settings(raw, source="t.yaml", base_dir=tmp_path, environ={})
        spec = {"listeners": [("127.0.0.1:0", "127.0.0.1:41000"), ("127.0.0.1:8443", "127.0.0.1:8443")], "csrf_secret": "s" * 64, "cache_refresh_s": 1.0}

        worker = worker_settings(settings, spec)

        assert ["127.0.0.1:41000", "127.0.0.1:8443"] == [listener.address for listener in worker.listeners]
        assert None is worker.metrics.address
        assert worker.breakglass.csrf_secret is not None and "s" * 64 == worker.breakglass.csrf_secret.reveal()
        assert 1.0 == worker.ingest.cache_refresh_s

    def test_configured_secret_and_refresh_are_kept(self, tmp_path: Path) -> None:
        """A configured CSRF secret and an explicit cache_refresh_s are the operator's; workers keep them."""
        raw, _ = _config(tmp_path, "http://127.0.0.1:1", breakglass={"csrf_secret": {"value": "c" * 40}})
        raw["ingest"]["cache_refresh_s"] = 30
        settings = parse_settings(raw, source="t.yaml", base_dir=tmp_path, environ={})

        worker = worker_settings(settings, {"listeners": [("127.0.0.1:0", "127.0.0.1:41000")], "csrf_secret": "s" * 64, "cache_refresh_s": 1.0})

        assert worker.breakglass.csrf_secret is not None and "c" * 40 == worker.breakglass.csrf_secret.reveal()
        assert 30 == worker.ingest.cache_refresh_s

    def test_fewer_than_one_worker_is_refused(self, tmp_path: Path) -> None:
        """``run`` refuses a worker count below 1 before reading anything."""
        with pytest.raises(ValueError, match="give 1 or more"):
            run(tmp_path / "missing.yaml", environ={}, workers=0)
