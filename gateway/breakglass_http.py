"""Break-glass over HTTP: the request form and API, the requester's grant page, the managers' review.

Owns: BreakglassWeb, add_breakglass_routes, note_use, csrf_token_for, deny_page_offer,
breakglass_maintenance_ctx, run_maintenance, grant_json, failing_checks_of, the handlers.
Must not import: gateway.app (app.py wires this module in), the store (the service holds the sink).

Wiring (the lead's, in app.py)::

    app[BREAKGLASS] = await BreakglassService.open(sink, config=settings.breakglass.to_config())
    add_breakglass_routes(app, BreakglassWeb.from_settings(settings.break_glass,
                          policies=lambda: holder.current, evaluate=reevaluate))
    app.cleanup_ctx.append(webhook_ctx)                  # optional notifications
    app.cleanup_ctx.append(breakglass_maintenance_ctx)   # expiries, other replicas, gauge

Needs on the app: ``BREAKGLASS`` (the service), ``CLOCK``, ``METRICS`` (optional), and either
``request[LIVE]``/``app[CONFIG]`` (routes and their tiers) or ``BreakglassWeb.route_tiers``.
Needs on each request: ``USER`` (the verified Identity) and ``DEVICE`` (the verified DeviceId),
set by the identity middleware upstream of these handlers for ``/.gatehouse/`` paths too;
``OUTCOME`` when the gate already decided this request (otherwise ``evaluate`` is called).

Paths::

    GET  /.gatehouse/break-glass?route=ID&return_to=/path     request form (HTML)
    POST /.gatehouse/break-glass                             form request → 303 to return_to or the grant page
    GET  /.gatehouse/break-glass/{id}                        the requester's grant page
    POST /.gatehouse/break-glass/{id}/end                    form: end own grant / withdraw request
    POST /.gatehouse/api/v1/break-glass                      JSON request → 201 active, 202 pending
    GET  /.gatehouse/api/v1/break-glass[/{id}]               own grants as JSON
    POST /.gatehouse/api/v1/break-glass/{id}/end             JSON: end own grant
    GET  /.gatehouse/admin/break-glass[/{id}]                review list and detail (HTML)
    POST /.gatehouse/admin/break-glass/{id}/{action}         approve | reject | revoke | review (forms)
    GET  /.gatehouse/api/v1/admin/break-glass[/{id}]         the same as JSON
    POST /.gatehouse/api/v1/admin/break-glass/{id}/{action}  the same actions as JSON

Every POST passes ``gateway.csrf`` (forms: ``csrf_token`` field; JSON: JSON content type plus
``X-Gatehouse-CSRF`` token or ``X-Gatehouse-Client`` header). Errors: ``GrantRejected`` → 400/409
(403 for a tier that never allows it), ``NotAuthorised`` → 403, ``GrantNotFound`` → 404/409,
``AuditWriteError`` → 503 "no grant was given". JSON errors are ``application/problem+json``
with ``code``, ``detail`` and ``errors: [{field, problem, expected}]``.

Logs: ``grant.requested`` then one of ``grant.issued``/``grant.pending``/``grant.rejected``;
``grant.approved``, ``grant.rejected``, ``grant.revoked``, ``grant.ended``, ``grant.reviewed``,
``grant.refused`` (invalid, nothing written), ``grant.audit_failed``, ``breakglass.review_refused``,
``breakglass.csrf_refused``. Reasons are not secrets but are free text: logs carry the first 80
characters (``reason``); the audit log keeps them whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Union
from urllib.parse import urlencode

import orjson
import structlog
from aiohttp import web

from breakglass import (
    AuditWriteError,
    BreakglassService,
    FailingCheck,
    Grant,
    GrantFilter,
    GrantNotFound,
    GrantRejected,
    GrantRequest,
    GrantStatus,
    NotAuthorised,
    Scope,
    TierMode,
    TierRule,
)
from gateway.request import RequestLike
from gateway.breakglass_config import BreakglassSettings, tier_rule
from gateway.csrf import CsrfProtector, CsrfRefused, check_form, check_json
from gateway.identity.model import Identity
from gateway.identity.session import safe_return_path
from gateway.keys import BREAKGLASS, BREAKGLASS_WEB, CLOCK, CONFIG, CSRF, DEVICE, LIVE, METRICS, OUTCOME, USER, WEBHOOK
from gateway.metrics import Metrics
from gateway.views.breakglass_admin import (
    GrantPageView,
    RequestFormView,
    ReviewDetailView,
    ReviewListView,
    ReviewQuery,
    ReviewRow,
    render_grant_page,
    render_message,
    render_request_form,
    render_review_detail,
    render_review_list,
)
from gateway.views.deny import BreakglassOffer
from gateway.views.layout import BASE_HEADERS, PROBLEM_JSON, Rendered
from gateway.webhook import describe
from policy_engine import CompiledPolicySet, Decision

_log = structlog.get_logger("gateway.breakglass")

FORM_PATH = "/.gatehouse/break-glass"
API_PATH = "/.gatehouse/api/v1/break-glass"
REVIEW_PATH = "/.gatehouse/admin/break-glass"
REVIEW_API_PATH = "/.gatehouse/api/v1/admin/break-glass"
PROBLEM_BASE = "tag:gatehouse,2026:problem/"
MAX_BODY_BYTES = 64 * 1024
REVIEW_ACTIONS = ("approve", "reject", "revoke", "review")
_LOG_REASON_CHARS = 80

DecisionSource = Callable[[web.Request, "str | None", str], Union["Decision | None", Awaitable["Decision | None"]]]
"""Re-evaluates the requesting device for a route (id, or None for a whole tier) and tier, now."""


@dataclass(frozen=True, slots=True)
class BreakglassWeb:
    """What the break-glass handlers need beyond the service: settings, policy, CSRF, re-evaluation."""

    settings: BreakglassSettings
    policies: Callable[[], CompiledPolicySet | None]
    """The policy set in force (read per request, so reloads apply); None before one is loaded."""
    csrf: CsrfProtector
    evaluate: DecisionSource | None = None
    """Used for the failing checks at request time when the request has no ``OUTCOME``."""
    route_tiers: Callable[[], Mapping[str, str]] | None = None
    """Route id → tier; by default read from the live configuration (``request[LIVE]``)."""
    service_names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: BreakglassSettings, *, policies: Callable[[], CompiledPolicySet | None],
                      evaluate: DecisionSource | None = None,
                      route_tiers: Callable[[], Mapping[str, str]] | None = None) -> BreakglassWeb:
        """Build the handlers' context; the CSRF key is the configured one or a random per-process one."""
        max_age = timedelta(seconds=settings.csrf_max_age_s)
        if settings.csrf_secret is not None:
            csrf = CsrfProtector(settings.csrf_secret.reveal().encode(), max_age, frozenset(settings.allowed_origins))
        else:
            csrf = CsrfProtector.with_random_secret(max_age=max_age, allowed_origins=settings.allowed_origins)
        return cls(settings=settings, policies=policies, csrf=csrf, evaluate=evaluate, route_tiers=route_tiers)


