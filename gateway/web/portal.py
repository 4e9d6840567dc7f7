"""Gatehouse's own pages for people: "check again", the user's status, privacy, the fleet view.

Owns: the handlers of ``/.gatehouse/`` (status), ``/.gatehouse/recheck``, ``/.gatehouse/privacy``,
``/.gatehouse/admin/devices`` (and its "Revoke certificate" POST), ``/.gatehouse/admin/compliance`` (the compliance report),
``/.gatehouse/enroll/gatehouse_enroll.py`` (the one-file enrollment client), and add_portal_routes.
Must not import: app, gateway.serve, cli. Rendering lives in gateway.web.views; decisions in gateway.gate.decide.

``reserved_identity`` (web/gate_pages.py) has already verified the user on every path here but the
privacy page and the enrollment client, which are public: the privacy page describes what Gatehouse
collects before anyone signs in, and the client is downloaded with ``curl`` before the laptop has
any credential (it signs the user in itself).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from datetime import UTC, date, datetime, time, timedelta

import structlog
from aiohttp import web

from breakglass import GrantFilter, GrantStatus
from gateway.web.breakglass import csrf_token_for, grant_page_href
from gateway.web.csrf import CsrfRefused, check_form
from gateway.errors import BadRequestTarget
from gateway.gate.decide import decide
from gateway.identity.model import Identity
from gateway.identity.session import safe_return_path
from gateway.ingest.connectors import refresh_from_connector
from gateway.ingest.http import request_osquery_refresh
from gateway.ingest.snapshot_parse import serial_problem
from gateway.keys import (
    BREAKGLASS, CLOCK, CONFIG, CSRF, DEVICE, ENROLL_CLIENT_FILE, ENROLLED_CERTIFICATES, INGEST_SETTINGS, POLICY,
    SNAPSHOT_CACHE, STORE, USER,
)
from gateway.web.pages import error_response
from gateway.config.policy_file import PolicyHolder
from gateway.gate.policy_gate import device_owners
from gateway.web.gate_pages import deny_response, enroll_origin
from gateway.report import DeviceInfo, build_report
from gateway.web.views.report import COMPLIANCE_PATH, report_response
from gateway.store.base import LedgerStore, StoreError
from gateway.proxy.target import canonicalise
from gateway.web.views.fleet import FLEET_REVOKE_PATH, FleetFilter, FleetRow, FleetView, filter_rows, render_fleet
from gateway.web.views.deny import SourceRefresh
from gateway.web.views.privacy import PrivacyView, render_privacy
from gateway.web.views.enroll import CLIENT_FILE_NAME, CLIENT_PATH
from gateway.web.views.deny import platform_from_user_agent
from gateway.web.views.status import (
    CertificateRecordLike, DeviceStatus, EnrolledCertificate, GrantLine, ServiceLink, StatusView, render_status,
)
from policy_engine import CompiledPolicySet, Decision, DeviceSnapshot

_log = structlog.get_logger("gateway.portal")

STATUS_PATH = "/.gatehouse/"
RECHECK_PATH = "/.gatehouse/recheck"
PRIVACY_PATH = "/.gatehouse/privacy"
FLEET_PATH = "/.gatehouse/admin/devices"
SHIPPED_CLIENT = Path(__file__).parents[1] / "data" / "enroll-client"
"""deploy/enroll/gatehouse_enroll.py, reached through a link inside the package so installed wheels carry it."""


def decisions_at_every_tier(
    policies: CompiledPolicySet, snapshot: DeviceSnapshot | None, *, now: datetime, failing_since: Mapping[str, datetime] | None = None,
) -> dict[str, Decision]:
    """The device's decision for each tier of the policy, least sensitive first."""
    return {t: policies.evaluate(snapshot, t, now=now, failing_since=failing_since) for t in policies.tier_names}


