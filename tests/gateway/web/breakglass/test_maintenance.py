"""The break-glass maintenance pass: expiries written to the audit log, the active and oldest-unreviewed gauges."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from breakglass import EventKind
from gateway.web.breakglass import run_maintenance
from tests.gateway.web.breakglass.support import Harness, ask


async def test_maintenance_writes_expiries_and_sets_the_gauge(client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
    """One maintenance pass after expiry writes `expired` to the log and sets the active gauge to zero."""
    await ask(client)
    assert 1.0 == harness.count("gatehouse_breakglass_active_grants")
    harness.clock.advance(minutes=30)

    await run_maintenance(harness.app)

    grant = harness.service.list_grants(now=harness.clock())[0]
    assert EventKind.EXPIRED is harness.service.events_for(grant.id)[-1].kind
    assert 0.0 == harness.count("gatehouse_breakglass_active_grants")


async def test_maintenance_sets_the_oldest_unreviewed_grant_age(client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
    """The gauge is the age of the oldest granted grant no reviewer has reviewed yet, and 0 once it is reviewed."""
    _, body = await ask(client)
    harness.clock.advance(hours=25)
    await run_maintenance(harness.app)
    unreviewed = harness.count("gatehouse_breakglass_oldest_unreviewed_age_seconds")
    await harness.service.mark_reviewed(body["id"], reviewer="rita", reviewer_groups=frozenset({"security-review"}),
                                        comment="paged incident, fine", now=harness.clock())

    await run_maintenance(harness.app)

    assert 25 * 3600.0 == unreviewed
    assert 0.0 == harness.count("gatehouse_breakglass_oldest_unreviewed_age_seconds")