def add_breakglass_routes(app: web.Application, context: BreakglassWeb | None = None) -> None:
    """Mount every break-glass page and API route; ``context`` is stored as ``app[BREAKGLASS_WEB]``.

    Without ``context``, ``app[BREAKGLASS_WEB]`` must already be set. ``app[CSRF]`` is set to the
    context's protector unless the app already has one (then the context must use the same).

    Raises:
        KeyError: no context given and none on the app.
    """
    if context is not None:
        app[BREAKGLASS_WEB] = context
    elif BREAKGLASS_WEB not in app:
        raise KeyError("add_breakglass_routes needs a BreakglassWeb; pass one or set app[BREAKGLASS_WEB] first")
    if CSRF not in app:
        app[CSRF] = app[BREAKGLASS_WEB].csrf
    r = app.router
    r.add_get(FORM_PATH, form_page)
    r.add_post(FORM_PATH, form_request)
    r.add_get(FORM_PATH + "/{grant_id}", grant_page)
    r.add_post(FORM_PATH + "/{grant_id}/end", form_end)
    r.add_post(API_PATH, api_request)
    r.add_get(API_PATH, api_own_list)
    r.add_get(API_PATH + "/{grant_id}", api_own_grant)
    r.add_post(API_PATH + "/{grant_id}/end", api_end)
    r.add_get(REVIEW_PATH, review_list)
    r.add_get(REVIEW_PATH + "/{grant_id}", review_detail)
    r.add_post(REVIEW_PATH + "/{grant_id}/{action}", review_form_action)
    r.add_get(REVIEW_API_PATH, review_api_list)
    r.add_get(REVIEW_API_PATH + "/{grant_id}", review_api_detail)
    r.add_post(REVIEW_API_PATH + "/{grant_id}/{action}", review_api_action)


# --- helpers for the lead's request path ----------------------------------------------------------


def csrf_token_for(request: RequestLike) -> str:
    """A CSRF token for the verified user of ``request`` (for the deny page's forms); empty without one."""
    identity = request.get(USER)
    protector = request.config_dict.get(CSRF)
    if identity is None or protector is None:
        return ""
    return protector.issue(identity.subject, now=request.config_dict[CLOCK]())


def deny_page_offer(request: RequestLike, tier: str) -> BreakglassOffer | None:
    """What the deny page's break-glass form offers for ``tier``, or None when it must not be shown
    (the tier never allows it, no identified device, or no policy loaded)."""
    context = request.config_dict.get(BREAKGLASS_WEB)
    if context is None or request.get(USER) is None or request.get(DEVICE) is None:
        return None
    policies = context.policies()
    info = policies.tier(tier) if policies is not None else None
    if info is None:
        return None
    rule = tier_rule(info, context.settings)
    if rule.mode is TierMode.NEVER:
        return None
    ceiling = min(rule.max_duration, timedelta(seconds=context.settings.max_duration_s))
    return BreakglassOffer.up_to(ceiling, default=min(rule.default_duration or ceiling, ceiling),
                                 min_reason_length=context.settings.min_reason_length,
                                 needs_approval=rule.mode is TierMode.APPROVAL)


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
    _set_active_gauge(app.get(METRICS), service, now)


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


def _set_active_gauge(metrics: Metrics | None, service: BreakglassService, now: datetime) -> None:
    """The active-grants gauge, and the age of the oldest grant that was granted but is not reviewed yet."""
    if metrics is not None:
        metrics.breakglass_active.set(len(service.list_grants(GrantFilter(status=GrantStatus.ACTIVE), now=now)))
        began = [g.starts_at for g in service.list_grants(GrantFilter(unreviewed_only=True), now=now) if g.starts_at is not None]
        metrics.breakglass_oldest_unreviewed.set(max(0.0, (now - min(began)).total_seconds()) if began else 0.0)


# --- plain functions ----------------------------------------------------------------------------


