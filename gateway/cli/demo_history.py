"""The demo's past: 89 days of scripted health, access and break-glass for the seven demo devices.

Owns: HISTORY_DAYS, the script (CHANGES, REPORTING, BREAK_GLASS, REVIEWER), seed_demo_history.
Must not import: gateway.serve.server, gateway.cli.commands (the demo calls this before it serves).

So that `gatehouse report` and ``/.gatehouse/admin/compliance`` have something to show, the demo's
first start (a store with no compliance history) writes what Gatehouse would have recorded had it
run for the ``DEMO_HISTORY_DAYS`` (89) UTC days before that day; the store keeps 90 days of history
(``ingest.history_retention_days``) and prunes older entries hourly. Nothing here states an
outcome; the script only says what each device reported and when its owner used the demo
services, and Gatehouse's own code decides:

- each day, demo device number ``i`` (``DEMO_DEVICES`` order) is evaluated at 09:00 UTC plus
  ``10 i`` minutes, on the device's current demo snapshot changed as ``CHANGES`` says for that day,
  by the policy in force (``ComplianceFromPolicy``); the entry goes through the store's
  ``record_compliance``, which keeps failing-since (so grace periods run from the scripted failures);
- an hour after its evaluation the owner sends 4 requests to ``public`` (low), 8 to ``wiki``
  (medium) and 2 to ``admin`` (high) from a snapshot a minute old; each burst is decided by
  ``gateway.gate.decide.decide`` (with the failing-since the store holds and the grants in force) and
  counted by the access ledger's own rules (``AccessLedger``); a denied burst counts one request
  (the owner saw the denial and stopped). After a device stops reporting its owner tries ``wiki``
  once a day (denied, ``snapshot-stale``);
- ``BREAK_GLASS``: five minutes after a denied ``wiki`` burst the owner asks for medium-tier
  break-glass (2 h), ``REVIEWER`` approves it ten minutes later, the owner sends 6 ``wiki``
  requests a minute after that, and the grant's expiry is written when it falls due; a review is
  written at 16:00 UTC on the day given. Every step goes through ``BreakglassService`` into the
  hash-chained audit log, in time order;
- a change with ``fixed_after`` ends that long after the day's evaluation, with an extra
  evaluation then (the agent reported the fix; the history records a change at once).

The story, consistent with what the demo shows today (``DEMO_DEVICES``): the healthy Mac ran
macOS 14.6 until 40 days ago (a nudge only); the healthy Ubuntu laptop ran 22.04 until 81 days ago,
past its 7-day grace (denied, fixed the next day); the healthy Windows laptop had BitLocker
suspended 30 days ago for 4 h (denied, break-glass approved and reviewed); the old Mac first
reported 8 days ago on macOS 13.2.1 (in grace for 7 days, denied since); the Mac with the firewall
off had it off 33 and 32 days ago too (within grace) and turned it off again today; the Linux
desktop was reinstalled without disk encryption 12 days ago (denied, break-glass approved, not yet
reviewed); the stale Windows laptop reported daily until 4 days ago. Ledger rows are added as one
batch of writer ``gatehouse-demo-history``, which the store adds at most once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import structlog
from prometheus_client import CollectorRegistry

from breakglass import BreakglassService, GrantRequest, Scope
from gateway.app import ComplianceFromPolicy
from gateway.config.breakglass import tier_rule
from gateway.web.breakglass import failing_checks_of
from gateway.cli.demo import DEMO_DEVICES, DEMO_HISTORY_DAYS, DEMO_ISSUER, demo_snapshots
from gateway.gate.decide import GateOutcome, Verdict, decide
from gateway.identity.model import DeviceId, Identity
from gateway.gate.ledger import AccessLedger, ledger_entry
from gateway.metrics import Metrics
from gateway.config.policy_file import PolicyHolder
from gateway.config.settings import RouteSettings, Settings
from gateway.store import open_store
from gateway.store.base import HistoryEntry, Store
from policy_engine import DeviceSnapshot, Version

_log = structlog.get_logger("gateway.demo")

HISTORY_DAYS = DEMO_HISTORY_DAYS
LEDGER_WRITER = "gatehouse-demo-history"
REVIEWER = "dave@example.com"
"""The demo's security engineer: approves and reviews break-glass (groups: the configured approver and reviewer groups)."""
BURSTS = (("public", 4), ("wiki", 8), ("admin", 2))
"""Requests each owner sends an hour after each evaluation, per route."""
BREAK_GLASS_REQUESTS = 6
BREAK_GLASS_DURATION = timedelta(hours=2)
BREAK_GLASS_REASON = "on call: the incident needs the wiki runbook now"
REVIEW_COMMENT = "checked with the engineer: incident work, device fixed since"
_ASKED_AFTER = timedelta(hours=1)
_SNAPSHOT_AGE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Change:
    """From ``first`` to ``last`` days before the demo's first day (both included) the device reported ``facts``.

    Later changes in ``CHANGES`` override earlier ones. With ``fixed_after``, the change ends that
    long after the evaluation of day ``last``.
    """

    serial: str
    first: int
    last: int
    facts: Mapping[str, object]
    fixed_after: timedelta | None = None


