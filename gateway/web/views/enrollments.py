"""Laptop enrollment pages: confirming a one-time code, short messages, and the approvers' list.

Owns: ConfirmView, render_confirm, render_message, AdminView, render_admin, ADMIN_PATH.
Must not import: aiohttp, the clock, the store or any decision logic; gateway/web/enroll.py passes plain values in.

Every value from a user or a laptop (emails, serials, host names, reasons) is escaped by ``gateway.web.views.html``.
State-changing forms carry the ``csrf_token`` the handler issued for the viewer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gateway.store.base import EnrollmentRequest, EnrollmentStatus, OsqueryConflict
from gateway.web.views.html import Markup, el, join
from gateway.web.views.layout import HTML, NAV, Rendered, format_relative, page, respond, time_el

ADMIN_PATH = "/.gatehouse/admin/enrollments"
CONFIRM_PATH = "/.gatehouse/enroll/confirm"
ADMIN_NAV = (*NAV, (ADMIN_PATH, "Enrollments"))
_BADGE = {
    EnrollmentStatus.PENDING_PROOF: ("Waiting for the agent's proof", "info"),
    EnrollmentStatus.PENDING_APPROVAL: ("Waiting for an approver", "warn"),
    EnrollmentStatus.ISSUED: ("Certificate issued", "ok"),
    EnrollmentStatus.REFUSED: ("Refused", "bad"),
    EnrollmentStatus.EXPIRED: ("Expired", "muted"),
}
_FLAG_TEXT = {"other-owner": "This serial is registered to someone else"}
_NOTICE = {"approve": "Approved: the certificate was issued.", "refuse": "Refused."}


def _html(status: int, title: str, body: Markup, *, nav: tuple[tuple[str, str], ...] = NAV, wide: bool = False) -> Rendered:
    return respond(status, HTML, page(title, body, nav=nav, wide=wide))


@dataclass(frozen=True, slots=True)
class ConfirmView:
    """The signed-in user and the code they are asked to confirm."""

    user: str
    code: str
    csrf_token: str


def render_confirm(view: ConfirmView) -> Rendered:
    """"Enroll a laptop for alice@example.com? Code ABCD-EFGH", with the confirm form."""
    body = join(
        el("h1", f"Enroll a laptop for {view.user}?"),
        el("div",
           el("p", "Code ", el("code", view.code, class_="code")),
           el("p", el("strong", "Only confirm if you just ran the enrollment program"),
              " and your terminal shows this same code. Confirming lets that program ask for a device certificate "
              "in your name."),
           el("form",
              el("input", type="hidden", name="code", value=view.code),
              el("input", type="hidden", name="csrf_token", value=view.csrf_token),
              el("div", el("button", "Confirm this laptop", type="submit"), class_="actions"),
              method="post", action=CONFIRM_PATH),
           class_="card info"),
    )
    return _html(200, "Enroll a laptop", body)


def render_message(status: int, title: str, message: str, *, kind: str = "bad", back: bool = False) -> Rendered:
    """A short page saying what happened and, for approvers, the way back to the list."""
    link = el("div", el("a", "Back to enrollments", href=ADMIN_PATH, class_="button secondary"), class_="actions") if back else None
    body = join(el("h1", title), el("div", el("p", message), link, class_=f"card {kind}",
                                       role="alert" if kind == "bad" else None))
    return _html(status, title, body)


@dataclass(frozen=True, slots=True)
class AdminView:
    """Everything the approvals page shows."""

    requests: tuple[EnrollmentRequest, ...]
    conflicts: tuple[OsqueryConflict, ...]
    viewer: str
    csrf_token: str
    now: datetime
    notice: str = ""


def _hidden_csrf(view: AdminView) -> Markup:
    return el("input", type="hidden", name="csrf_token", value=view.csrf_token)


def _decide(view: AdminView, request: EnrollmentRequest) -> Markup:
    if request.user == view.viewer:
        return el("p", "Your own enrollment: another approver decides.", class_="muted")
    base = f"{ADMIN_PATH}/{request.id}"
    return el("div",
              el("form", _hidden_csrf(view), el("button", "Approve and issue", type="submit"), method="post", action=f"{base}/approve"),
              el("form", _hidden_csrf(view),
                 el("label", "Reason for refusing", for_=f"r-{request.id}"),
                 el("input", type="text", name="reason", id=f"r-{request.id}", required=True, maxlength="500"),
                 el("button", "Refuse", type="submit", class_="secondary"),
                 method="post", action=f"{base}/refuse"),
              class_="actions")


def _request_card(view: AdminView, request: EnrollmentRequest) -> Markup:
    text, kind = _BADGE[request.status]
    flags = [el("p", el("span", "Flagged", class_="badge bad"), " ", _FLAG_TEXT.get(f, f), class_="flag") for f in request.flags]
    facts = join(
        el("dt", "User"), el("dd", request.user),
        el("dt", "Serial"), el("dd", el("code", request.serial)),
        el("dt", "Laptop"), el("dd", f"{request.hostname or '—'} ({request.platform})"),
        el("dt", "Proof"), el("dd", "the health agent hashes a file" if request.proof == "osquery-file-hash" else "an approver confirms"),
        el("dt", "Requested"), el("dd", time_el(request.created_at, now=view.now), f" ({format_relative(request.created_at, now=view.now)})"),
    )
    if request.decided_by:
        facts = join(facts, el("dt", "Decided by"), el("dd", request.decided_by))
    if request.detail and request.status is EnrollmentStatus.REFUSED:
        facts = join(facts, el("dt", "Why"), el("dd", request.detail))
    return el("section",
              el("h3", el("code", request.id), " ", el("span", text, class_=f"badge {kind}")),
              flags, el("dl", facts),
              _decide(view, request) if request.status is EnrollmentStatus.PENDING_APPROVAL else None,
              class_="card" + (" warn" if request.status is EnrollmentStatus.PENDING_APPROVAL else ""),
              id=request.id)


def render_admin(view: AdminView) -> Rendered:
    """The approvals page: waiting requests with approve/refuse, recent outcomes, and serials two agents report."""
    waiting = [r for r in view.requests if r.status is EnrollmentStatus.PENDING_APPROVAL]
    others = [r for r in view.requests if r.status is not EnrollmentStatus.PENDING_APPROVAL]
    notice = _NOTICE.get(view.notice)
    conflicts = el("div", el("table", el("thead", el("tr", el("th", "Serial"), el("th", "Earlier agent"), el("th", "New agent"), el("th", "When"))),
                             el("tbody", [el("tr", el("td", el("code", c.serial)), el("td", c.previous_host), el("td", c.new_host),
                                             el("td", time_el(c.at, now=view.now))) for c in view.conflicts])),
                   class_="table-wrap") if view.conflicts else el("p", "None.", class_="muted")
    body = join(
        el("h1", "Laptop enrollments"),
        el("div", el("p", notice), class_="card ok", role="status") if notice else None,
        el("h2", f"Waiting for an approver ({len(waiting)})"),
        [_request_card(view, r) for r in waiting] or el("p", "Nothing is waiting.", class_="muted"),
        el("h2", "Two agents report this serial"),
        el("p", "A second osquery agent enrolled these serials with another host identity; the newer agent now reports for the serial.",
           class_="lead"),
        conflicts,
        el("h2", "Recent enrollments"),
        [_request_card(view, r) for r in others] or el("p", "None yet.", class_="muted"),
    )
    return _html(200, "Laptop enrollments", body, nav=ADMIN_NAV)