def failing_checks_of(decision: Decision | None) -> tuple[FailingCheck, ...]:
    """The device's blocking failures in ``decision`` as audit values (the reason code when none is a check)."""
    if decision is None:
        return (FailingCheck("not-evaluated", "the device could not be evaluated when break-glass was requested"),)
    checks = tuple(FailingCheck(f.check, f"{f.actual}; needs {f.required}") for f in decision.failing)
    if checks or decision.allowed:
        return checks
    return (FailingCheck(decision.reason.value, decision.detail or decision.reason.value.replace("-", " ")),)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def grant_json(grant: Grant, *, status: GrantStatus, now: datetime, service: BreakglassService | None = None) -> dict[str, object]:
    """A grant as plain data for the API; with ``service``, also its audit events and usage."""
    remaining = (grant.expires_at - now).total_seconds() if grant.expires_at and status is GrantStatus.ACTIVE else None
    doc: dict[str, object] = {
        "id": grant.id,
        "status": status.value,
        "user": grant.user,
        "user_email": grant.user_email,
        "device_serial": grant.device_serial,
        "scope": {"tier": grant.scope.tier, "route_set": grant.scope.route_set, "routes": sorted(grant.scope.routes)},
        "reason": grant.reason,
        "duration_s": int(grant.duration.total_seconds()),
        "requested_at": _iso(grant.requested_at),
        "starts_at": _iso(grant.starts_at),
        "expires_at": _iso(grant.expires_at),
        "expires_in_s": int(remaining) if remaining is not None else None,
        "pending_because": sorted(grant.pending_because),
        "self_granted": grant.self_granted,
        "flagged": grant.flagged,
        "approver": grant.approver,
        "failing_checks": [{"name": c.name, "detail": c.detail} for c in grant.failing_checks],
        "first_used_at": _iso(grant.first_used_at),
        "ended_at": _iso(grant.ended_at),
        "ended_by": grant.ended_by,
        "end_reason": grant.end_reason,
        "reviewed": grant.reviewed,
        "reviewed_by": grant.reviewed_by,
        "reviewed_at": _iso(grant.reviewed_at),
        "comment": grant.comment,
        "links": {"self": f"{API_PATH}/{grant.id}", "end": f"{API_PATH}/{grant.id}/end",
                  "review": f"{REVIEW_API_PATH}/{grant.id}"},
    }
    if service is not None:
        doc["usage"] = dict(service.usage(grant.id))
        doc["events"] = [
            {"kind": e.kind.value, "at": _iso(e.at), "actor": e.actor, "reason": e.reason,
             "duration_s": int(e.duration.total_seconds()) if e.duration is not None else None,
             "expires_at": _iso(e.expires_at), "route_id": e.route_id, "flags": sorted(e.flags)}
            for e in service.events_for(grant.id)
        ]
    return doc


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One thing wrong with a request: which field, what is wrong, what is expected."""

    field: str
    problem: str
    expected: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem, "expected": self.expected}

    def sentence(self) -> str:
        return f"{self.problem}; {self.expected}"


class RequestInvalid(Exception):
    """The request cannot be turned into a GrantRequest; every problem is listed."""

    def __init__(self, problems: list[FieldProblem], *, status: int = 400, code: str = "request-invalid") -> None:
        super().__init__("; ".join(p.sentence() for p in problems))
        self.problems = problems
        self.status = status
        self.code = code


def _combine_rules(rules: list[TierRule]) -> TierRule:
    """The strictest combination: never beats approval beats allowed; the shortest maximum."""
    if any(r.mode is TierMode.NEVER for r in rules):
        return TierRule(TierMode.NEVER)
    mode = TierMode.APPROVAL if any(r.mode is TierMode.APPROVAL for r in rules) else TierMode.ALLOWED
    maximum = min(r.max_duration for r in rules)
    defaults = [r.default_duration for r in rules if r.default_duration is not None]
    default = min([*defaults, maximum]) if defaults else None
    return TierRule(mode, max_duration=maximum, default_duration=default)


@dataclass(frozen=True, slots=True)
class _Target:
    scope: Scope
    rule: TierRule
    route_id: str | None


def _route_tiers(request: web.Request, context: BreakglassWeb) -> Mapping[str, str]:
    if context.route_tiers is not None:
        return context.route_tiers()
    live = request.get(LIVE)
    if live is None and CONFIG in request.config_dict:
        live = request.config_dict[CONFIG].current
    if live is None:
        return {}
    return {route.id: route.tier for route in live.routes.routes}


def resolve_target(request: web.Request, context: BreakglassWeb, *, route_id: str | None, tier: str | None,
                   route_set: str | None) -> _Target:
    """Work out the scope and tier rule of a request from a route id, a tier or a route set name.

    Raises:
        RequestInvalid: every problem with the three fields (unknown names, no policy loaded…).
    """
    policies = context.policies()
    if policies is None:
        raise RequestInvalid([FieldProblem("", "no policy is loaded yet", "try again in a minute")],
                             status=503, code="policy-unavailable")
    tiers = _route_tiers(request, context)
    problems: list[FieldProblem] = []
    if not (route_id or tier or route_set):
        problems.append(FieldProblem("route", "no route, tier or route set was named",
                                     "send `route` (the service you were denied) or `scope`"))
    if route_id and route_id not in tiers:
        problems.append(FieldProblem("route", f"`{route_id}` is not a configured route",
                                     "send the route id shown on the deny page"))
    if tier and policies.tier(tier) is None:
        problems.append(FieldProblem("scope.tier", f"`{tier}` is not a tier of the policy",
                                     "one of " + ", ".join(f"`{t}`" for t in policies.tier_names)))
    routes: frozenset[str] | None = None
    if route_set:
        routes = context.settings.route_set(route_set)
        if routes is None:
            known = ", ".join(f"`{n}`" for n in sorted(context.settings.route_sets)) or "none is configured"
            problems.append(FieldProblem("scope.route_set", f"`{route_set}` is not a configured route set",
                                         f"one of {known}"))
        elif route_id and route_id not in routes:
            problems.append(FieldProblem("route", f"route `{route_id}` is not in route set `{route_set}`",
                                         "name a route of the set, or leave `route` out"))
        if tier:
            problems.append(FieldProblem("scope", "both a tier and a route set were named", "name one of them"))
    if route_id and tier and route_id in tiers and tiers[route_id] != tier:
        problems.append(FieldProblem("scope.tier", f"route `{route_id}` is protected by tier `{tiers[route_id]}`, not `{tier}`",
                                     f"ask for tier `{tiers[route_id]}` or leave `scope` out"))
    if problems:
        raise RequestInvalid(problems)
    if routes is not None and route_set is not None:
        unknown = sorted(r for r in routes if r not in tiers or policies.tier(tiers[r]) is None)
        if unknown:
            raise RequestInvalid([FieldProblem("scope.route_set", f"route set `{route_set}` names routes that are not "
                                               f"configured: {', '.join(unknown)}", "ask an administrator to fix the set")],
                                 status=503, code="route-set-broken")
        infos = [policies.tier(tiers[r]) for r in routes]
        ranked = sorted((i for i in infos if i is not None), key=lambda i: (i.rank, i.name))
        rule = _combine_rules([tier_rule(i, context.settings) for i in ranked])
        return _Target(Scope.for_route_set(route_set, routes, tier=ranked[-1].name), rule, route_id)
    name = tier or tiers[str(route_id)]
    info = policies.tier(name)
    if info is None:
        raise RequestInvalid([FieldProblem("route", f"route `{route_id}` is protected by tier `{name}`, which the "
                                           "policy does not define", "ask an administrator to fix the route")],
                             status=503, code="tier-unknown")
    return _Target(Scope.for_tier(name), tier_rule(info, context.settings), route_id)


async def _failing_checks(request: web.Request, context: BreakglassWeb, target: _Target) -> tuple[FailingCheck, ...]:
    outcome = request.get(OUTCOME)
    if outcome is not None:
        return failing_checks_of(outcome.decision)
    if context.evaluate is None:
        return failing_checks_of(None)
    try:
        result = context.evaluate(request, target.route_id, target.scope.tier)
        decision = await result if inspect.isawaitable(result) else result
    except Exception as exc:  # break-glass must still work when evaluation is broken; record why
        _log.error("breakglass.evaluate_failed", error=f"{type(exc).__name__}: {exc}")
        return (FailingCheck("check-error", f"re-evaluating the device failed: {type(exc).__name__}"),)
    return failing_checks_of(decision)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _LOG_REASON_CHARS else flat[: _LOG_REASON_CHARS - 1] + "…"


def _notify(request: web.Request, kind: str, grant: Grant, *, actor: str = "", note: str = "") -> None:
    notifier = request.config_dict.get(WEBHOOK)
    if notifier is not None:
        notifier.notify(describe(kind, grant, actor=actor, note=note, public_url=notifier.public_url))


def _count(request: web.Request, tier: str, outcome: str) -> None:
    metrics = request.config_dict.get(METRICS)
    if metrics is not None:
        metrics.breakglass_grants.labels(tier=tier, outcome=outcome).inc()


def _field_for(code: str) -> FieldProblem:
    fields = {"reason-too-short": ("reason", "a reason of the configured minimum length"),
              "duration-invalid": ("duration_s", "a whole number of seconds, at least 1"),
              "duration-too-long": ("duration_s", "at most the tier's maximum")}
    name, expected = fields.get(code, ("", ""))
    return FieldProblem(name, code, expected)


async def submit_request(request: web.Request, identity: Identity, serial: str, target: _Target, *,
                         reason: str, duration: timedelta | None) -> Grant:
    """Ask the service for a grant; log, count and notify the outcome.

    Raises:
        GrantRejected: invalid (nothing written) or the tier never allows it (``.grant`` set).
        AuditWriteError: the audit log could not be written; no grant exists.
    """
    app = request.config_dict
    service = app[BREAKGLASS]
    now = app[CLOCK]()
    checks = await _failing_checks(request, app[BREAKGLASS_WEB], target)
    grant_request = GrantRequest(
        user=identity.subject, user_email=identity.email, device_serial=serial, scope=target.scope,
        reason=reason, duration=duration, failing_checks=checks,
    )
    tier = target.scope.tier
    fields = {"user": identity.subject, "device": serial, "tier": tier, "scope": target.scope.describe(),
              "route": target.route_id}
    try:
        grant = await service.request(grant_request, rule=target.rule, now=now)
    except GrantRejected as exc:
        if exc.grant is None:
            _count(request, tier, "invalid")
            _log.info("grant.refused", code=exc.code, **fields)
            raise
        _count(request, tier, "refused")
        _log.info("grant.requested", grant_id=exc.grant.id, reason=_short(reason), **fields)
        _log.warning("grant.rejected", grant_id=exc.grant.id, code=exc.code, actor="gatehouse", **fields)
        _notify(request, "requested", exc.grant)
        _notify(request, "refused", exc.grant)
        raise
    except AuditWriteError as exc:
        _count(request, tier, "audit-failed")
        _log.error("grant.audit_failed", error=str(exc), **fields)
        raise
    _log.info("grant.requested", grant_id=grant.id, reason=_short(reason), duration_s=int(grant.duration.total_seconds()),
              flagged=grant.flagged, failing=[c.name for c in checks], **fields)
    _notify(request, "requested", grant)
    if grant.status is GrantStatus.ACTIVE:
        _count(request, tier, "granted")
        _log.info("grant.issued", grant_id=grant.id, expires_at=_iso(grant.expires_at), **fields)
        _notify(request, "granted", grant)
    else:
        _count(request, tier, "pending")
        _log.info("grant.pending", grant_id=grant.id, because=sorted(grant.pending_because), **fields)
        _notify(request, "pending", grant)
    _set_active_gauge(app.get(METRICS), service, now)
    return grant


# --- responses ----------------------------------------------------------------------------------


def _json(status: int, doc: object, *, problem: bool = False) -> web.Response:
    headers = dict(BASE_HEADERS)
    headers["Content-Type"] = (PROBLEM_JSON if problem else "application/json") + "; charset=utf-8"
    return web.Response(status=status, headers=headers, body=orjson.dumps(doc) + b"\n")


def _problem(status: int, code: str, detail: str, *, errors: list[FieldProblem] | None = None,
             grant: dict[str, object] | None = None) -> web.Response:
    doc: dict[str, object] = {"type": PROBLEM_BASE + code, "title": detail.split(";")[0], "status": status,
                              "code": code, "detail": detail}
    if errors:
        doc["errors"] = [e.to_dict() for e in errors]
    if grant is not None:
        doc["grant"] = grant
    return _json(status, doc, problem=True)


def _page(rendered: Rendered) -> web.Response:
    return rendered.response()


def _identity(request: web.Request) -> Identity | None:
    return request.get(USER)


def _host(request: web.Request) -> str:
    return request.headers.get("Host", request.host)


def _json_csrf_refusal(request: web.Request, identity: Identity, now: datetime) -> web.Response | None:
    """The problem response for a JSON API call that fails the CSRF checks (logged), or None when it passes."""
    try:
        check_json(request.config_dict[BREAKGLASS_WEB].csrf, request.headers, host=_host(request), subject=identity.subject, now=now)
    except CsrfRefused as exc:
        _csrf_refused(request, exc, identity)
        return _problem(415 if exc.code == "content-type" else 403, exc.code, str(exc))
    return None


def _csrf_refused(request: web.Request, exc: CsrfRefused, identity: Identity) -> None:
    _log.warning("breakglass.csrf_refused", user=identity.subject, code=exc.code, path=request.path,
                 origin=request.headers.get("Origin"), fetch_site=request.headers.get("Sec-Fetch-Site"))


async def _read_form(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=request.content_length)
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _read_json(request: web.Request) -> dict[str, object]:
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise RequestInvalid([FieldProblem("", f"the body is larger than {MAX_BODY_BYTES} bytes",
                                           "send a small JSON object")], status=413, code="body-too-large")
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RequestInvalid([FieldProblem("", "the body is not valid JSON",
                                           'send an object such as {"route": "billing", "reason": "…", "duration_s": 1800}')]
                             ) from None
    if not isinstance(doc, dict):
        raise RequestInvalid([FieldProblem("", "the body is not a JSON object", "send a JSON object")])
    return doc


def _need_user_json(request: web.Request) -> Identity | web.Response:
    identity = _identity(request)
    if identity is None:
        return _problem(401, "authentication-required", "sign in first; break-glass needs a verified user")
    return identity


# --- requester handlers -------------------------------------------------------------------------


def _offer_for(context: BreakglassWeb, target: _Target | None) -> BreakglassOffer:
    maximum = timedelta(seconds=context.settings.max_duration_s)
    default = timedelta(seconds=context.settings.default_duration_s)
    approval = False
    if target is not None:
        maximum = min(maximum, target.rule.max_duration)
        default = min(target.rule.default_duration or maximum, maximum)
        approval = target.rule.mode is TierMode.APPROVAL
    return BreakglassOffer.up_to(maximum, default=min(default, maximum),
                                 min_reason_length=context.settings.min_reason_length, needs_approval=approval)


async def form_page(request: web.Request) -> web.Response:
    """GET the request form on its own page for ``?route=ID&return_to=/path``."""
    identity = _identity(request)
    if identity is None:
        return _page(render_message(401, "Sign in first", "Emergency access needs a verified user; sign in and try again."))
    context = request.config_dict[BREAKGLASS_WEB]
    return_to = safe_return_path(request.query.get("return_to"))
    route_id = request.query.get("route", "")[:100]
    try:
        target = resolve_target(request, context, route_id=route_id or None, tier=None, route_set=None)
    except RequestInvalid as exc:
        return _page(render_message(exc.status, "Cannot request emergency access here", str(exc),
                                    back=(return_to, "Back")))
    if target.rule.mode is TierMode.NEVER:
        return _page(render_message(403, "Emergency access is not available",
                                    f"The policy never allows break-glass for tier {target.scope.tier}. Fix the device, "
                                    "or ask the service owner for access.", back=(return_to, "Back")))
    now = request.config_dict[CLOCK]()
    view = RequestFormView(offer=_offer_for(context, target), route_id=route_id, return_to=return_to,
                           csrf_token=context.csrf.issue(identity.subject, now=now), tier=target.scope.tier,
                           service_name=context.service_names.get(route_id, ""), user=identity.email)
    return _page(render_request_form(view))


async def form_request(request: web.Request) -> web.StreamResponse:
    """POST from the deny page's form: grant → 303 to ``return_to``; pending/refused → the grant page."""
    app = request.config_dict
    context = app[BREAKGLASS_WEB]
    identity = _identity(request)
    if identity is None:
        return _page(render_message(401, "Sign in first", "Emergency access needs a verified user; sign in and try again."))
    form = await _read_form(request)
    now = app[CLOCK]()
    return_to = safe_return_path(form.get("return_to"))
    try:
        check_form(context.csrf, form, request.headers, host=_host(request), subject=identity.subject, now=now)
    except CsrfRefused as exc:
        _csrf_refused(request, exc, identity)
        return _page(render_message(403, "Request not accepted", str(exc), back=(return_to, "Back")))
    device = request.get(DEVICE)
    if device is None:
        return _page(render_message(403, "This device is not identified",
                                    "Emergency access waives device checks, never identity: Gatehouse must know which "
                                    "device you are on. Use an enrolled device (with its certificate) and try again.",
                                    back=(return_to, "Back")))
    route_id = form.get("route", "")[:100] or None
    route_set = form.get("route_set", "")[:100] or None
    reason = form.get("reason", "")
    problems: list[FieldProblem] = []
    duration: timedelta | None = None
    raw_duration = form.get("duration", "").strip()
    if raw_duration:
        if raw_duration.isdigit() and int(raw_duration) > 0:
            duration = timedelta(seconds=int(raw_duration))
        else:
            problems.append(FieldProblem("duration", f"`{raw_duration[:20]}` is not a duration",
                                         "choose one from the list"))
    if len(reason) > context.settings.max_reason_length:
        problems.append(FieldProblem("reason", f"the reason has {len(reason)} characters",
                                     f"write at most {context.settings.max_reason_length}"))
    target: _Target | None = None
    try:
        target = resolve_target(request, context, route_id=route_id, tier=None, route_set=route_set)
    except RequestInvalid as exc:
        if exc.status >= 500:
            return _page(render_message(exc.status, "Emergency access is unavailable", str(exc), back=(return_to, "Back")))
        problems.extend(exc.problems)

    def again(errors: list[str], status: int = 400) -> web.Response:
        view = RequestFormView(offer=_offer_for(context, target), route_id=route_id or "", return_to=return_to,
                               csrf_token=context.csrf.issue(identity.subject, now=now), reason=reason,
                               duration_s=int(duration.total_seconds()) if duration else None, errors=tuple(errors),
                               tier=target.scope.tier if target else "", user=identity.email)
        return _page(render_request_form(view, status=status))

    if problems or target is None:
        return again([p.sentence() for p in problems])
    try:
        grant = await submit_request(request, identity, device.serial, target, reason=reason, duration=duration)
    except GrantRejected as exc:
        if exc.grant is not None:
            raise web.HTTPSeeOther(grant_page_href(exc.grant.id, return_to)) from None
        if exc.code.startswith("already-"):
            live = [g for g in app[BREAKGLASS].list_grants(GrantFilter(user=identity.subject), now=now)
                    if g.scope == target.scope and g.device_serial == device.serial]
            if live:
                raise web.HTTPSeeOther(grant_page_href(live[0].id, return_to)) from None
        return again([str(exc)], 409 if exc.code.startswith("already-") else 400)
    except AuditWriteError:
        return _page(render_message(
            503, "No access was given",
            "Gatehouse could not record your request in the audit log, so it did not grant access: every emergency "
            "grant must be on record first. Try again in a minute; if it keeps failing, call the security team.",
            back=(return_to, "Back")))
    if grant.status is GrantStatus.ACTIVE:
        raise web.HTTPSeeOther(return_to)
    raise web.HTTPSeeOther(grant_page_href(grant.id, return_to))


