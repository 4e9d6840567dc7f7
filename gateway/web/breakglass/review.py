"""The managers' break-glass review: the list and detail pages, approve, reject, revoke, mark reviewed; and their JSON API.

Owns: the handlers review_list, review_detail, review_form_action, review_api_list, review_api_detail,
review_api_action, and act (one review action, logged, counted and notified).
Must not import: gateway.app, the store.

Paths::

    GET  /.gatehouse/admin/break-glass[/{id}]                review list and detail (HTML)
    POST /.gatehouse/admin/break-glass/{id}/{action}         approve | reject | revoke | review (forms)
    GET  /.gatehouse/api/v1/admin/break-glass[/{id}]         the same as JSON
    POST /.gatehouse/api/v1/admin/break-glass/{id}/{action}  the same actions as JSON

Only members of the reviewer and approver groups get in; anyone else gets 401/403 and
``breakglass.review_refused`` in the log. Logs: ``grant.approved``, ``grant.rejected``,
``grant.revoked``, ``grant.reviewed``.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from breakglass import AuditWriteError, Grant, GrantNotFound, NotAuthorised
from gateway.identity.model import Identity
from gateway.keys import BREAKGLASS, BREAKGLASS_WEB, CLOCK, METRICS
from gateway.web.views.breakglass_admin import (
    ReviewDetailView, ReviewListView, ReviewQuery, ReviewRow, render_message, render_review_detail, render_review_list,
)
from gateway.web.breakglass.context import REVIEW_ACTIONS, REVIEW_PATH
from gateway.web.breakglass.csrf import checked_json_call, form_csrf_refusal
from gateway.web.breakglass.documents import grant_json
from gateway.web.breakglass.http import (
    RequestInvalid,
    groups_of,
    identity_of,
    is_staff,
    json_answer,
    page_answer,
    problem_answer,
    read_form,
    read_json,
)
from gateway.web.breakglass.notify import count, notify, set_active_gauge, short
from gateway.web.problem import FieldError

_log = structlog.get_logger("gateway.breakglass")


def log_review_refused(request: web.Request, identity: Identity | None, code: str) -> None:
    """Log one refused review request: who, why, what they tried."""
    _log.warning("breakglass.review_refused", user=identity.subject if identity else None, code=code,
                 method=request.method, path=request.path,
                 grant_id=request.match_info.get("grant_id"), action=request.match_info.get("action"))


def staff_html(request: web.Request) -> Identity | web.Response:
    """The verified reviewer or approver, or the 401/403 page for anyone else (logged)."""
    identity = identity_of(request)
    if identity is None:
        log_review_refused(request, None, "authentication-required")
        return page_answer(render_message(401, "Sign in first", "The break-glass review needs a verified user; sign in."))
    if not is_staff(request, identity):
        log_review_refused(request, identity, "not-a-reviewer")
        return page_answer(render_message(403, "Not available to you",
                                          "The break-glass review is for members of the reviewer and approver groups. "
                                          "Ask the security team if you need access."))
    return identity


def staff_json(request: web.Request) -> Identity | web.Response:
    """The verified reviewer or approver, or the 401/403 problem answer for anyone else (logged)."""
    identity = identity_of(request)
    if identity is None:
        log_review_refused(request, None, "authentication-required")
        return problem_answer(request, 401, "authentication-required", "sign in first; the review API needs a verified user")
    if not is_staff(request, identity):
        log_review_refused(request, identity, "not-a-reviewer")
        groups = ", ".join(f"`{g}`" for g in sorted(request.config_dict[BREAKGLASS_WEB].settings.staff_groups))
        return problem_answer(request, 403, "not-a-reviewer", f"`{identity.subject}` is not in a reviewer or approver group; "
                              f"ask to be added to one of {groups or 'the configured groups'}")
    return identity


def review_rows(request: web.Request, query: ReviewQuery) -> tuple[tuple[ReviewRow, ...], int]:
    """The grants the filters select, with status and uses, and how many grants there are in all."""
    app = request.config_dict
    service, now = app[BREAKGLASS], app[CLOCK]()
    grants = service.list_grants(query.to_grant_filter(), now=now)
    rows = tuple(ReviewRow(g, service.status_at(g, now=now), sum(service.usage(g.id).values())) for g in grants)
    return rows, len(service.list_grants(now=now))


async def review_list(request: web.Request) -> web.Response:
    """GET the review list (HTML) with its filters."""
    identity = staff_html(request)
    if isinstance(identity, web.Response):
        return identity
    app = request.config_dict
    query = ReviewQuery.from_query(request.query)
    rows, total = review_rows(request, query)
    policies = app[BREAKGLASS_WEB].policies()
    view = ReviewListView(rows=rows, query=query, tiers=policies.tier_names if policies else (), now=app[CLOCK](),
                          viewer=identity.email, total=total)
    return page_answer(render_review_list(view))


async def review_api_list(request: web.Request) -> web.Response:
    """GET the review list as JSON (same filters as the page)."""
    identity = staff_json(request)
    if isinstance(identity, web.Response):
        return identity
    now = request.config_dict[CLOCK]()
    query = ReviewQuery.from_query(request.query)
    rows, total = review_rows(request, query)
    return json_answer(200, {"total": total, "count": len(rows), "filter": query.to_query(),
                             "grants": [grant_json(r.grant, status=r.status, now=now) | {"uses": r.uses} for r in rows]})


def detail_view(request: web.Request, identity: Identity, grant: Grant, *, notice: str = "", error: str = "") -> ReviewDetailView:
    """What the detail page shows ``identity`` about ``grant``, and which actions it offers them."""
    app = request.config_dict
    service, now, settings = app[BREAKGLASS], app[CLOCK](), app[BREAKGLASS_WEB].settings
    groups = groups_of(identity)
    own = grant.user == identity.subject
    return ReviewDetailView(
        grant=grant, status=service.status_at(grant, now=now), events=service.events_for(grant.id),
        usage=service.usage(grant.id), now=now, csrf_token=app[BREAKGLASS_WEB].csrf.issue(identity.subject, now=now),
        viewer=identity.email, can_decide=not own and bool(groups & frozenset(settings.approver_groups)),
        can_revoke=bool(groups & settings.staff_groups), can_review=not own and bool(groups & frozenset(settings.reviewer_groups)),
        notice=notice, error=error,
    )


DONE = {"approved": "Approved: access started for the requested time.", "rejected": "Rejected.",
        "revoked": "Revoked: access ended at once.", "reviewed": "Your review was saved in the audit log."}
"""The notice the detail page shows after each action's redirect (``?done=``)."""