CHANGES: tuple[Change, ...] = (
    Change("C02DEMOMAC1", HISTORY_DAYS, 41, {"os_version": "14.6"}),
    Change("PF3DEMOLNX1", HISTORY_DAYS, 82, {"os_version": "22.04"}),
    Change("5CG3DEMOWIN1", 30, 30, {"disk_encrypted": False}, fixed_after=timedelta(hours=4)),
    Change("C02DEMONOFW", HISTORY_DAYS, 1, {"firewall_enabled": True}),
    Change("C02DEMONOFW", 33, 32, {"firewall_enabled": False}),
    Change("PF3DEMONOLUKS", HISTORY_DAYS, 13, {"disk_encrypted": True}),
)
REPORTING: Mapping[str, tuple[int, int]] = {"C02DEMOOLD1": (8, 1), "5CG3DEMOSTALE": (HISTORY_DAYS, 4)}
"""Devices that reported on fewer days: (first, last) days before today; the others report on every day."""
BREAK_GLASS: Mapping[tuple[str, int], int | None] = {("5CG3DEMOWIN1", 30): 29, ("PF3DEMONOLUKS", 12): None}
"""(serial, day) of a break-glass request → the day its grant is reviewed (None: not yet)."""


@dataclass(frozen=True, slots=True)
class SeededHistory:
    """What the demo's first start recorded."""

    evaluations: int
    requests: int
    grants: int


def _state(current: DeviceSnapshot, day: int, offset: timedelta) -> DeviceSnapshot:
    facts: dict[str, object] = {}
    for change in CHANGES:
        if change.serial != current.serial or not change.last <= day <= change.first:
            continue
        if day == change.last and change.fixed_after is not None and offset >= change.fixed_after:
            continue
        facts.update(change.facts)
    if "os_version" in facts:
        facts["os_version"] = Version.parse(str(facts["os_version"]))
    return dataclasses.replace(current, **facts)  # type: ignore[arg-type]


def _reports(serial: str, day: int) -> bool:
    first, last = REPORTING.get(serial, (HISTORY_DAYS, 1))
    return last <= day <= first


async def seed_demo_history(settings: Settings, *, now: datetime) -> SeededHistory | None:
    """Record the demo's 89-day past into the configured store and audit log; None when it has history already.

    Raises:
        StoreError: the store failed.
        AuditWriteError, AuditIntegrityError: the audit log could not be read or written.
        GrantRejected, NotAuthorised: the configuration refuses the scripted break-glass.
    """
    store = await open_store(settings.store.reveal())
    try:
        async for _ in store.iter_history(since=datetime(1970, 1, 1, tzinfo=UTC)):
            return None
        service = await BreakglassService.open(await store.audit_sink(), config=settings.breakglass.to_config())
        return await _record(store, service, settings, today=now.astimezone(UTC).date())
    finally:
        await store.close()