def grant_page_href(grant_id: str, return_to: str) -> str:
    """The requester's page for one grant, coming back to ``return_to``."""
    return f"{FORM_PATH}/{grant_id}?" + urlencode({"return_to": return_to})


def _own_grant(request: web.Request, identity: Identity) -> Grant | None:
    """The grant named in the path if ``identity`` asked for it (or may review it); None otherwise."""
    service = request.config_dict[BREAKGLASS]
    try:
        grant = service.get(request.match_info["grant_id"])
    except GrantNotFound:
        return None
    if grant.user == identity.subject or _is_staff(request, identity):
        return grant
    return None


async def grant_page(request: web.Request) -> web.Response:
    """GET the requester's page for one grant (others get 404, not a hint that it exists)."""
    identity = _identity(request)
    if identity is None:
        return _page(render_message(401, "Sign in first", "Sign in to see your emergency access requests."))
    app = request.config_dict
    grant = _own_grant(request, identity)
    return_to = safe_return_path(request.query.get("return_to"))
    if grant is None:
        return _page(render_message(404, "No such request", "There is no emergency access request with this id for you.",
                                    back=(return_to, "Back")))
    now = app[CLOCK]()
    view = GrantPageView(grant=grant, status=app[BREAKGLASS].status_at(grant, now=now), now=now,
                         csrf_token=app[BREAKGLASS_WEB].csrf.issue(identity.subject, now=now), return_to=return_to,
                         notice="You ended this grant." if request.query.get("done") == "ended" else "")
    return _page(render_grant_page(view))


