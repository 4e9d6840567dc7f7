"""The gate on the request path: verified user → verified device → snapshot from memory → decision.

Owns: PolicyGate (the Gate that app.py installs for a full Gatehouse; the policy in force is
gateway.config.policy_file's PolicyHolder), device_owners, note_use (a break-glass use, on
record before the request is served).
Must not import: app, gateway.serve, cli, pages or views (what the gate answers instead of proxying is
rendered by its ``answers``, ``gateway.web.gate_pages.GatePages``).

Nothing here touches the store: snapshots come from the in-memory cache, grants from the
break-glass service's in-memory index, decisions from the memo or the compiled policy. A failure
anywhere in the gate raises, and the middleware answers 500 without proxying: it never grants.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web

from breakglass import AuditWriteError, Grant, GrantNotFound
from gateway.gate.decide import GateOutcome, Verdict, decide
from gateway.gate.admission import Admission, GateAnswers
from gateway.logging import log_context_var
from gateway.identity.errors import AuthenticationError
from gateway.identity.model import DeviceId, Identity, PostureSummary
from gateway.identity.resolver import IdentityResolver
from gateway.request import RequestHead, RequestLike
from gateway.keys import BREAKGLASS, CLOCK, CONFIG, DEVICE, IDENTITY, METRICS, OUTCOME, SNAPSHOT_CACHE, USER
from gateway.gate.ledger import DENIED, AccessLedger, LedgerRow, ledger_entry
from gateway.metrics import Metrics
from gateway.config.policy_file import PolicyHolder
from gateway.proxy.routing import Route
from gateway.store.snapshots import SnapshotCache
from gateway.store.base import AccessVerdict
from policy_engine import CompiledPolicySet, DeviceSnapshot

_log = structlog.get_logger("gateway.gate")
_USER_VAR, _DEVICE_VAR, _TIER_VAR, _DECISION_VAR, _REASON_VAR = (
    log_context_var(name) for name in ("user", "device", "tier", "decision", "reason")
)


def device_owners(app: Mapping[Any, Any], serial: str) -> tuple[str, ...]:
    """Who owns the device, as owner binding and the pages see it (``SnapshotCache.owners_of`` under the live settings)."""
    trust = bool(app[CONFIG].current.settings.ingest.trust_reported_owners)
    return tuple(app[SNAPSHOT_CACHE].owners_of(serial, trust_reported=trust))


_ADMITTED_MAX = 10_000
"""Admissions kept for ``admit_now`` before the memo starts over."""


_Tallied = tuple[tuple[Any, ...], float | None]
"""What ``_account`` adds to the metrics for an outcome: the counter children (decisions, failing checks,
would-deny), and the snapshot age observed (None: no snapshot). Worked out once per kept admission."""


class _Admitted:
    """An allowed request's inputs (compared by identity), the Admission given for them and what each request counts."""

    __slots__ = ("identity", "route", "policies", "snapshot", "inventory", "valid_until", "outcome", "admission", "ledger_row", "tallied")

    def __init__(
        self, identity: Identity, route: Route, policies: CompiledPolicySet, snapshot: DeviceSnapshot, inventory: object,
        valid_until: datetime | None, outcome: GateOutcome, admission: Admission | None, ledger_row: LedgerRow | None,
        tallied: _Tallied,
    ) -> None:
        self.identity = identity
        self.route = route
        self.policies = policies
        self.snapshot = snapshot
        self.inventory = inventory
        self.valid_until = valid_until
        self.outcome = outcome
        self.admission = admission
        self.ledger_row = ledger_row
        """Where the ledger last counted these inputs (``AccessLedger.recount``); replaced when it stops collecting."""
        self.tallied = tallied