async def recheck(request: web.Request) -> web.StreamResponse:
    """ "I fixed it, check again": ask the agent or the vendor for fresh data, re-decide on the store's newest snapshot.

    An osquery device gets its posture queries queued (the page says how soon they answer); a
    connector-fed device is read from its vendor now (Fleet: refetch the host; Jamf Pro: read the one
    computer) and stored before the decision. A vendor that cannot be read is named on the page and
    the decision uses the snapshots already stored.
    """
    app = request.config_dict
    identity = request[USER]
    now = app[CLOCK]()
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    try:
        check_form(app[CSRF], form, request.headers, host=request.host, subject=identity.subject, now=now)
    except CsrfRefused as exc:
        _log.warning("recheck.csrf_refused", code=exc.code, user=identity.email)
        raise web.HTTPForbidden(text=f"this form is stale or came from another site ({exc.code}); reload the page and try again") from None
    return_to = safe_return_path(form.get("return_to"))
    live = app[CONFIG].current
    try:
        route = live.routes.match_target(canonicalise(return_to, [request.host]))
    except BadRequestTarget:
        return_to = "/"
        route = live.routes.match_target(canonicalise("/", [request.host]))
    if route is None:
        raise web.HTTPFound(return_to)
    device = request.get(DEVICE)
    cache = app[SNAPSHOT_CACHE]
    eta: int | None = None
    snapshot = None
    source: SourceRefresh | None = None
    if device is not None:
        try:
            eta = await request_osquery_refresh(request.app, device.serial)
            asked = await refresh_from_connector(request.app, cache.get(device.serial))
            if asked is not None:
                source = SourceRefresh(asked.vendor, asked.hint, asked=not asked.error, unreachable=bool(asked.error))
            snapshot = await cache.fresh(device.serial)
        except StoreError as exc:
            _log.warning("recheck.store_unavailable", error=str(exc))
            snapshot = cache.get(device.serial)
    holder: PolicyHolder = app[POLICY]
    outcome = decide(
        identity, device, snapshot, route, policies=holder.current, now=now,
        failing_since=cache.failing_since(device.serial) if device is not None and snapshot is not None else None,
        grants=app.get(BREAKGLASS), owners=device_owners(app, device.serial) if device is not None and route.require_owner else (),
    )
    _log.info("recheck.completed", user=identity.email, device=device.serial if device else None, route=route.id,
              decision=outcome.verdict.value, reason=outcome.reason, vendor_unreachable=bool(source and source.unreachable))
    if outcome.proxied:
        raise web.HTTPSeeOther(return_to)
    return deny_response(request, outcome, route, holder.current, now=now, refresh_eta_s=eta, return_to=return_to, source_refresh=source)


async def status_page(request: web.Request) -> web.StreamResponse:
    """The signed-in user's devices (owner inventory, enrolled certificates, the one in use), their checks and reach."""
    app = request.config_dict
    identity = request[USER]
    now = app[CLOCK]()
    policies = app[POLICY].current
    cache = app[SNAPSHOT_CACHE]
    email = identity.email.lower()
    trust = bool(app[CONFIG].current.settings.ingest.trust_reported_owners)
    serials = {r.serial for r in cache.inventory_records() if email in r.owners}
    if trust:
        serials |= {s.serial for s in cache.snapshots() if cache.inventory(s.serial) is None and email in s.owners}
    device = request.get(DEVICE)
    if device is not None:
        serials.add(device.serial)
    directory = app.get(ENROLLED_CERTIFICATES)
    certificates: dict[str, list[CertificateRecordLike]] = {}
    for record in directory.certificates_of_user(email) if directory is not None else ():
        certificates.setdefault(record.serial, []).append(record)
    serials |= certificates.keys()
    devices = tuple(
        DeviceStatus(serial, cache.get(serial), decisions_at_every_tier(policies, cache.get(serial), now=now, failing_since=cache.failing_since(serial)),
                     certificate=EnrolledCertificate.newest(certificates.get(serial, ())))
        for serial in sorted(serials)
    )
    services = tuple(ServiceLink(r.id, r.tier, r.id, r.path_prefix) for r in app[CONFIG].current.settings.routes)
    view = StatusView.from_policies(policies, user=identity.email, devices=devices, now=now, services=services,
                                    grants=_open_grants(app, identity, now=now), enroll_origin=enroll_origin(request),
                                    platform_hint=platform_from_user_agent(request.headers.get("User-Agent", "")))
    return render_status(view, accept=request.headers.get("Accept")).response()


def _open_grants(app: Mapping[Any, Any], identity: Identity, *, now: datetime) -> tuple[GrantLine, ...]:
    """The user's break-glass grants in force or waiting for an approver, newest first (from memory)."""
    service = app.get(BREAKGLASS)
    if service is None:
        return ()
    lines = []
    for grant in service.list_grants(GrantFilter(user=identity.subject), now=now):
        status = service.status_at(grant, now=now)
        if status is not GrantStatus.ACTIVE and status is not GrantStatus.PENDING:
            continue
        scope = ", ".join(sorted(grant.scope.routes)) if grant.scope.routes else f"every {grant.scope.tier} service"
        lines.append(GrantLine(
            grant.id, status.value, grant.device_serial, scope, grant.expires_at if status is GrantStatus.ACTIVE else None,
            grant_page_href(grant.id, "/.gatehouse/"),
        ))
    return tuple(lines)