async def _end(request: web.Request, identity: Identity, reason: str) -> Grant:
    """End the path's grant as its user.

    Raises:
        GrantNotFound, NotAuthorised, AuditWriteError: as ``BreakglassService.end``.
    """
    app = request.config_dict
    service = app[BREAKGLASS]
    now = app[CLOCK]()
    grant = await service.end(request.match_info["grant_id"], user=identity.subject, now=now, reason=reason.strip()[:2000])
    _log.info("grant.ended", grant_id=grant.id, user=grant.user, tier=grant.scope.tier, actor=identity.subject)
    _count(request, grant.scope.tier, "ended")
    _notify(request, "ended", grant, actor=identity.subject)
    _set_active_gauge(app.get(METRICS), service, now)
    return grant


async def form_end(request: web.Request) -> web.StreamResponse:
    """POST from the grant page: end the user's own grant or withdraw a pending request."""
    identity = _identity(request)
    if identity is None:
        return _page(render_message(401, "Sign in first", "Sign in to end your emergency access."))
    app = request.config_dict
    form = await _read_form(request)
    return_to = safe_return_path(form.get("return_to"))
    try:
        check_form(app[BREAKGLASS_WEB].csrf, form, request.headers, host=_host(request), subject=identity.subject,
                   now=app[CLOCK]())
    except CsrfRefused as exc:
        _csrf_refused(request, exc, identity)
        return _page(render_message(403, "Request not accepted", str(exc), back=(return_to, "Back")))
    try:
        grant = await _end(request, identity, form.get("reason", ""))
    except (GrantNotFound, NotAuthorised) as exc:
        return _page(render_message(404 if isinstance(exc, GrantNotFound) else 403, "Nothing to end", str(exc),
                                    back=(return_to, "Back")))
    except AuditWriteError:
        return _page(render_message(503, "Could not end the grant",
                                    "The audit log could not be written, so the grant is unchanged; try again.",
                                    back=(return_to, "Back")))
    raise web.HTTPSeeOther(grant_page_href(grant.id, return_to) + "&done=ended")


