"""What a user sees when signing in did not work, and after signing out: a page, or problem+json.

Owns: SignInProblem, render_sign_in_problem, render_signed_out.
Must not import: aiohttp, identity or any decision logic; callers pass a problem code from the
closed set below and the address that starts a new sign-in.

Browsers (``gateway.web.pages.wants_html``, as every other page) get a page in Gatehouse's layout that
says what happened and offers "Sign in again"; API clients get the one problem document of
``gateway.web.problem`` with ``reason`` (the same closed-set code) and, when there is one,
``login_url``. Nothing a request carries reaches these pages except the provider's error code,
which is shown only when it is a plain token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from gateway.web.pages import wants_html
from gateway.web.views.html import el
from gateway.web.views.layout import Rendered, html_response, respond
from gateway.web.problem import problem as problem_document

_PROVIDER_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_AGAIN = "If this keeps happening, tell IT and quote the request id below."

_TEXTS: Mapping[str, tuple[str, str]] = MappingProxyType({
    # credentials on a request (AuthReason.public)
    "missing": ("Sign-in required", "Only signed-in users may use this address."),
    "expired": ("Your sign-in has expired", "Sign in again to continue."),
    "invalid": ("Your sign-in could not be verified", "The sign-in your browser sent is not valid here. Sign in again."),
    "wrong-audience": ("Your sign-in is for another service", "The sign-in your browser sent was issued for another service. Sign in again."),
    "unavailable": ("Sign-in is not available right now",
                    "Gatehouse cannot reach the identity provider, so it cannot check who you are. Try again in a minute."),
    "device-certificate-ambiguous": ("Your device certificate names more than one device",
                                     "The client certificate your browser sent names several device serials, so Gatehouse cannot "
                                     "tell which device this is and refuses it. Ask IT for a device certificate that names only this "
                                     "laptop's serial."),
    # a login through the provider (LoginFailure)
    "cancelled": ("Sign-in was cancelled", "The sign-in was cancelled at the identity provider, so you are not signed in."),
    "provider-error": ("The identity provider did not sign you in",
                       "The identity provider ended the sign-in with an error, so you are not signed in. " + _AGAIN),
    "stale": ("This sign-in link is old or was already used",
              "A sign-in link works once, for a few minutes, in the browser that started it. Start a new sign-in."),
    "rejected": ("The identity provider refused to finish the sign-in",
                 "The identity provider did not accept Gatehouse's request to finish signing you in. " + _AGAIN),
    "unverified": ("Gatehouse could not verify your sign-in",
                   "The identity provider's answer did not pass Gatehouse's checks, so you are not signed in. " + _AGAIN),
})
PROBLEM_CODES = frozenset(_TEXTS)
"""Every problem code these pages know."""


@dataclass(frozen=True, slots=True)
class SignInProblem:
    """Why a request has no signed-in user, and what the user can do about it."""

    status: int
    code: str
    """The problem document's ``code``: `unauthenticated`, `identity-unavailable` or `login-failed`."""
    reason: str
    """One of PROBLEM_CODES: what happened, in the page's words and the document's ``reason``."""
    login_url: str | None = None
    """Where "Sign in again" goes (None when Gatehouse has no login of its own)."""
    request_id: str | None = None
    provider_error: str | None = None
    """The provider's own error code for `provider-error` (shown only when it is a plain token)."""


def render_sign_in_problem(problem: SignInProblem, *, accept: str | None, extra: Mapping[str, str] | None = None) -> Rendered:
    """The page (browsers) or problem+json (API clients) for a request without a signed-in user.

    Raises:
        KeyError: ``problem.reason`` is not one of PROBLEM_CODES.
    """
    title, detail = _TEXTS[problem.reason]
    provider_code = problem.provider_error if problem.provider_error and _PROVIDER_CODE.fullmatch(problem.provider_error) else None
    if not wants_html(accept or ""):
        more: dict[str, object] = {"reason": problem.reason}
        if problem.login_url is not None:
            more["login_url"] = problem.login_url
        if provider_code is not None:
            more["provider_error"] = provider_code
        return problem_document(problem.status, problem.code, detail, title=title, request_id=problem.request_id,
                                extra=more).rendered(extra)
    content = el(
        "div",
        el("h1", title),
        el("p", detail, class_="lead"),
        el("p", "The identity provider answered ", el("code", provider_code), ".", class_="small") if provider_code else None,
        el("div", el("a", "Sign in again", href=problem.login_url, class_="button"), class_="actions")
        if problem.login_url else None,
        el("p", "Request id ", el("code", problem.request_id), class_="small muted") if problem.request_id else None,
        class_="card bad" if problem.status < 500 else "card warn",
    )
    return html_response(problem.status, title, content, extra=extra)


def render_signed_out(*, login_url: str | None, provider_ended: bool, accept: str | None) -> Rendered:
    """The page after signing out (browsers), or a short JSON document (API clients)."""
    if not wants_html(accept or ""):
        return respond(200, "application/json", b'{"signed_out":true}')
    if provider_ended:
        detail = "You have signed out of Gatehouse and of your identity provider."
    else:
        detail = ("You have signed out of Gatehouse. Your identity provider may still remember you, so the next "
                  "sign-in might not ask for your password; on a shared computer, sign out there too or close the browser.")
    content = el(
        "div",
        el("h1", "You are signed out"),
        el("p", detail, class_="lead"),
        el("div", el("a", "Sign in again", href=login_url, class_="button"), class_="actions") if login_url else None,
        class_="card ok",
    )
    return html_response(200, "Signed out", content)
