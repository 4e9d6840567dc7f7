"""The requester's break-glass API: ask for a grant, list and read one's own, end one; and the request itself.

Owns: submit_request (shared with the form), own_grant, end_own_grant, parse_api_request, field_for,
failing_checks, and the handlers api_request, api_own_list, api_own_grant, api_end.
Must not import: gateway.app, the store (the service holds the audit sink).

Paths::

    POST /.gatehouse/api/v1/break-glass                      JSON request -> 201 active, 202 pending
    GET  /.gatehouse/api/v1/break-glass[/{id}]               own grants as JSON
    POST /.gatehouse/api/v1/break-glass/{id}/end             JSON: end own grant

Errors: ``GrantRejected`` -> 400/409 (403 for a tier that never allows it, with the refused
``grant``), ``NotAuthorised`` -> 403, ``GrantNotFound`` -> 404, ``AuditWriteError`` -> 503 "no
grant was given". Logs: ``grant.requested`` then one of ``grant.issued``/``grant.pending``/
``grant.rejected``; ``grant.refused`` (invalid, nothing written), ``grant.audit_failed``, ``grant.ended``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from datetime import timedelta

import structlog
from aiohttp import web

from breakglass import (
    AuditWriteError,
    FailingCheck,
    Grant,
    GrantFilter,
    GrantNotFound,
    GrantRejected,
    GrantRequest,
    GrantStatus,
    NotAuthorised,
)
from gateway.config.breakglass import BreakglassSettings
from gateway.identity.model import Identity
from gateway.keys import BREAKGLASS, BREAKGLASS_WEB, CLOCK, DEVICE, METRICS, OUTCOME
from gateway.web.breakglass.context import API_PATH, BreakglassWeb
from gateway.web.breakglass.csrf import checked_json_call
from gateway.web.breakglass.documents import failing_checks_of, grant_json, iso
from gateway.web.breakglass.http import RequestInvalid, is_staff, json_answer, need_user_json, problem_answer, read_json
from gateway.web.breakglass.notify import count, notify, set_active_gauge, short
from gateway.web.breakglass.scope import Target, resolve_target
from gateway.web.problem import FieldError

_log = structlog.get_logger("gateway.breakglass")


async def failing_checks(request: web.Request, context: BreakglassWeb, target: Target) -> tuple[FailingCheck, ...]:
    """The device's failing checks for the audit record: the gate's decision of this request, else a re-evaluation."""
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


_REJECTED_FIELDS = {
    "reason-too-short": ("reason", "a reason of at least the configured minimum length, saying why"),
    "duration-invalid": ("duration_s", "a whole number of seconds, at least 1"),
    "duration-too-long": ("duration_s", "at most the tier's maximum"),
}


def field_for(exc: GrantRejected) -> tuple[FieldError, ...]:
    """The field a refused request got wrong, for the problem's ``errors``; none when the refusal is not about a field."""
    known = _REJECTED_FIELDS.get(exc.code)
    if known is None:
        return ()
    return (FieldError(known[0], str(exc), known[1], code=exc.code),)


async def submit_request(request: web.Request, identity: Identity, serial: str, target: Target, *,
                         reason: str, duration: timedelta | None) -> Grant:
    """Ask the service for a grant; log, count and notify the outcome.

    Raises:
        GrantRejected: invalid (nothing written) or the tier never allows it (``.grant`` set).
        AuditWriteError: the audit log could not be written; no grant exists.
    """
    app = request.config_dict
    service = app[BREAKGLASS]
    now = app[CLOCK]()
    checks = await failing_checks(request, app[BREAKGLASS_WEB], target)
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
            count(request, tier, "invalid")
            _log.info("grant.refused", code=exc.code, **fields)
            raise
        count(request, tier, "refused")
        _log.info("grant.requested", grant_id=exc.grant.id, reason=short(reason), **fields)
        _log.warning("grant.rejected", grant_id=exc.grant.id, code=exc.code, actor="gatehouse", **fields)
        notify(request, "requested", exc.grant)
        notify(request, "refused", exc.grant)
        raise
    except AuditWriteError as exc:
        count(request, tier, "audit-failed")
        _log.error("grant.audit_failed", error=str(exc), **fields)
        raise
    _log.info("grant.requested", grant_id=grant.id, reason=short(reason), duration_s=int(grant.duration.total_seconds()),
              flagged=grant.flagged, failing=[c.name for c in checks], **fields)
    notify(request, "requested", grant)
    if grant.status is GrantStatus.ACTIVE:
        count(request, tier, "granted")
        _log.info("grant.issued", grant_id=grant.id, expires_at=iso(grant.expires_at), **fields)
        notify(request, "granted", grant)
    else:
        count(request, tier, "pending")
        _log.info("grant.pending", grant_id=grant.id, because=sorted(grant.pending_because), **fields)
        notify(request, "pending", grant)
    set_active_gauge(app.get(METRICS), service, now)
    return grant