def _parse_api_request(doc: Mapping[str, object], settings: BreakglassSettings) -> tuple[str | None, str | None, str | None, str, timedelta | None]:
    problems: list[FieldProblem] = []
    allowed = {"route", "scope", "reason", "duration_s"}
    for key in sorted(set(doc) - allowed):
        problems.append(FieldProblem(key, f"`{key}` is not a field of a break-glass request",
                                     "send only " + ", ".join(f"`{k}`" for k in sorted(allowed))))
    route = doc.get("route")
    if route is not None and (not isinstance(route, str) or not route):
        problems.append(FieldProblem("route", "`route` is not a route id", 'a string such as "billing"'))
    scope = doc.get("scope", "tier")
    tier = route_set = None
    if isinstance(scope, dict):
        extra = set(scope) - {"tier", "route_set"}
        if extra or len(scope) != 1:
            problems.append(FieldProblem("scope", "`scope` must name exactly one of `tier` or `route_set`",
                                         '{"tier": "high"} or {"route_set": "billing-admin"}'))
        tier_value, set_value = scope.get("tier"), scope.get("route_set")
        if tier_value is not None and not isinstance(tier_value, str):
            problems.append(FieldProblem("scope.tier", "the tier is not a string", 'a tier name such as "high"'))
        if set_value is not None and not isinstance(set_value, str):
            problems.append(FieldProblem("scope.route_set", "the route set is not a string", "a configured route set name"))
        tier = tier_value if isinstance(tier_value, str) else None
        route_set = set_value if isinstance(set_value, str) else None
    elif scope != "tier":
        problems.append(FieldProblem("scope", "`scope` is neither `\"tier\"` nor an object",
                                     '"tier" (the route\'s tier, the default), {"tier": "high"} or {"route_set": "name"}'))
    reason = doc.get("reason")
    if not isinstance(reason, str):
        problems.append(FieldProblem("reason", "`reason` is missing" if reason is None else "`reason` is not a string",
                                     f"a string of at least {settings.min_reason_length} characters saying why"))
        reason = ""
    elif len(reason) > settings.max_reason_length:
        problems.append(FieldProblem("reason", f"the reason has {len(reason)} characters",
                                     f"at most {settings.max_reason_length}"))
    raw = doc.get("duration_s")
    duration = None
    if raw is not None:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
            problems.append(FieldProblem("duration_s", f"`{str(raw)[:20]}` is not a positive whole number of seconds",
                                         f"seconds, at most {settings.max_duration_s}; leave it out for the default"))
        else:
            duration = timedelta(seconds=raw)
    if problems:
        raise RequestInvalid(problems)
    return (route if isinstance(route, str) else None), tier, route_set, reason, duration


async def api_request(request: web.Request) -> web.Response:
    """POST a JSON break-glass request; 201 with the grant when active, 202 when pending."""
    app = request.config_dict
    context = app[BREAKGLASS_WEB]
    identity = _need_user_json(request)
    if isinstance(identity, web.Response):
        return identity
    now = app[CLOCK]()
    refused = _json_csrf_refusal(request, identity, now)
    if refused is not None:
        return refused
    device = request.get(DEVICE)
    if device is None:
        return _problem(403, "device-unidentified",
                        "break-glass waives device checks, never identity: no verified device was identified; "
                        "call from an enrolled device (client certificate or device assertion)")
    try:
        route, tier, route_set, reason, duration = _parse_api_request(await _read_json(request), context.settings)
        target = resolve_target(request, context, route_id=route, tier=tier, route_set=route_set)
        grant = await submit_request(request, identity, device.serial, target, reason=reason, duration=duration)
    except RequestInvalid as exc:
        return _problem(exc.status, exc.code, str(exc), errors=exc.problems)
    except GrantRejected as exc:
        if exc.grant is not None:
            return _problem(403, exc.code, str(exc), grant=grant_json(exc.grant, status=GrantStatus.REJECTED, now=now))
        status = 409 if exc.code.startswith("already-") else 400
        return _problem(status, exc.code, str(exc), errors=[_field_for(exc.code)] if status == 400 else None)
    except AuditWriteError as exc:
        return _problem(503, "audit-unavailable", "no grant was given: the request could not be recorded in the audit "
                        f"log ({exc}); try again in a minute")
    grant_status = app[BREAKGLASS].status_at(grant, now=now)
    return _json(201 if grant_status is GrantStatus.ACTIVE else 202, grant_json(grant, status=grant_status, now=now))