class PolicyGate:
    """The Gate of a full Gatehouse: identity, device, snapshot, policy, break-glass, upstream headers."""

    def __init__(self, holder: PolicyHolder, *, answers: GateAnswers, ledger: AccessLedger | None = None) -> None:
        self.holder = holder
        self.answers = answers
        """Renders what the gate answers instead of proxying (``gateway.web.gate_pages.GatePages``)."""
        self.ledger = ledger
        """Counts every decision (``_account``) and every refused identity; None counts nothing."""
        self._admitted: dict[tuple[int, int, str | None, str | None], _Admitted] = {}
        self._parts: tuple[web.Application, IdentityResolver, Callable[[], datetime], SnapshotCache, Metrics] | None = None
        """``admit_now``'s app, and what it reads of it on every request (each is set once, at startup)."""

    def _judge(
        self, app: web.Application, identity: Identity, device: DeviceId | None, route: Route, now: datetime,
    ) -> tuple[GateOutcome, CompiledPolicySet, DeviceSnapshot | None]:
        """Snapshot and decision for a verified user and device; no side effects."""
        snapshot = None
        failing_since = None
        owners: tuple[str, ...] = ()
        if device is not None:
            cache = app[SNAPSHOT_CACHE]
            snapshot = cache.get(device.serial)
            if snapshot is not None:
                failing_since = cache.failing_since(device.serial)
            if route.require_owner:
                owners = device_owners(app, device.serial)
        policies = self.holder.current
        outcome = decide(
            identity, device, snapshot, route, policies=policies, now=now, failing_since=failing_since,
            grants=app.get(BREAKGLASS), memo=self.holder.memo, owners=owners,
        )
        return outcome, policies, snapshot

    async def admit(self, request: RequestLike, route: Route) -> Admission:
        app = request.app  # INVARIANT: only handle_proxied calls admit, from a route of create_app's app
        resolver = app[IDENTITY]
        metrics = app[METRICS]
        now = app[CLOCK]()
        try:
            identity = await resolver.authenticate(request, now=now)
        except AuthenticationError as err:
            structlog.contextvars.bind_contextvars(decision="unauthenticated", reason=err.reason.value, tier=route.tier)
            if self.ledger is not None:
                self.ledger.count(now, route.id, route.tier, "", "", DENIED, err.reason.value)
            return Admission.refuse(await resolver.challenge(request, err))
        request[USER] = identity
        started = time.perf_counter()
        try:
            device = resolver.device(request, identity, now=now)
        except AuthenticationError as err:
            structlog.contextvars.bind_contextvars(decision="unauthenticated", reason=err.reason.value, tier=route.tier)
            if self.ledger is not None:
                self.ledger.count(now, route.id, route.tier, identity.email, "", DENIED, err.reason.value)
            return Admission.refuse(await resolver.challenge(request, err))
        outcome, policies, _ = self._judge(app, identity, device, route, now)
        took = time.perf_counter() - started
        if device is not None:
            request[DEVICE] = device
        request[OUTCOME] = outcome
        serial = device.serial if device else ""
        _USER_VAR.set(identity.email)  # bind_contextvars(user=..., device=..., ...), without its lookups
        _DEVICE_VAR.set(device.serial if device else None)
        _TIER_VAR.set(route.tier)
        _DECISION_VAR.set(outcome.verdict.value)
        _REASON_VAR.set(outcome.reason)
        if outcome.verdict is Verdict.DENY:
            self._account(metrics, route, outcome, took, now, identity.email, serial)
            return Admission.refuse(self.answers.denied(request, outcome, route, policies, now=now))
        if outcome.verdict is Verdict.BREAK_GLASS and outcome.grant is not None:
            if not await note_use(app, outcome.grant, route.id, now=now):
                self._account(metrics, route, outcome, took, now, identity.email, serial, entry=(DENIED, "audit-unavailable"))
                return Admission.refuse(self.answers.audit_unavailable(request))
        self._account(metrics, route, outcome, took, now, identity.email, serial)
        return Admission.allow(
            self._upstream_headers(resolver, identity, device, route, outcome, now), strip=resolver.strip_names, drop_cookies=resolver.drop_cookies,
        )

    def admit_now(self, app: web.Application, head: RequestHead, route: Route) -> Admission | None:
        """The decision from memory: an Admission for an allowed (or monitored) request, else None (see FastGate).

        An allowed request's Admission is kept (``_Admitted``) and given again, with the decision
        counted again, while every input is the same: the same verified identity object (one per
        token in the verified-token cache, so an expired token misses), device, route object (a
        reload builds new ones), snapshot object, owner inventory entry, policy and no later than the decision's
        ``valid_until``. With upstream assertions configured the headers are built for every request
        (the signed assertion has its own reuse rule). Monitored requests are never kept: an active
        break-glass grant must be looked up, and its use recorded, on each of them.
        """
        parts = self._parts
        if parts is None or parts[0] is not app:
            # INVARIANT: identity, clock, snapshot cache and metrics are set once per app, before it serves.
            parts = self._parts = (app, app[IDENTITY], app[CLOCK], app[SNAPSHOT_CACHE], app[METRICS])
        _, resolver, clock, cache, metrics = parts
        now = clock()
        identity = resolver.identity_at_hand(head, now=now)
        if identity is None:
            return None
        started = time.perf_counter()
        try:
            device = resolver.device(head, identity, now=now, quiet=True)
        except AuthenticationError:
            return None  # ``admit`` refuses it, logs and counts
        if device is not None:
            serial = device.serial
            held = self._admitted.get((id(identity), id(route), serial, device.source))
            if held is not None and held.identity is identity and held.route is route and held.policies is self.holder.current and (
                held.valid_until is None or now < held.valid_until
            ) and cache.get(serial) is held.snapshot and cache.inventory(serial) is held.inventory:
                admission = held.admission or self._admission(resolver, identity, device, route, held.outcome, now)
                self._account(metrics, route, held.outcome, time.perf_counter() - started, now, identity.email, serial, held=held)
                return admission
        outcome, policies, snapshot = self._judge(app, identity, device, route, now)
        if outcome.verdict is not Verdict.ALLOW and outcome.verdict is not Verdict.MONITOR:
            return None  # denials and break-glass are ``admit``'s, which records and explains them
        admission = self._admission(resolver, identity, device, route, outcome, now)
        tallied = self._tallied(metrics, route, outcome)
        row = self._account(metrics, route, outcome, time.perf_counter() - started, now, identity.email, device.serial if device else "", tallied=tallied)
        if outcome.verdict is Verdict.ALLOW and device is not None and snapshot is not None:
            if len(self._admitted) >= _ADMITTED_MAX:
                self._admitted.clear()
            reusable = admission if resolver.signing_keys is None else None
            self._admitted[(id(identity), id(route), device.serial, device.source)] = _Admitted(
                identity, route, policies, snapshot, cache.inventory(device.serial), outcome.decision.valid_until, outcome, reusable, row, tallied,
            )
        return admission

    def _admission(
        self, resolver: IdentityResolver, identity: Identity, device: DeviceId | None, route: Route, outcome: GateOutcome, now: datetime,
    ) -> Admission:
        return Admission.allow(
            self._upstream_headers(resolver, identity, device, route, outcome, now), strip=resolver.strip_names,
            drop_cookies=resolver.drop_cookies, user=identity.email, device=device.serial if device else None,
            decision=outcome.verdict.value, reason=outcome.reason,
        )

    async def prepare(self, app: web.Application, head: RequestHead) -> bool:
        """Verify and cache a token ``admit_now`` did not know yet; True when ``admit_now`` may be asked again."""
        return await app[IDENTITY].verify_quietly(head, now=app[CLOCK]())

    @staticmethod
    def _upstream_headers(
        resolver: IdentityResolver, identity: Identity, device: DeviceId | None, route: Route, outcome: GateOutcome, now: datetime,
    ) -> dict[str, str]:
        age = outcome.decision.snapshot_age
        posture = PostureSummary(
            tier=route.tier,
            decision=outcome.verdict.value,
            snapshot_age_s=int(age.total_seconds()) if age is not None else None,
            failed_checks=tuple(f.check for f in outcome.decision.failing),
            break_glass=outcome.verdict is Verdict.BREAK_GLASS,
        )
        return resolver.upstream_headers(identity, device, posture, now=now)

    @staticmethod
    def _tallied(metrics: Metrics, route: Route, outcome: GateOutcome) -> _Tallied:
        """The counter children and snapshot age ``_account`` adds for ``outcome`` on ``route``."""
        decision = outcome.decision
        counters = [metrics.child(metrics.decisions, route.tier, outcome.verdict.value, outcome.reason)]
        counters += [metrics.child(metrics.failing_checks, route.tier, finding.check) for finding in decision.failing]
        if outcome.verdict is Verdict.MONITOR:
            counters.append(metrics.child(metrics.would_deny, route.id, outcome.reason))
        age = max(decision.snapshot_age.total_seconds(), 0.0) if decision.snapshot_age is not None else None
        return tuple(counters), age

    def _account(
        self, metrics: Metrics, route: Route, outcome: GateOutcome, took: float, now: datetime, user: str, device: str,
        entry: tuple[AccessVerdict, str] | None = None, held: _Admitted | None = None, tallied: _Tallied | None = None,
    ) -> LedgerRow | None:
        """Count the decision in the metrics (batched through ``metrics.tally``) and the access ledger; runs for every decided request.

        ``entry`` overrides what the ledger counts (a break-glass request refused for want of an audit record).
        ``held`` is the kept admission given again: its ledger row is counted into directly while it
        collects, else counted as usual and kept; its metrics are the ones worked out when it was
        kept (``tallied``, also given for a fresh outcome already worked out). Returns the ledger row
        counted into (None: no ledger, or dropped).
        """
        ledger = self.ledger
        row = None
        if ledger is not None:
            if held is not None and ledger.recount(held.ledger_row, now):
                row = held.ledger_row
            else:
                verdict, reason = entry if entry is not None else ledger_entry(outcome)
                row = ledger.count(now, route.id, route.tier, user, device, verdict, reason)
                if held is not None:
                    held.ledger_row = row
        counters, age = held.tallied if held is not None else tallied if tallied is not None else self._tallied(metrics, route, outcome)
        tally = metrics.tally
        tally.observe(metrics.decision_duration, took)
        for child in counters:
            tally.add(child)
        if age is not None:
            tally.observe(metrics.snapshot_age, age)
        return row


async def note_use(app: web.Application, grant: Grant, route_id: str, *, now: datetime) -> bool:
    """Count one request let through by ``grant`` (the gate's ``BREAK_GLASS`` verdict) before proxying.

    The first use is written to the audit log. Returns False when it could not be written: the
    caller must refuse the request (503), because a use that is not on record must not happen.
    Binds ``break_glass=True`` and ``grant_id`` for the ``request.completed`` line.
    """
    structlog.contextvars.bind_contextvars(break_glass=True, grant_id=grant.id)
    try:
        await app[BREAKGLASS].record_use(grant.id, route_id=route_id, now=now)
    except (AuditWriteError, GrantNotFound) as exc:
        _log.error("grant.use_refused", grant_id=grant.id, route=route_id, error=str(exc))
        return False
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.breakglass_requests.labels(route=route_id).inc()
    return True
