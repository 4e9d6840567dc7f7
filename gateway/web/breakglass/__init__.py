"""Break-glass over HTTP: the request form and API, the requester's grant page, the managers' review.

Owns: the break-glass web package, split by concern:

    context.py      paths, body limit, BreakglassWeb (settings, policy source, CSRF protector, re-evaluation)
    routes.py       add_breakglass_routes
    requests.py     the requester's JSON API, and submit_request (one request: audit, log, count, notify)
    pages.py        the request form, the grant page, ending a grant from it
    review.py       the managers' review pages and their JSON API
    offer.py        what the deny page asks: deny_page_offer, csrf_token_for
    maintenance.py  the background pass: other replicas' entries, expiries, gauges
    scope.py        a request's scope and the tier rule that applies to it
    documents.py    grant_json, failing_checks_of (plain data)
    csrf.py         the CSRF glue of the forms and JSON API
    http.py         body reading, JSON and problem answers, who is asking
    notify.py       metrics, webhook and log-safe reasons of each grant change

Must not import: gateway.app (app.py wires this package in), the store (the service holds the sink).

Wiring (in app.py)::

    app[BREAKGLASS] = await BreakglassService.open(sink, config=settings.breakglass.to_config())
    add_breakglass_routes(app, BreakglassWeb.from_settings(settings.break_glass,
                          policies=lambda: holder.current, evaluate=reevaluate))
    app.cleanup_ctx.append(webhook_ctx(notifier))        # optional notifications (app[WEBHOOK] = notifier)
    app.cleanup_ctx.append(breakglass_maintenance_ctx)   # expiries, other replicas, gauge

Needs on the app: ``BREAKGLASS`` (the service), ``CLOCK``, ``METRICS`` (optional), and either
``request[LIVE]``/``app[CONFIG]`` (routes and their tiers) or ``BreakglassWeb.route_tiers``.
Needs on each request: ``USER`` (the verified Identity) and ``DEVICE`` (the verified DeviceId),
set by the identity middleware upstream of these handlers for ``/.gatehouse/`` paths too;
``OUTCOME`` when the gate already decided this request (otherwise ``evaluate`` is called).

Every POST passes ``gateway.web.csrf``. JSON errors are the one problem document of
``gateway.web.problem`` (``urn:gatehouse:problem:<code>``) with ``code``, ``detail``,
``request_id`` and ``errors: [{field, problem, expected}]``; ``AuditWriteError`` is 503 "no grant
was given". Logs: ``grant.*`` events (requests.py, review.py), ``breakglass.review_refused``,
``breakglass.csrf_refused``.
"""

from __future__ import annotations

from gateway.web.breakglass.context import API_PATH, FORM_PATH, REVIEW_API_PATH, REVIEW_PATH, BreakglassWeb, DecisionSource
from gateway.web.breakglass.documents import failing_checks_of, grant_json
from gateway.web.breakglass.maintenance import breakglass_maintenance_ctx, run_maintenance
from gateway.web.breakglass.offer import csrf_token_for, deny_page_offer
from gateway.web.breakglass.pages import grant_page_href
from gateway.web.breakglass.routes import add_breakglass_routes

__all__ = [
    "API_PATH",
    "FORM_PATH",
    "REVIEW_API_PATH",
    "REVIEW_PATH",
    "BreakglassWeb",
    "DecisionSource",
    "add_breakglass_routes",
    "breakglass_maintenance_ctx",
    "csrf_token_for",
    "deny_page_offer",
    "failing_checks_of",
    "grant_json",
    "grant_page_href",
    "run_maintenance",
]