async def api_own_list(request: web.Request) -> web.Response:
    """GET the signed-in user's own grants, newest first."""
    identity = _need_user_json(request)
    if isinstance(identity, web.Response):
        return identity
    app = request.config_dict
    service, now = app[BREAKGLASS], app[CLOCK]()
    grants = service.list_grants(GrantFilter(user=identity.subject), now=now)
    return _json(200, {"grants": [grant_json(g, status=service.status_at(g, now=now), now=now) for g in grants]})


async def api_own_grant(request: web.Request) -> web.Response:
    """GET one of the user's own grants."""
    identity = _need_user_json(request)
    if isinstance(identity, web.Response):
        return identity
    grant = _own_grant(request, identity)
    if grant is None:
        return _problem(404, "grant-not-found", f"no grant `{request.match_info['grant_id']}` of yours; "
                        f"list yours with GET {API_PATH}")
    app = request.config_dict
    now = app[CLOCK]()
    return _json(200, grant_json(grant, status=app[BREAKGLASS].status_at(grant, now=now), now=now))


async def api_end(request: web.Request) -> web.Response:
    """POST to end the user's own grant (or withdraw a pending request); returns the grant."""
    identity = _need_user_json(request)
    if isinstance(identity, web.Response):
        return identity
    app = request.config_dict
    now = app[CLOCK]()
    refused = _json_csrf_refusal(request, identity, now)
    if refused is not None:
        return refused
    try:
        doc = await _read_json(request)
        reason = doc.get("reason", "")
        grant = await _end(request, identity, reason if isinstance(reason, str) else "")
    except RequestInvalid as exc:
        return _problem(exc.status, exc.code, str(exc), errors=exc.problems)
    except GrantNotFound as exc:
        return _problem(404, "grant-not-found", str(exc))
    except NotAuthorised as exc:
        return _problem(403, exc.code, str(exc))
    except AuditWriteError as exc:
        return _problem(503, "audit-unavailable", f"the grant is unchanged: {exc}")
    return _json(200, grant_json(grant, status=app[BREAKGLASS].status_at(grant, now=now), now=now))


# --- review handlers ----------------------------------------------------------------------------


def _groups(identity: Identity) -> frozenset[str]:
    return frozenset(identity.groups)


def _is_staff(request: web.Request, identity: Identity) -> bool:
    return bool(_groups(identity) & request.config_dict[BREAKGLASS_WEB].settings.staff_groups)


def _review_refused(request: web.Request, identity: Identity | None, code: str) -> None:
    _log.warning("breakglass.review_refused", user=identity.subject if identity else None, code=code,
                 method=request.method, path=request.path,
                 grant_id=request.match_info.get("grant_id"), action=request.match_info.get("action"))


def _staff_html(request: web.Request) -> Identity | web.Response:
    identity = _identity(request)
    if identity is None:
        _review_refused(request, None, "authentication-required")
        return _page(render_message(401, "Sign in first", "The break-glass review needs a verified user; sign in."))
    if not _is_staff(request, identity):
        _review_refused(request, identity, "not-a-reviewer")
        return _page(render_message(403, "Not available to you",
                                    "The break-glass review is for members of the reviewer and approver groups. "
                                    "Ask the security team if you need access."))
    return identity


def _staff_json(request: web.Request) -> Identity | web.Response:
    identity = _identity(request)
    if identity is None:
        _review_refused(request, None, "authentication-required")
        return _problem(401, "authentication-required", "sign in first; the review API needs a verified user")
    if not _is_staff(request, identity):
        _review_refused(request, identity, "not-a-reviewer")
        groups = ", ".join(f"`{g}`" for g in sorted(request.config_dict[BREAKGLASS_WEB].settings.staff_groups))
        return _problem(403, "not-a-reviewer", f"`{identity.subject}` is not in a reviewer or approver group; "
                        f"ask to be added to one of {groups or 'the configured groups'}")
    return identity


def _review_rows(request: web.Request, query: ReviewQuery) -> tuple[tuple[ReviewRow, ...], int]:
    app = request.config_dict
    service, now = app[BREAKGLASS], app[CLOCK]()
    grants = service.list_grants(query.to_grant_filter(), now=now)
    rows = tuple(ReviewRow(g, service.status_at(g, now=now), sum(service.usage(g.id).values())) for g in grants)
    return rows, len(service.list_grants(now=now))


async def review_list(request: web.Request) -> web.Response:
    """GET the review list (HTML) with its filters."""
    identity = _staff_html(request)
    if isinstance(identity, web.Response):
        return identity
    app = request.config_dict
    query = ReviewQuery.from_query(request.query)
    rows, total = _review_rows(request, query)
    policies = app[BREAKGLASS_WEB].policies()
    view = ReviewListView(rows=rows, query=query, tiers=policies.tier_names if policies else (), now=app[CLOCK](),
                          viewer=identity.email, total=total)
    return _page(render_review_list(view))


async def review_api_list(request: web.Request) -> web.Response:
    """GET the review list as JSON (same filters as the page)."""
    identity = _staff_json(request)
    if isinstance(identity, web.Response):
        return identity
    now = request.config_dict[CLOCK]()
    query = ReviewQuery.from_query(request.query)
    rows, total = _review_rows(request, query)
    return _json(200, {"total": total, "count": len(rows), "filter": query.to_query(),
                       "grants": [grant_json(r.grant, status=r.status, now=now) | {"uses": r.uses} for r in rows]})


def _detail_view(request: web.Request, identity: Identity, grant: Grant, *, notice: str = "", error: str = "") -> ReviewDetailView:
    app = request.config_dict
    service, now, settings = app[BREAKGLASS], app[CLOCK](), app[BREAKGLASS_WEB].settings
    groups = _groups(identity)
    own = grant.user == identity.subject
    return ReviewDetailView(
        grant=grant, status=service.status_at(grant, now=now), events=service.events_for(grant.id),
        usage=service.usage(grant.id), now=now, csrf_token=app[BREAKGLASS_WEB].csrf.issue(identity.subject, now=now),
        viewer=identity.email, can_decide=not own and bool(groups & frozenset(settings.approver_groups)),
        can_revoke=bool(groups & settings.staff_groups), can_review=not own and bool(groups & frozenset(settings.reviewer_groups)),
        notice=notice, error=error,
    )


