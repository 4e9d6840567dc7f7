"""The background pass of break-glass: other replicas' entries, due expiries, the gauges.

Owns: run_maintenance, breakglass_maintenance_ctx.
Must not import: the gateway.gate.admission of this package.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from breakglass import AuditWriteError
from gateway.keys import BREAKGLASS, BREAKGLASS_WEB, CLOCK, METRICS
from gateway.web.breakglass.notify import set_active_gauge

_log = structlog.get_logger("gateway.breakglass")


async def run_maintenance(app: web.Application) -> None:
    """One pass: read other replicas' entries, write due expiries, set the active and oldest-unreviewed gauges."""
    service = app[BREAKGLASS]
    now = app[CLOCK]()
    with contextlib.suppress(AuditWriteError):
        await service.refresh()
    try:
        expired = await service.expire_due(now=now)
    except AuditWriteError as exc:
        _log.error("grant.expiry_failed", error=str(exc))
        expired = ()
    for grant in expired:
        _log.info("grant.expired", grant_id=grant.id, user=grant.user, tier=grant.scope.tier)
    set_active_gauge(app.get(METRICS), service, now)


async def breakglass_maintenance_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: ``run_maintenance`` every ``maintenance_interval_s`` while the app runs."""
    interval = app[BREAKGLASS_WEB].settings.maintenance_interval_s

    async def loop() -> None:
        while True:
            try:
                await run_maintenance(app)
            except Exception as exc:  # keep the loop alive; the next pass retries
                _log.error("breakglass.maintenance_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name="breakglass-maintenance")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
