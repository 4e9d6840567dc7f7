"""Wiring of the ingest app: the background cleanup_ctx and the "check again" refresh request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.ingest.http import ingest_background, request_osquery_refresh
from gateway.ingest.osquery import OsqueryRequestError
from gateway.keys import INGEST_SETTINGS, SNAPSHOT_CACHE
from gateway.store.snapshots import SnapshotCache
from gateway.store.sqlite import SqliteStore
from tests.gateway.ingest.conftest import Ingest
from tests.gateway.ingest.support import FakeClock, build_ingest_app, fixture, gatehouse_for_ingest, ingest_settings, store_path
from tests.gateway.store.snapshots import make_snapshot


class TestIngestBackground:
    async def test_cache_is_loaded_at_start_and_tasks_stop_at_shutdown(
        self, aiohttp_client: Callable[..., Awaitable[TestClient]], clock: FakeClock, tmp_path: Path
    ) -> None:
        """Starting the app fills the cache from the store; closing it ends the background tasks."""
        store = await SqliteStore.open(store_path(tmp_path))
        await store.put_snapshots([make_snapshot("A")])
        await store.close()
        app = build_ingest_app(gatehouse_for_ingest(tmp_path), clock)

        client = await aiohttp_client(app)
        cache = app[SNAPSHOT_CACHE]
        loaded = (cache.loaded, cache.get("A"))
        await client.close()

        assert (True, make_snapshot("A")) == loaded

    async def test_a_broken_pack_stops_startup(self, store: SqliteStore, tmp_path: Path) -> None:
        """A custom osquery pack that cannot be read fails at start, naming the setting, before the cache loads."""
        (tmp_path / "pack.json").write_text('{"queries": [1, 2]}', encoding="utf-8")
        app = web.Application()  # not served: only the keys ingest_background reads
        app[SNAPSHOT_CACHE] = cache = SnapshotCache(store)
        app[INGEST_SETTINGS] = ingest_settings(osquery_pack=tmp_path / "pack.json")

        with pytest.raises(OsqueryRequestError, match="ingest.osquery_pack"):
            await anext(ingest_background(app))

        assert False is cache.loaded


class TestRequestOsqueryRefresh:
    async def test_osquery_device_gets_its_platform_queries_once(self, ingest: Ingest) -> None:
        """"Check again" queues the device's posture queries once and says how long the agent may take."""
        response = await ingest.client.post("/.gatehouse/osquery/enroll", json=fixture("enroll_request_linux.json"))
        node_key = (await response.json())["node_key"]
        snapshot_log = fixture("log_result_snapshot.json")
        snapshot_log["node_key"] = node_key
        await ingest.client.post("/.gatehouse/osquery/log", json=snapshot_log)

        wait_s = await request_osquery_refresh(ingest.client.app, "PF3ABCDE")
        first = await ingest.store.pending_queries("PF3ABCDE")
        await request_osquery_refresh(ingest.client.app, "PF3ABCDE")

        assert 60 == wait_s
        assert first == await ingest.store.pending_queries("PF3ABCDE")
        assert {"zt_os_version", "zt_firewall_linux", "zt_disk_encryption_linux"} <= {q.query_name for q in first}
        assert not any(q.query_name.endswith(("_darwin", "_windows")) or q.query_name in ("zt_sip", "zt_gatekeeper") for q in first)

    async def test_device_not_on_osquery_gets_none(self, ingest: Ingest) -> None:
        """A device known only through the API (or not at all) has no agent to ask."""
        ingest.cache.apply(make_snapshot("API1"))

        assert (None, None) == (await request_osquery_refresh(ingest.client.app, "API1"), await request_osquery_refresh(ingest.client.app, "NOPE"))

