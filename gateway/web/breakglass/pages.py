"""The requester's break-glass pages: the request form, the grant page, ending a grant from it.

Owns: form_page, form_request, grant_page, form_end, grant_page_href.
Must not import: gateway.app, the store.

Paths::

    GET  /.gatehouse/break-glass?route=ID&return_to=/path     request form (HTML)
    POST /.gatehouse/break-glass                             form request -> 303 to return_to or the grant page
    GET  /.gatehouse/break-glass/{id}                        the requester's grant page
    POST /.gatehouse/break-glass/{id}/end                    form: end own grant / withdraw request

The deny page posts its own copy of the form here (``gateway.web.breakglass.offer``).
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from aiohttp import web

from breakglass import AuditWriteError, GrantFilter, GrantNotFound, GrantRejected, GrantStatus, NotAuthorised, TierMode
from gateway.identity.session import safe_return_path
from gateway.keys import BREAKGLASS, BREAKGLASS_WEB, CLOCK, DEVICE
from gateway.web.views.breakglass_admin import GrantPageView, RequestFormView, render_grant_page, render_message, render_request_form
from gateway.web.breakglass.context import FORM_PATH
from gateway.web.breakglass.csrf import form_csrf_refusal
from gateway.web.breakglass.http import RequestInvalid, identity_of, page_answer, read_form
from gateway.web.breakglass.requests import end_own_grant, own_grant, submit_request
from gateway.web.breakglass.scope import Target, offer_for, resolve_target
from gateway.web.problem import FieldError


async def form_page(request: web.Request) -> web.Response:
    """GET the request form on its own page for ``?route=ID&return_to=/path``."""
    identity = identity_of(request)
    if identity is None:
        return page_answer(render_message(401, "Sign in first", "Emergency access needs a verified user; sign in and try again."))
    context = request.config_dict[BREAKGLASS_WEB]
    return_to = safe_return_path(request.query.get("return_to"))
    route_id = request.query.get("route", "")[:100]
    try:
        target = resolve_target(request, context, route_id=route_id or None, tier=None, route_set=None)
    except RequestInvalid as exc:
        return page_answer(render_message(exc.status, "Cannot request emergency access here", str(exc),
                                          back=(return_to, "Back")))
    if target.rule.mode is TierMode.NEVER:
        return page_answer(render_message(403, "Emergency access is not available",
                                          f"The policy never allows break-glass for tier {target.scope.tier}. Fix the device, "
                                          "or ask the service owner for access.", back=(return_to, "Back")))
    now = request.config_dict[CLOCK]()
    view = RequestFormView(offer=offer_for(context, target), route_id=route_id, return_to=return_to,
                           csrf_token=context.csrf.issue(identity.subject, now=now), tier=target.scope.tier,
                           service_name=context.service_names.get(route_id, ""), user=identity.email)
    return page_answer(render_request_form(view))


async def form_request(request: web.Request) -> web.StreamResponse:
    """POST from the deny page's form: grant → 303 to ``return_to``; pending/refused → the grant page."""
    app = request.config_dict
    context = app[BREAKGLASS_WEB]
    identity = identity_of(request)
    if identity is None:
        return page_answer(render_message(401, "Sign in first", "Emergency access needs a verified user; sign in and try again."))
    form = await read_form(request)
    now = app[CLOCK]()
    return_to = safe_return_path(form.get("return_to"))
    refused = form_csrf_refusal(request, form, identity, now)
    if refused is not None:
        return page_answer(render_message(403, "Request not accepted", str(refused), back=(return_to, "Back")))
    device = request.get(DEVICE)
    if device is None:
        return page_answer(render_message(403, "This device is not identified",
                                          "Emergency access waives device checks, never identity: Gatehouse must know which "
                                          "device you are on. Use an enrolled device (with its certificate) and try again.",
                                          back=(return_to, "Back")))
    route_id = form.get("route", "")[:100] or None
    route_set = form.get("route_set", "")[:100] or None
    reason = form.get("reason", "")
    problems: list[FieldError] = []
    duration: timedelta | None = None
    raw_duration = form.get("duration", "").strip()
    if raw_duration:
        if raw_duration.isdigit() and int(raw_duration) > 0:
            duration = timedelta(seconds=int(raw_duration))
        else:
            problems.append(FieldError("duration", f"`{raw_duration[:20]}` is not a duration",
                                       "choose one from the list"))
    if len(reason) > context.settings.max_reason_length:
        problems.append(FieldError("reason", f"the reason has {len(reason)} characters",
                                   f"write at most {context.settings.max_reason_length}"))
    target: Target | None = None
    try:
        target = resolve_target(request, context, route_id=route_id, tier=None, route_set=route_set)
    except RequestInvalid as exc:
        if exc.status >= 500:
            return page_answer(render_message(exc.status, "Emergency access is unavailable", str(exc), back=(return_to, "Back")))
        problems.extend(exc.problems)

    def again(errors: list[str], status: int = 400) -> web.Response:
        view = RequestFormView(offer=offer_for(context, target), route_id=route_id or "", return_to=return_to,
                               csrf_token=context.csrf.issue(identity.subject, now=now), reason=reason,
                               duration_s=int(duration.total_seconds()) if duration else None, errors=tuple(errors),
                               tier=target.scope.tier if target else "", user=identity.email)
        return page_answer(render_request_form(view, status=status))

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
        return page_answer(render_message(
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


async def grant_page(request: web.Request) -> web.Response:
    """GET the requester's page for one grant (others get 404, not a hint that it exists)."""
    identity = identity_of(request)
    if identity is None:
        return page_answer(render_message(401, "Sign in first", "Sign in to see your emergency access requests."))
    app = request.config_dict
    grant = own_grant(request, identity)
    return_to = safe_return_path(request.query.get("return_to"))
    if grant is None:
        return page_answer(render_message(404, "No such request", "There is no emergency access request with this id for you.",
                                          back=(return_to, "Back")))
    now = app[CLOCK]()
    view = GrantPageView(grant=grant, status=app[BREAKGLASS].status_at(grant, now=now), now=now,
                         csrf_token=app[BREAKGLASS_WEB].csrf.issue(identity.subject, now=now), return_to=return_to,
                         notice="You ended this grant." if request.query.get("done") == "ended" else "")
    return page_answer(render_grant_page(view))


async def form_end(request: web.Request) -> web.StreamResponse:
    """POST from the grant page: end the user's own grant or withdraw a pending request."""
    identity = identity_of(request)
    if identity is None:
        return page_answer(render_message(401, "Sign in first", "Sign in to end your emergency access."))
    app = request.config_dict
    form = await read_form(request)
    return_to = safe_return_path(form.get("return_to"))
    refused = form_csrf_refusal(request, form, identity, app[CLOCK]())
    if refused is not None:
        return page_answer(render_message(403, "Request not accepted", str(refused), back=(return_to, "Back")))
    try:
        grant = await end_own_grant(request, identity, form.get("reason", ""))
    except (GrantNotFound, NotAuthorised) as exc:
        return page_answer(render_message(404 if isinstance(exc, GrantNotFound) else 403, "Nothing to end", str(exc),
                                          back=(return_to, "Back")))
    except AuditWriteError:
        return page_answer(render_message(503, "Could not end the grant",
                                          "The audit log could not be written, so the grant is unchanged; try again.",
                                          back=(return_to, "Back")))
    raise web.HTTPSeeOther(grant_page_href(grant.id, return_to) + "&done=ended")