async def review_detail(request: web.Request) -> web.Response:
    """GET one grant for a reviewer."""
    identity = staff_html(request)
    if isinstance(identity, web.Response):
        return identity
    try:
        grant = request.config_dict[BREAKGLASS].get(request.match_info["grant_id"])
    except GrantNotFound as exc:
        return page_answer(render_message(404, "No such grant", str(exc), back=(REVIEW_PATH, "All grants")))
    return page_answer(render_review_detail(detail_view(request, identity, grant,
                                                        notice=DONE.get(request.query.get("done", ""), ""))))


async def act(request: web.Request, identity: Identity, action: str, text: str) -> Grant:
    """Apply one review action to the path's grant; log, count and notify it.

    Raises:
        RequestInvalid: unknown action or a required text is missing.
        GrantNotFound, NotAuthorised, AuditWriteError: as the service raises them.
    """
    app = request.config_dict
    service, now = app[BREAKGLASS], app[CLOCK]()
    grant_id = request.match_info["grant_id"]
    groups = groups_of(identity)
    text = text.strip()[:2000]
    if action not in REVIEW_ACTIONS:
        raise RequestInvalid([FieldError("action", f"`{action[:40]}` is not an action",
                                         "one of " + ", ".join(f"`{a}`" for a in REVIEW_ACTIONS))], status=404,
                             code="action-unknown")
    if action in ("reject", "revoke", "review") and not text:
        name = "comment" if action == "review" else "reason"
        raise RequestInvalid([FieldError(name, f"no {name} was given", f"say why in `{name}`; it goes into the audit log")])
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
              reason=short(text) if text else None)
    if action != "review":
        count(request, grant.scope.tier, outcome)
        notify(request, outcome, grant, actor=identity.email or identity.subject, note=text)
    set_active_gauge(app.get(METRICS), service, now)
    return grant


