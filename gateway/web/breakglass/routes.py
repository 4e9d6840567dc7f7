"""Mounting the break-glass pages and API on the app.

Owns: add_breakglass_routes.
Must not import: gateway.app (app.py calls add_breakglass_routes).
"""

from __future__ import annotations

from aiohttp import web

from gateway.keys import BREAKGLASS_WEB, CSRF
from gateway.web.breakglass.context import API_PATH, FORM_PATH, REVIEW_API_PATH, REVIEW_PATH, BreakglassWeb
from gateway.web.breakglass.pages import form_end, form_page, form_request, grant_page
from gateway.web.breakglass.requests import api_end, api_own_grant, api_own_list, api_request
from gateway.web.breakglass.review import (
    review_api_action,
    review_api_detail,
    review_api_list,
    review_detail,
    review_form_action,
    review_list,
)


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