async def privacy_page(request: web.Request) -> web.StreamResponse:
    """What Gatehouse collects about a device, why, who sees it and for how long (from the policy in force)."""
    app = request.config_dict
    settings = app[CONFIG].current.settings
    view = PrivacyView.from_policies(
        app[POLICY].current, retention_days=app[INGEST_SETTINGS].history_retention_days,
        reviewer_groups=settings.breakglass.reviewer_groups, now=app[CLOCK](),
    )
    return render_privacy(view).response()


async def fleet_page(request: web.Request) -> web.StreamResponse:
    """Every device with owner, OS, last seen, reachable tiers and failing checks; reviewers only."""
    app = request.config_dict
    identity = reviewer(request, event="fleet.access_refused")
    settings = app[CONFIG].current.settings
    now = app[CLOCK]()
    policies = app[POLICY].current
    cache = app[SNAPSHOT_CACHE]
    fmt = request.query.get("format")

    trust = bool(settings.ingest.trust_reported_owners)
    try:
        two_agents = frozenset(c.serial for c in await app[STORE].osquery_conflicts())
    except StoreError:
        two_agents = frozenset()  # the page still lists every device from memory; the marks return with the store

    csrf_token = csrf_token_for(request)

    def certified(row: FleetRow) -> FleetRow:
        live = [c.not_after for c in cache.certificates_of(row.serial) if c.revoked_at is None and not c.expired(now=now)]
        return dataclasses.replace(row, certificate_until=max(live)) if live else row

    def build() -> web.Response:
        rows = [
            FleetRow.from_device(s.serial, s, decisions_at_every_tier(policies, s, now=now, failing_since=cache.failing_since(s.serial)),
                                 owners=cache.owners_of(s.serial, trust_reported=trust))
            for s in cache.snapshots()
        ]
        # Devices the inventory knows that never reported: listed, owned, "never" seen.
        rows += [FleetRow.from_device(r.serial, None, decisions_at_every_tier(policies, None, now=now), owners=r.owners)
                 for r in cache.inventory_records() if r.serial not in cache]
        view = FleetView(rows=tuple(map(certified, rows)), filter=FleetFilter.from_query(request.query), tiers=policies.tier_names,
                         checks=tuple(policies.checks), now=now, viewer=identity.email, csrf_token=csrf_token, two_agents=two_agents)
        return render_fleet(view, accept=request.headers.get("Accept"), format=fmt).response()

    # INVARIANT: a whole-fleet export evaluates every device at every tier; keep it off the event loop.
    return await asyncio.get_running_loop().run_in_executor(None, build)


async def revoke_from_fleet(request: web.Request) -> web.StreamResponse:
    """The fleet page's "Revoke certificate": every unrevoked certificate of the serial, refused at once here and on every replica."""
    app = request.config_dict
    identity = reviewer(request, event="fleet.access_refused", action="revoke-certificate")
    now = app[CLOCK]()
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    try:
        check_form(app[CSRF], form, request.headers, host=request.host, subject=identity.subject, now=now)
    except CsrfRefused as exc:
        _log.warning("fleet.csrf_refused", code=exc.code, user=identity.email)
        raise web.HTTPForbidden(text=f"this form is stale or came from another site ({exc.code}); reload the page and try again") from None
    serial = form.get("serial", "").strip()
    problem = serial_problem(serial)
    if problem is not None:
        raise web.HTTPBadRequest(text=f"serial: {problem}")
    try:
        revoked = await app[STORE].revoke_certificates_of(serial, at=now, by=identity.email)
        await app[SNAPSHOT_CACHE].refresh_certificates()
    except StoreError as exc:
        _log.warning("fleet.store_unavailable", error=str(exc))
        raise web.HTTPServiceUnavailable(text="the store could not be written, so nothing was revoked; try again shortly") from None
    for cert in revoked:
        _log.info("enrollment.revoked", serial=serial, user=cert.owner, fingerprint=cert.fingerprint, by=identity.email)
    raise web.HTTPSeeOther(FLEET_PATH)


async def enroll_client(request: web.Request) -> web.StreamResponse:
    """The one-file enrollment client, as Gatehouse ships it; 404 problem+json naming the file when it is missing."""
    path = request.config_dict[ENROLL_CLIENT_FILE]
    try:
        body = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        _log.error("enroll.client_missing", path=str(path), error=exc.strerror or type(exc).__name__)
        return error_response(
            request.headers.get("Accept", ""), status=404, code="enroll-client-missing",
            detail=f"the enrollment client `deploy/enroll/{CLIENT_FILE_NAME}` is missing from this Gatehouse; "
            "ask IT to reinstall Gatehouse from a complete release (the path is in the `enroll.client_missing` log line)",
        )
    return web.Response(body=body, headers={
        "Content-Type": "text/x-python; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{CLIENT_FILE_NAME}"',
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    })


REPORT_DEFAULT_DAYS = 30
REPORT_MAX_DAYS = 400


