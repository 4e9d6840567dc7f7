"""The CSRF glue of the break-glass forms and JSON API (``gateway.web.csrf`` does the checking).

Owns: form_csrf_refusal, json_csrf_refusal, checked_json_call, log_csrf_refused.
Must not import: the gateway.gate.admission of this package.

Every POST passes ``gateway.web.csrf``: forms with their ``csrf_token`` field; JSON with a JSON
content type plus the ``X-Gatehouse-CSRF`` token or an ``X-Gatehouse-Client`` header. A refusal
is logged as ``breakglass.csrf_refused``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import structlog
from aiohttp import web

from gateway.web.csrf import CsrfRefused, check_form, check_json
from gateway.identity.model import Identity
from gateway.keys import BREAKGLASS_WEB, CLOCK
from gateway.web.breakglass.http import host_of, problem_answer

_log = structlog.get_logger("gateway.breakglass")


def form_csrf_refusal(request: web.Request, form: Mapping[str, str], identity: Identity, now: datetime) -> CsrfRefused | None:
    """The refusal of a form POST that fails the CSRF checks (logged), or None when it passes."""
    try:
        check_form(request.config_dict[BREAKGLASS_WEB].csrf, form, request.headers, host=host_of(request),
                   subject=identity.subject, now=now)
    except CsrfRefused as exc:
        log_csrf_refused(request, exc, identity)
        return exc
    return None


def json_csrf_refusal(request: web.Request, identity: Identity, now: datetime) -> web.Response | None:
    """The problem response for a JSON API call that fails the CSRF checks (logged), or None when it passes."""
    try:
        check_json(request.config_dict[BREAKGLASS_WEB].csrf, request.headers, host=host_of(request), subject=identity.subject, now=now)
    except CsrfRefused as exc:
        log_csrf_refused(request, exc, identity)
        return problem_answer(request, 415 if exc.code == "content-type" else 403, exc.code, str(exc))
    return None


def checked_json_call(request: web.Request, caller: Identity | web.Response) -> tuple[Identity, datetime] | web.Response:
    """The caller and the time for a JSON API POST, or the answer that refuses it: ``caller``'s own refusal
    (no user, not staff), else the CSRF checks' (logged)."""
    if isinstance(caller, web.Response):
        return caller
    now = request.config_dict[CLOCK]()
    refused = json_csrf_refusal(request, caller, now)
    return refused if refused is not None else (caller, now)


def log_csrf_refused(request: web.Request, exc: CsrfRefused, identity: Identity) -> None:
    """Log one refused POST: who, which check, where from."""
    _log.warning("breakglass.csrf_refused", user=identity.subject, code=exc.code, path=request.path,
                 origin=request.headers.get("Origin"), fetch_site=request.headers.get("Sec-Fetch-Site"))
