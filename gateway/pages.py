"""Rendering of Gatehouse's own pages: HTML for browsers, problem+json for everything else.

Owns: the base layout (templates/layout.html + templates/style.css), content negotiation, the
security headers of every page, error pages for GatewayError and HTTP errors (a handler's own text
on an HTTP error is shown, escaped; aiohttp's stock ``403: Forbidden`` is replaced by the generic page).
Must not import: app, handlers, proxy (no decision logic; callers pass what to show).

The deny and login pages reuse the same pieces: ``wants_html(accept)``, ``html_page(title, body)``
(``body`` is trusted HTML the caller built with ``escape``), ``problem_json(...)`` and
``page_response(...)``, which sets the strict Content-Security-Policy. Every value that comes from a
request, a device or a user goes through ``escape`` (or orjson) before it reaches a page.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Mapping
from importlib.resources import files
from string import Template

import orjson
from aiohttp import web

from gateway.errors import GatewayError

_TEMPLATES = files("gateway") / "templates"
_LAYOUT = Template(_TEMPLATES.joinpath("layout.html").read_text(encoding="utf-8"))
_STYLE = _TEMPLATES.joinpath("style.css").read_text(encoding="utf-8").strip()
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""No scripts, no external assets; the one inline stylesheet is allowed by its hash."""

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

_TITLES = {
    400: "Bad request",
    401: "Sign-in required",
    403: "Access denied",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    431: "Request headers too large",
    500: "Something went wrong",
    502: "Service unreachable",
    503: "Not ready",
    504: "Service did not answer in time",
}

_CODE_TITLES = {
    "device-certificate-revoked": "This laptop's device certificate was revoked",
    "device-certificate-expired": "This laptop's device certificate has expired",
}

_DETAILS = {
    "bad-request-target": "Gatehouse refused this address because a service could read it differently.",
    "no-route": "No service is configured at this address.",
    "body-too-large": "The request body is larger than this service accepts.",
    "upstream-connect": "Gatehouse could not connect to the service. Try again in a moment.",
    "upstream-timeout": "The service did not answer in time. Try again in a moment.",
    "upstream-protocol": "The service broke off its answer. Try again in a moment.",
    "internal-error": "Gatehouse failed to handle this request. Try again, and quote the request id if you ask for help.",
}


def escape(value: object) -> str:
    """HTML-escape any value (quotes included) for use in text or attributes."""
    return html.escape(str(value), quote=True)


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


def html_page(title: str, body: str) -> str:
    """The full HTML document: the escaped title and a trusted body inside the base layout."""
    return _LAYOUT.substitute(title=escape(title), style=_STYLE, body=body)


def problem_json(*, status: int, code: str, title: str, detail: str, request_id: str | None, **extra: object) -> bytes:
    """An RFC 9457 problem document."""
    doc: dict[str, object] = {"type": f"urn:gatehouse:problem:{code}", "title": title, "status": status, "code": code, "detail": detail}
    if request_id:
        doc["request_id"] = request_id
    doc.update(extra)
    return orjson.dumps(doc)


def page_response(*, status: int, html_body: str | None = None, json_body: bytes | None = None, headers: Mapping[str, str] | None = None) -> web.Response:
    """A response carrying a page (HTML) or a problem document (JSON), with the security headers."""
    if html_body is not None:
        response = web.Response(status=status, text=html_body, content_type="text/html", charset="utf-8")
    else:
        response = web.Response(status=status, body=json_body or b"{}", content_type="application/problem+json")
    response.headers.update(SECURITY_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def error_response(
    accept: str, *, status: int, code: str, detail: str | None = None, request_id: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> web.Response:
    """The error page (browser) or problem document (API, with ``extra`` members) for a status and error code."""
    title = _CODE_TITLES.get(code) or _TITLES.get(status, "Error")
    explanation = _DETAILS.get(code, title + ".")
    if wants_html(accept):
        rows = f"<dt>Status</dt><dd>{status}</dd><dt>Code</dt><dd><code>{escape(code)}</code></dd>"
        if request_id:
            rows += f"<dt>Request id</dt><dd><code>{escape(request_id)}</code></dd>"
        body = f"<h1>{escape(title)}</h1>\n"
        if not detail or code in _DETAILS:  # a specific text replaces the generic "Access denied."
            body += f"<p>{escape(explanation)}</p>\n"
        if detail:
            body += f"<p>{escape(detail)}</p>\n"
        body += f"<dl>{rows}</dl>"
        return page_response(status=status, html_body=html_page(title, body))
    return page_response(
        status=status,
        json_body=problem_json(status=status, code=code, title=title, detail=detail or explanation, request_id=request_id, **(extra or {})),
    )


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
