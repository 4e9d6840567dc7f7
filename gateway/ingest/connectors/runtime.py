"""The connectors of a running Gatehouse: built from ``ingest.connectors``, polled in the background.

Owns: build_connector, connectors_ctx (the cleanup_ctx), connector_for_source, refresh_from_connector,
ConnectorRefresh, REFRESH_LIMIT_S.
Must not import: gateway.app.

Each configured connector gets a ConnectorRunner; every replica and worker runs one per connector,
and the lease in the store lets only one of them poll at a time. Readiness gets a degradable check
``connector:<name>`` per connector: it fails (listed under ``degraded``, never making the replica
unready) while no complete pass is more recent than the connector's ``stale_after_s``.

"I fixed it, check again" (gateway/web/portal.py) asks a connector-fed device's vendor for that one
device (``refresh_from_connector``) before deciding; a vendor that fails or takes longer than
``REFRESH_LIMIT_S`` is reported on the page, and the decision uses the snapshots already stored.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import structlog

from aiohttp import web

from gateway.config.ingest import ConnectorSettings, FleetConnectorSettings
from gateway.ingest.connectors.base import Clock, Connector, ConnectorError, ConnectorRunner, Sleep
from gateway.ingest.connectors.fleet import FleetConnector
from gateway.ingest.connectors.jamf import JamfConnector
from gateway.ingest.pipeline import Ingestor
from gateway.keys import CLOCK, COMPLIANCE_RECORDER, CONNECTORS, INGEST_RUNTIME, INGEST_SETTINGS, METRICS, READINESS, SNAPSHOT_CACHE, STORE
from policy_engine.model import DeviceSnapshot

_log = structlog.get_logger(__name__)

REFRESH_LIMIT_S = 10.0
"""The longest "check again" waits for a vendor (retries included) before deciding on what it has."""


def build_connector(settings: ConnectorSettings, *, sleep: Sleep, clock: Clock, max_future_skew: timedelta) -> Connector:
    """The connector a settings entry describes."""
    if isinstance(settings, FleetConnectorSettings):
        return FleetConnector(settings, sleep=sleep, max_future_skew=max_future_skew)
    return JamfConnector(settings, sleep=sleep, clock=clock, max_future_skew=max_future_skew)


def replica_name() -> str:
    """Who holds a lease: host, process and a random part (two runs of one process never share it)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def connectors_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: one runner per configured connector, polling until shutdown (after the store and cache are up)."""
    settings = app[INGEST_SETTINGS]
    runners: dict[str, ConnectorRunner] = {}
    app[CONNECTORS] = runners
    if not settings.connectors:
        yield
        return
    clock = app[CLOCK]
    store = app[STORE]
    runtime = app.get(INGEST_RUNTIME)
    ingestor = Ingestor(store, app[SNAPSHOT_CACHE], metrics=app.get(METRICS), recorder=app.get(COMPLIANCE_RECORDER),
                        throttle=runtime.throttle if runtime is not None else None)
    holder = replica_name()
    for entry in settings.connectors:
        connector = build_connector(entry, sleep=asyncio.sleep, clock=clock, max_future_skew=timedelta(seconds=settings.max_future_skew_s))
        runner = ConnectorRunner(
            connector, store=store, owners=store if entry.owners_to_inventory else None, ingestor=ingestor, clock=clock,
            sleep=asyncio.sleep, holder=holder, every_s=entry.every_s, stale_after_s=entry.stale_after_s, metrics=app.get(METRICS),
        )
        runners[entry.name] = runner
        app[READINESS].add(f"connector:{entry.name}", runner.fresh, degrades=True)
    tasks = [asyncio.create_task(r.run(), name=f"connector-{n}") for n, r in runners.items()]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for runner in runners.values():
            await runner.connector.close()


def connector_for_source(app: web.Application, source: str) -> ConnectorRunner | None:
    """The runner whose snapshots carry ``source`` (``fleet:<name>``), if it is configured."""
    for runner in app.get(CONNECTORS, {}).values():
        if runner.connector.source == source:
            return runner
    return None


@dataclass(frozen=True, slots=True)
class ConnectorRefresh:
    """What asking a connector-fed device's vendor for it ("check again") came to."""

    vendor: str
    """The vendor as users know it: ``Fleet``, ``Jamf Pro``."""
    hint: str
    """How soon the vendor's data about a device changes (the connector's ``refresh_hint``)."""
    error: str = ""
    """Why the vendor could not be read; empty when it answered."""


async def refresh_from_connector(app: web.Application, snapshot: DeviceSnapshot | None) -> ConnectorRefresh | None:
    """For a connector-fed device, read it from its vendor now and store it ("check again"); None for other devices.

    A vendor that fails after its retries, or takes longer than ``REFRESH_LIMIT_S``, is logged
    (``connector.refresh_failed``) and named in the result; the snapshots already stored stay.

    Raises:
        StoreError: the vendor answered but the store could not take the snapshot.
    """
    if snapshot is None:
        return None
    runner = connector_for_source(app, snapshot.source)
    if runner is None:
        return None
    connector = runner.connector
    try:
        async with asyncio.timeout(REFRESH_LIMIT_S):
            await runner.refresh_device(snapshot.serial)
    except ConnectorError as exc:
        error = str(exc)
    except TimeoutError:
        error = f"{connector.label} did not answer within {REFRESH_LIMIT_S:.0f} s"
    else:
        return ConnectorRefresh(connector.label, connector.refresh_hint)
    _log.warning("connector.refresh_failed", connector=connector.name, serial=snapshot.serial, error=error)
    return ConnectorRefresh(connector.label, connector.refresh_hint, error)


__all__ = ["REFRESH_LIMIT_S", "ConnectorRefresh", "build_connector", "connector_for_source", "connectors_ctx", "refresh_from_connector", "replica_name"]