def _report_period(query: Mapping[str, str], now: datetime) -> tuple[datetime, datetime]:
    """``since``/``until`` as UTC days from the query; default the last 30 whole days up to today's end."""
    end_of_today = datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time.min, tzinfo=UTC)
    try:
        until = _day(query.get("until"), "until") or end_of_today
        since = _day(query.get("since"), "since") or until - timedelta(days=REPORT_DEFAULT_DAYS)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    if until <= since:
        raise web.HTTPBadRequest(text=f"until `{until.date()}` is not after since `{since.date()}`; choose a later end day")
    if until - since > timedelta(days=REPORT_MAX_DAYS):
        raise web.HTTPBadRequest(text=f"`{since.date()}` to `{until.date()}` is longer than {REPORT_MAX_DAYS} days; "
                                      "choose a shorter period, or run `gatehouse report` for longer ones")
    return since, until


def _day(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value.strip()[:10]), time.min, tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{name} `{value[:40]}` is not a day; write it as `2026-11-01`") from None


async def compliance_page(request: web.Request) -> web.StreamResponse:
    """The compliance report for a period (``since``/``until`` UTC days), as HTML, JSON or CSV; reviewers only."""
    app = request.config_dict
    identity = reviewer(request, event="compliance.access_refused", view="compliance report")
    now = app[CLOCK]()
    since, until = _report_period(request.query, now)
    fmt = request.query.get("format", "html").lower()
    if fmt not in ("html", "json", "csv"):
        raise web.HTTPBadRequest(text=f"format `{fmt[:20]}` is not offered; use `html`, `json` or `csv`")
    store = app[STORE]
    service = app.get(BREAKGLASS)
    grants = service.list_grants(now=now) if service is not None else ()
    devices = {s.serial: DeviceInfo(s.platform.value, min(s.collected_at, s.received_at)) for s in app[SNAPSHOT_CACHE].snapshots()}
    try:
        report = await build_report(
            history=store, ledger=store if isinstance(store, LedgerStore) else None, policies=app[POLICY].current,
            grants=grants, devices=devices, since=since, until=until, now=now,
        )
    except StoreError as exc:
        _log.warning("compliance.store_unavailable", error=str(exc))
        raise web.HTTPServiceUnavailable(text="the store could not be read, so the report cannot be made; try again shortly") from None
    _log.info("compliance.reported", user=identity.email, since=since.isoformat(), until=until.isoformat(), format=fmt)
    return report_response(report, fmt, viewer=identity.email).response()


def reviewer(request: web.Request, *, event: str, view: str = "fleet view", action: str | None = None) -> Identity:
    """The signed-in user when a reviewer or approver group holds them; otherwise 403 naming the groups that may (logged as ``event``).

    Raises:
        web.HTTPForbidden: the user is in none of `breakglass.reviewer_groups` and `breakglass.approver_groups`.
    """
    identity: Identity = request[USER]
    settings = request.config_dict[CONFIG].current.settings
    allowed = set(settings.breakglass.reviewer_groups) | set(settings.breakglass.approver_groups)
    if not allowed.intersection(identity.groups):
        _log.warning(event, user=identity.email, **({"action": action} if action else {}))
        raise web.HTTPForbidden(text=fleet_refusal(allowed, view=view))
    return identity


def fleet_refusal(allowed: set[str], *, view: str = "fleet view") -> str:
    """Why a signed-in user may not open the fleet view (or another reviewers' ``view``), naming the groups that may."""
    if not allowed:
        return (f"the {view} is open to no group: `breakglass.reviewer_groups` and `breakglass.approver_groups` "
                "are empty; an administrator can name the groups there")
    names = ", ".join(f"`{g}`" for g in sorted(allowed))
    return (f"the {view} is open to members of {names} (`breakglass.reviewer_groups` and "
            "`breakglass.approver_groups`); your sign-in carries none of them, ask an administrator to add you")


def add_portal_routes(app: web.Application) -> None:
    """Mount the status, check-again, privacy, fleet and compliance report pages, and the enrollment client."""
    app[ENROLL_CLIENT_FILE] = SHIPPED_CLIENT
    app.router.add_get(CLIENT_PATH, enroll_client)
    app.router.add_get(STATUS_PATH, status_page)
    app.router.add_post(RECHECK_PATH, recheck)
    app.router.add_get(PRIVACY_PATH, privacy_page)
    app.router.add_get(FLEET_PATH, fleet_page)
    app.router.add_post(FLEET_REVOKE_PATH, revoke_from_fleet)
    app.router.add_get(COMPLIANCE_PATH, compliance_page)


__all__ = ["add_portal_routes", "decisions_at_every_tier", "filter_rows"]
