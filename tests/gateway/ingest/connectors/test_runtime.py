"""Connectors in a running Gatehouse (through the production listener): readiness and the command line."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import orjson

from gateway.cli.commands import try_connector
from gateway.keys import CONNECTORS
from tests.gateway.ingest.conftest import StartIngest
from tests.gateway.ingest.connectors.conftest import Serve
from tests.gateway.ingest.connectors.contract import FLEET_TOKEN, Failure, VendorState, fleet_app
from tests.gateway.fullstack import Keys, gatehouse_config
from tests.gateway.ingest.support import UNUSED_UPSTREAM, ingest_section, store_path


async def test_readiness_lists_a_connector_without_a_recent_pass_as_degraded(start_ingest: StartIngest, serve: Serve, vendor: VendorState) -> None:
    """A connector whose passes fail is `degraded` (still ready); after a good pass it is not listed."""
    vendor.fail("/api/v1/fleet/hosts", *[Failure(503)] * 5)
    url = await serve(fleet_app(vendor))
    ingest = await start_ingest(connectors=[{"kind": "fleet", "name": "corp", "url": url, "api_token": {"value": FLEET_TOKEN},
                                             "attempts": 1, "every_s": 3600}])

    before = await (await ingest.client.get("/.gatehouse/readyz")).json()
    vendor.failures.clear()
    await ingest.app[CONNECTORS]["corp"].sync_once()
    after = await (await ingest.client.get("/.gatehouse/readyz")).json()

    assert (True, ["connector:corp"]) == (before["ready"], [d for d in before["degraded"] if d.startswith("connector:")])
    assert [] == [d for d in after["degraded"] if d.startswith("connector:")]


async def test_connectors_test_prints_what_it_would_store_and_stores_nothing(tmp_path: Path, serve: Serve, vendor: VendorState, now: datetime) -> None:
    """`gatehouse connectors test corp` prints one line per host of the first page and a summary."""
    url = await serve(fleet_app(vendor))
    keys = Keys(tmp_path / "keys")
    connector = {"kind": "fleet", "name": "corp", "url": url, "api_token": {"value": FLEET_TOKEN}, "page_size": 2}
    raw = gatehouse_config(keys, store=f"sqlite:///{store_path(tmp_path)}", upstream=UNUSED_UPSTREAM, ingest=ingest_section(connectors=[connector]))
    config = keys.dir / "gatehouse.yaml"
    config.write_bytes(orjson.dumps(raw))
    out = io.StringIO()

    code = await try_connector("corp", config, clock=lambda: now, out=out)

    lines = out.getvalue().splitlines()
    assert (0, 3) == (code, len(lines))
    assert not store_path(tmp_path).exists()
    assert lines[-1].startswith("# corp: 2 of 2 records would be stored, nothing was stored (more pages follow)")