def own_grant(request: web.Request, identity: Identity) -> Grant | None:
    """The grant named in the path if ``identity`` asked for it (or may review it); None otherwise."""
    service = request.config_dict[BREAKGLASS]
    try:
        grant = service.get(request.match_info["grant_id"])
    except GrantNotFound:
        return None
    if grant.user == identity.subject or is_staff(request, identity):
        return grant
    return None


async def end_own_grant(request: web.Request, identity: Identity, reason: str) -> Grant:
    """End the path's grant as its user.

    Raises:
        GrantNotFound, NotAuthorised, AuditWriteError: as ``BreakglassService.end``.
    """
    app = request.config_dict
    service = app[BREAKGLASS]
    now = app[CLOCK]()
    grant = await service.end(request.match_info["grant_id"], user=identity.subject, now=now, reason=reason.strip()[:2000])
    _log.info("grant.ended", grant_id=grant.id, user=grant.user, tier=grant.scope.tier, actor=identity.subject)
    count(request, grant.scope.tier, "ended")
    notify(request, "ended", grant, actor=identity.subject)
    set_active_gauge(app.get(METRICS), service, now)
    return grant


def parse_api_request(doc: Mapping[str, object], settings: BreakglassSettings) -> tuple[str | None, str | None, str | None, str, timedelta | None]:
    """The route, tier, route set, reason and duration of a JSON request body.

    Raises:
        RequestInvalid: every field that is wrong, each with what is expected.
    """
    problems: list[FieldError] = []
    allowed = {"route", "scope", "reason", "duration_s"}
    for key in sorted(set(doc) - allowed):
        problems.append(FieldError(key, f"`{key}` is not a field of a break-glass request",
                                   "send only " + ", ".join(f"`{k}`" for k in sorted(allowed))))
    route = doc.get("route")
    if route is not None and (not isinstance(route, str) or not route):
        problems.append(FieldError("route", "`route` is not a route id", 'a string such as "billing"'))
    scope = doc.get("scope", "tier")
    tier = route_set = None
    if isinstance(scope, dict):
        extra = set(scope) - {"tier", "route_set"}
        if extra or len(scope) != 1:
            problems.append(FieldError("scope", "`scope` must name exactly one of `tier` or `route_set`",
                                       '{"tier": "high"} or {"route_set": "billing-admin"}'))
        tier_value, set_value = scope.get("tier"), scope.get("route_set")
        if tier_value is not None and not isinstance(tier_value, str):
            problems.append(FieldError("scope.tier", "the tier is not a string", 'a tier name such as "high"'))
        if set_value is not None and not isinstance(set_value, str):
            problems.append(FieldError("scope.route_set", "the route set is not a string", "a configured route set name"))
        tier = tier_value if isinstance(tier_value, str) else None
        route_set = set_value if isinstance(set_value, str) else None
    elif scope != "tier":
        problems.append(FieldError("scope", "`scope` is neither `\"tier\"` nor an object",
                                   '"tier" (the route\'s tier, the default), {"tier": "high"} or {"route_set": "name"}'))
    reason = doc.get("reason")
    if not isinstance(reason, str):
        problems.append(FieldError("reason", "`reason` is missing" if reason is None else "`reason` is not a string",
                                   f"a string of at least {settings.min_reason_length} characters saying why"))
        reason = ""
    elif len(reason) > settings.max_reason_length:
        problems.append(FieldError("reason", f"the reason has {len(reason)} characters",
                                   f"at most {settings.max_reason_length}"))
    raw = doc.get("duration_s")
    duration = None
    if raw is not None:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
            problems.append(FieldError("duration_s", f"`{str(raw)[:20]}` is not a positive whole number of seconds",
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
    checked = checked_json_call(request, need_user_json(request))
    if isinstance(checked, web.Response):
        return checked
    identity, now = checked
    device = request.get(DEVICE)
    if device is None:
        return problem_answer(request, 403, "device-unidentified",
                              "break-glass waives device checks, never identity: no verified device was identified; "
                              "call from an enrolled device (client certificate or device assertion)")
    try:
        route, tier, route_set, reason, duration = parse_api_request(await read_json(request), context.settings)
        target = resolve_target(request, context, route_id=route, tier=tier, route_set=route_set)
        grant = await submit_request(request, identity, device.serial, target, reason=reason, duration=duration)
    except RequestInvalid as exc:
        return problem_answer(request, exc.status, exc.code, str(exc), errors=exc.problems)
    except GrantRejected as exc:
        if exc.grant is not None:
            return problem_answer(request, 403, exc.code, str(exc),
                                  extra={"grant": grant_json(exc.grant, status=GrantStatus.REJECTED, now=now)})
        status = 409 if exc.code.startswith("already-") else 400
        return problem_answer(request, status, exc.code, str(exc), errors=field_for(exc) if status == 400 else ())
    except AuditWriteError as exc:
        return problem_answer(request, 503, "audit-unavailable", "no grant was given: the request could not be recorded in the audit "
                              f"log ({exc}); try again in a minute")
    grant_status = app[BREAKGLASS].status_at(grant, now=now)
    return json_answer(201 if grant_status is GrantStatus.ACTIVE else 202, grant_json(grant, status=grant_status, now=now))


async def api_own_list(request: web.Request) -> web.Response:
    """GET the signed-in user's own grants, newest first."""
    identity = need_user_json(request)
    if isinstance(identity, web.Response):
        return identity
    app = request.config_dict
    service, now = app[BREAKGLASS], app[CLOCK]()
    grants = service.list_grants(GrantFilter(user=identity.subject), now=now)
    return json_answer(200, {"grants": [grant_json(g, status=service.status_at(g, now=now), now=now) for g in grants]})


async def api_own_grant(request: web.Request) -> web.Response:
    """GET one of the user's own grants."""
    identity = need_user_json(request)
    if isinstance(identity, web.Response):
        return identity
    grant = own_grant(request, identity)
    if grant is None:
        return problem_answer(request, 404, "grant-not-found", f"no grant `{request.match_info['grant_id']}` of yours; "
                              f"list yours with GET {API_PATH}")
    app = request.config_dict
    now = app[CLOCK]()
    return json_answer(200, grant_json(grant, status=app[BREAKGLASS].status_at(grant, now=now), now=now))


async def api_end(request: web.Request) -> web.Response:
    """POST to end the user's own grant (or withdraw a pending request); returns the grant."""
    checked = checked_json_call(request, need_user_json(request))
    if isinstance(checked, web.Response):
        return checked
    identity, now = checked
    try:
        doc = await read_json(request)
        reason = doc.get("reason", "")
        grant = await end_own_grant(request, identity, reason if isinstance(reason, str) else "")
    except RequestInvalid as exc:
        return problem_answer(request, exc.status, exc.code, str(exc), errors=exc.problems)
    except GrantNotFound as exc:
        return problem_answer(request, 404, "grant-not-found", str(exc))
    except NotAuthorised as exc:
        return problem_answer(request, 403, exc.code, str(exc))
    except AuditWriteError as exc:
        return problem_answer(request, 503, "audit-unavailable", f"the grant is unchanged: {exc}")
    return json_answer(200, grant_json(grant, status=request.config_dict[BREAKGLASS].status_at(grant, now=now), now=now))