_DONE = {"approved": "Approved: access started for the requested time.", "rejected": "Rejected.",
         "revoked": "Revoked: access ended at once.", "reviewed": "Your review was saved in the audit log."}


async def review_detail(request: web.Request) -> web.Response:
    """GET one grant for a reviewer."""
    identity = _staff_html(request)
    if isinstance(identity, web.Response):
        return identity
    try:
        grant = request.config_dict[BREAKGLASS].get(request.match_info["grant_id"])
    except GrantNotFound as exc:
        return _page(render_message(404, "No such grant", str(exc), back=(REVIEW_PATH, "All grants")))
    return _page(render_review_detail(_detail_view(request, identity, grant,
                                                   notice=_DONE.get(request.query.get("done", ""), ""))))


async def _act(request: web.Request, identity: Identity, action: str, text: str) -> Grant:
    """Apply one review action to the path's grant; log, count and notify it.

    Raises:
        RequestInvalid: unknown action or a required text is missing.
        GrantNotFound, NotAuthorised, AuditWriteError: as the service raises them.
    """
    app = request.config_dict
    service, now = app[BREAKGLASS], app[CLOCK]()
    grant_id = request.match_info["grant_id"]
    groups = _groups(identity)
    text = text.strip()[:2000]
    if action not in REVIEW_ACTIONS:
        raise RequestInvalid([FieldProblem("action", f"`{action[:40]}` is not an action",
                                           "one of " + ", ".join(f"`{a}`" for a in REVIEW_ACTIONS))], status=404,
                             code="action-unknown")
    if action in ("reject", "revoke", "review") and not text:
        name = "comment" if action == "review" else "reason"
        raise RequestInvalid([FieldProblem(name, f"no {name} was given", f"say why in `{name}`; it goes into the audit log")])
    if action == "approve":
        grant = await service.approve(grant_id, approver=identity.subject, approver_groups=groups, now=now)
        event, outcome = "grant.approved", "approved"
    elif action == "reject":
        grant = await service.reject(grant_id, approver=identity.subject, approver_groups=groups, reason=text, now=now)
        event, outcome = "grant.rejected", "rejected"
    elif action == "revoke":
        grant = await service.revoke(grant_id, actor=identity.subject, actor_groups=groups, reason=text, now=now)
        event, outcome = "grant.revoked", "revoked"
    else:
        grant = await service.mark_reviewed(grant_id, reviewer=identity.subject, reviewer_groups=groups, comment=text,
                                            now=now)
        event, outcome = "grant.reviewed", "reviewed"
    _log.info(event, grant_id=grant.id, user=grant.user, tier=grant.scope.tier, actor=identity.subject,
              reason=_short(text) if text else None)
    if action != "review":
        _count(request, grant.scope.tier, outcome)
        _notify(request, outcome, grant, actor=identity.email or identity.subject, note=text)
    _set_active_gauge(app.get(METRICS), service, now)
    return grant


async def review_form_action(request: web.Request) -> web.StreamResponse:
    """POST approve/reject/revoke/review from the detail page; 303 back to it."""
    identity = _staff_html(request)
    if isinstance(identity, web.Response):
        return identity
    app = request.config_dict
    form = await _read_form(request)
    back = (REVIEW_PATH, "All grants")
    try:
        check_form(app[BREAKGLASS_WEB].csrf, form, request.headers, host=_host(request), subject=identity.subject,
                   now=app[CLOCK]())
    except CsrfRefused as exc:
        _csrf_refused(request, exc, identity)
        return _page(render_message(403, "Request not accepted", str(exc), back=back))
    action = request.match_info["action"]
    try:
        grant = await _act(request, identity, action, form.get("comment" if action == "review" else "reason", ""))
    except (RequestInvalid, GrantNotFound, NotAuthorised, AuditWriteError) as exc:
        if isinstance(exc, NotAuthorised):
            _review_refused(request, identity, exc.code)
        status = (exc.status if isinstance(exc, RequestInvalid) else 403 if isinstance(exc, NotAuthorised)
                  else 503 if isinstance(exc, AuditWriteError) else 409)
        try:
            current = app[BREAKGLASS].get(request.match_info["grant_id"])
        except GrantNotFound:
            return _page(render_message(404, "No such grant", str(exc), back=back))
        return _page(render_review_detail(_detail_view(request, identity, current, error=str(exc)), status=status))
    done = {"approve": "approved", "reject": "rejected", "revoke": "revoked", "review": "reviewed"}[action]
    raise web.HTTPSeeOther(f"{REVIEW_PATH}/{grant.id}?done={done}")


async def review_api_detail(request: web.Request) -> web.Response:
    """GET one grant with its audit events and usage, as JSON."""
    identity = _staff_json(request)
    if isinstance(identity, web.Response):
        return identity
    app = request.config_dict
    service, now = app[BREAKGLASS], app[CLOCK]()
    try:
        grant = service.get(request.match_info["grant_id"])
    except GrantNotFound as exc:
        return _problem(404, "grant-not-found", str(exc))
    return _json(200, grant_json(grant, status=service.status_at(grant, now=now), now=now, service=service))


async def review_api_action(request: web.Request) -> web.Response:
    """POST approve/reject/revoke/review as JSON (``{"reason": …}`` or ``{"comment": …}``)."""
    identity = _staff_json(request)
    if isinstance(identity, web.Response):
        return identity
    app = request.config_dict
    now = app[CLOCK]()
    refused = _json_csrf_refusal(request, identity, now)
    if refused is not None:
        return refused
    action = request.match_info["action"]
    try:
        doc = await _read_json(request)
        text = doc.get("comment" if action == "review" else "reason", "")
        grant = await _act(request, identity, action, text if isinstance(text, str) else "")
    except RequestInvalid as exc:
        return _problem(exc.status, exc.code, str(exc), errors=exc.problems)
    except GrantNotFound as exc:
        try:
            app[BREAKGLASS].get(request.match_info["grant_id"])
        except GrantNotFound:
            return _problem(404, "grant-not-found", str(exc))
        return _problem(409, "grant-not-in-state", str(exc))
    except NotAuthorised as exc:
        _review_refused(request, identity, exc.code)
        return _problem(403, exc.code, str(exc))
    except AuditWriteError as exc:
        return _problem(503, "audit-unavailable", f"nothing was changed: {exc}")
    service = app[BREAKGLASS]
    return _json(200, grant_json(grant, status=service.status_at(grant, now=now), now=now, service=service))
