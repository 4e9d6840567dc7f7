"""Gatehouse's error pages: HTML for browsers, problem+json for everything else.

Owns: content negotiation (``wants_html``), and the error page or problem document for a status
and code (``error_response``), a GatewayError (``gateway_error_response``) and an HTTP error a
handler raised (``http_error_response``; its own text is shown, escaped; aiohttp's stock
``403: Forbidden`` is replaced by the generic text).
Must not import: app, gateway.gate.admission, proxy (no decision logic; callers pass what to show).

The HTML page is the one page shell of ``gateway.web.views.layout`` (its stylesheet, CSP and security
headers); the JSON is the one problem document of ``gateway.web.problem``. Every value that comes
from a request goes through the shell's escaping (or orjson) before it reaches a page.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from gateway.errors import GatewayError
from gateway.web.views.html import el
from gateway.web.views.layout import html_response
from gateway.web.problem import problem, title_for

_DETAILS = {
    "bad-request-target": "Gatehouse refused this address because a service could read it differently.",
    "no-route": "No service is configured at this address.",
    "body-too-large": "The request body is larger than this service accepts.",
    "upstream-connect": "Gatehouse could not connect to the service. Try again in a moment.",
    "upstream-timeout": "The service did not answer in time. Try again in a moment.",
    "upstream-protocol": "The service broke off its answer. Try again in a moment.",
    "internal-error": "Gatehouse failed to handle this request. Try again, and quote the request id if you ask for help.",
}


def wants_html(accept: str) -> bool:
    """True when the client prefers an HTML page (a browser), False for API clients and CLIs."""
    best_html = best_json = -1.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media in ("text/html", "application/xhtml+xml"):
            best_html = max(best_html, quality)
        elif media in ("application/json", "application/problem+json"):
            best_json = max(best_json, quality)
    return best_html > 0 and best_html >= best_json


def error_response(
    accept: str, *, status: int, code: str, detail: str | None = None, request_id: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> web.Response:
    """The error page (browser) or problem document (API, with ``extra`` members) for a status and error code."""
    title = title_for(status, code)
    explanation = _DETAILS.get(code, title + ".")
    if wants_html(accept):
        content = el(
            "div",
            el("h1", title),
            el("p", explanation, class_="lead") if not detail or code in _DETAILS else None,  # a specific text replaces the generic "Access denied."
            el("p", detail) if detail else None,
            el("dl", el("dt", "Status"), el("dd", status), el("dt", "Code"), el("dd", el("code", code)),
               [el("dt", "Request id"), el("dd", el("code", request_id))] if request_id else None, class_="facts"),
            class_="card bad" if status < 500 else "card warn",
        )
        return html_response(status, title, content).response()
    return problem(status, code, detail or explanation, title=title, request_id=request_id, extra=extra).response()


def gateway_error_response(accept: str, error: GatewayError, *, request_id: str | None) -> web.Response:
    """The page for a GatewayError; only the errors whose messages are safe to show carry them."""
    detail = str(error) if error.status == 400 else None
    return error_response(accept, status=error.status, code=error.code, detail=detail, request_id=request_id)


def http_error_response(accept: str, error: web.HTTPException, *, request_id: str | None) -> web.Response:
    """The page for an HTTP error a handler raised: its own text when it wrote one, else the generic page.

    aiohttp gives an exception raised without a text the stock text ``<status>: <reason>``; only
    that one is dropped, so a text written for the user (who may open the fleet view, why a form
    was refused) reaches the page, HTML-escaped, and the problem document's ``detail``.
    """
    text = error.text
    detail = text if text and text != f"{error.status}: {error.reason}" else None
    return error_response(accept, status=error.status, code=f"http-{error.status}", detail=detail, request_id=request_id)