async def review_form_action(request: web.Request) -> web.StreamResponse:
    """POST approve/reject/revoke/review from the detail page; 303 back to it."""
    identity = staff_html(request)
    if isinstance(identity, web.Response):
        return identity
    app = request.config_dict
    form = await read_form(request)
    back = (REVIEW_PATH, "All grants")
    refused = form_csrf_refusal(request, form, identity, app[CLOCK]())
    if refused is not None:
        return page_answer(render_message(403, "Request not accepted", str(refused), back=back))
    action = request.match_info["action"]
    try:
        grant = await act(request, identity, action, form.get("comment" if action == "review" else "reason", ""))
    except (RequestInvalid, GrantNotFound, NotAuthorised, AuditWriteError) as exc:
        if isinstance(exc, NotAuthorised):
            log_review_refused(request, identity, exc.code)
        status = (exc.status if isinstance(exc, RequestInvalid) else 403 if isinstance(exc, NotAuthorised)
                  else 503 if isinstance(exc, AuditWriteError) else 409)
        try:
            current = app[BREAKGLASS].get(request.match_info["grant_id"])
        except GrantNotFound:
            return page_answer(render_message(404, "No such grant", str(exc), back=back))
        return page_answer(render_review_detail(detail_view(request, identity, current, error=str(exc)), status=status))
    done = {"approve": "approved", "reject": "rejected", "revoke": "revoked", "review": "reviewed"}[action]
    raise web.HTTPSeeOther(f"{REVIEW_PATH}/{grant.id}?done={done}")


async def review_api_detail(request: web.Request) -> web.Response:
    """GET one grant with its audit events and usage, as JSON."""
    identity = staff_json(request)
    if isinstance(identity, web.Response):
        return identity
    app = request.config_dict
    service, now = app[BREAKGLASS], app[CLOCK]()
    try:
        grant = service.get(request.match_info["grant_id"])
    except GrantNotFound as exc:
        return problem_answer(request, 404, "grant-not-found", str(exc))
    return json_answer(200, grant_json(grant, status=service.status_at(grant, now=now), now=now, service=service))


async def review_api_action(request: web.Request) -> web.Response:
    """POST approve/reject/revoke/review as JSON (``{"reason": …}`` or ``{"comment": …}``)."""
    checked = checked_json_call(request, staff_json(request))
    if isinstance(checked, web.Response):
        return checked
    identity, now = checked
    app = request.config_dict
    action = request.match_info["action"]
    try:
        doc = await read_json(request)
        text = doc.get("comment" if action == "review" else "reason", "")
        grant = await act(request, identity, action, text if isinstance(text, str) else "")
    except RequestInvalid as exc:
        return problem_answer(request, exc.status, exc.code, str(exc), errors=exc.problems)
    except GrantNotFound as exc:
        try:
            app[BREAKGLASS].get(request.match_info["grant_id"])
        except GrantNotFound:
            return problem_answer(request, 404, "grant-not-found", str(exc))
        return problem_answer(request, 409, "grant-not-in-state", str(exc))
    except NotAuthorised as exc:
        log_review_refused(request, identity, exc.code)
        return problem_answer(request, 403, exc.code, str(exc))
    except AuditWriteError as exc:
        return problem_answer(request, 503, "audit-unavailable", f"nothing was changed: {exc}")
    service = app[BREAKGLASS]
    return json_answer(200, grant_json(grant, status=service.status_at(grant, now=now), now=now, service=service))