async def _record(store: Store, service: BreakglassService, settings: Settings, *, today: date) -> SeededHistory:
    if settings.policy is None:
        raise ValueError("the demo configuration names no policy; the demo history needs one")
    holder = PolicyHolder.load(settings.policy)
    policies = holder.current
    results_of = ComplianceFromPolicy(holder)
    routes = {r.id: r for r in settings.routes}
    wiki = routes["wiki"]
    tier = policies.tier(wiki.tier)
    if tier is None:
        raise ValueError(f"the policy has no tier `{wiki.tier}` for the demo route `wiki`")
    rule = tier_rule(tier, settings.breakglass)
    ledger = AccessLedger(max_pending_rows=1_000_000, metrics=Metrics(CollectorRegistry()), writer=LEDGER_WRITER)
    groups = frozenset(settings.breakglass.approver_groups) | frozenset(settings.breakglass.reviewer_groups)
    owner_of = {d.serial: d.owner for d in DEMO_DEVICES}
    started = datetime.combine(today, time.min, tzinfo=UTC)
    current = {s.serial: s for s in demo_snapshots(started)}
    last_report: dict[str, DeviceSnapshot] = {}
    reviews: dict[int, list[str]] = {}
    evaluations = requests = grants = 0

    async def burst(serial: str, route: RouteSettings, n: int, snapshot: DeviceSnapshot, at: datetime) -> GateOutcome:
        nonlocal requests
        owner = owner_of[serial]
        identity = Identity(owner, owner, (), DEMO_ISSUER, "bearer", at + timedelta(hours=1), serial)
        outcome = decide(identity, DeviceId(serial, "claim"), snapshot, route, policies=policies, now=at,
                         failing_since=await store.failing_since(serial), grants=service, owners=(owner,))
        if outcome.verdict is Verdict.BREAK_GLASS and outcome.grant is not None:
            await service.record_use(outcome.grant.id, route_id=route.id, now=at)
        count = 1 if outcome.verdict is Verdict.DENY else n
        verdict, reason = ledger_entry(outcome)
        for _ in range(count):
            ledger.count(at, route.id, route.tier, owner, serial, verdict, reason)
        requests += count
        return outcome

    def reported(serial: str, day: int, offset: timedelta, at: datetime) -> DeviceSnapshot:
        return dataclasses.replace(_state(current[serial], day, offset), collected_at=at, received_at=at)

    for day in range(HISTORY_DAYS, 0, -1):
        midnight = started - timedelta(days=day)
        for i, device in enumerate(DEMO_DEVICES):
            serial = device.serial
            evaluated = midnight + timedelta(hours=9, minutes=10 * i)
            asked = evaluated + _ASKED_AFTER
            if not _reports(serial, day):
                if serial in last_report and day < REPORTING[serial][1] - 1:
                    await burst(serial, wiki, 1, last_report[serial], asked)
                continue
            fixes = [c.fixed_after for c in CHANGES if c.serial == serial and c.last == day and c.fixed_after is not None]
            for offset in sorted([timedelta(0), _ASKED_AFTER, *fixes]):
                if offset != _ASKED_AFTER:
                    snapshot = last_report[serial] = reported(serial, day, offset, evaluated + offset)
                    await store.record_compliance(HistoryEntry(serial, (device.owner,), snapshot.collected_at,
                                                               dict(results_of(snapshot) or {})))
                    evaluations += 1
                    continue
                fresh = reported(serial, day, offset, asked - _SNAPSHOT_AGE)
                for route_id, n in BURSTS:
                    outcome = await burst(serial, routes[route_id], n, fresh, asked)
                    if route_id != "wiki" or outcome.verdict is not Verdict.DENY or (serial, day) not in BREAK_GLASS:
                        continue
                    grant = await service.request(
                        GrantRequest(device.owner, device.owner, serial, Scope.for_tier(wiki.tier), BREAK_GLASS_REASON,
                                     BREAK_GLASS_DURATION, failing_checks_of(outcome.decision)),
                        rule=rule, now=asked + timedelta(minutes=5))
                    grant = await service.approve(grant.id, approver=REVIEWER, approver_groups=groups, now=asked + timedelta(minutes=15))
                    grants += 1
                    used = asked + timedelta(minutes=16)
                    await burst(serial, wiki, BREAK_GLASS_REQUESTS, reported(serial, day, offset, used - _SNAPSHOT_AGE), used)
                    if grant.expires_at is not None:
                        await service.expire_due(now=grant.expires_at)
                    review_day = BREAK_GLASS[(serial, day)]
                    if review_day is not None:
                        reviews.setdefault(review_day, []).append(grant.id)
        for grant_id in reviews.pop(day, []):
            await service.mark_reviewed(grant_id, reviewer=REVIEWER, reviewer_groups=groups, comment=REVIEW_COMMENT,
                                        now=midnight + timedelta(hours=16))
    await ledger.flush(store)
    _log.info("demo.history_recorded", days=HISTORY_DAYS, evaluations=evaluations, requests=requests, grants=grants)
    return SeededHistory(evaluations, requests, grants)
