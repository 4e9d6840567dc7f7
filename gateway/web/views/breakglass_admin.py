"""Break-glass pages: the request form, the requester's grant page, and the managers' review.

Owns: RequestFormView, render_request_form, GrantPageView, render_grant_page, render_message,
ReviewQuery, ReviewRow, ReviewListView, render_review_list, ReviewDetailView, render_review_detail,
the paths of these pages.
Must not import: aiohttp, the clock, the store or any decision logic; gateway.gate.admission in
``gateway/web/breakglass/`` compute each grant's status at ``now`` and pass plain values in.

Every value from a user (reasons, comments, names) goes through ``gateway.web.views.html`` escaping.
State-changing forms carry the ``csrf_token`` the handler issued for the viewer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from breakglass import AuditEvent, EventKind, Grant, GrantFilter, GrantStatus
from gateway.web.views.deny import BREAK_GLASS_PATH, BreakglassOffer
from gateway.web.views.html import Child, Markup, el, filter_select, join
from gateway.web.views.layout import (
    HTML, NAV, Rendered, format_duration, format_relative, page, respond, time_el,
)

REVIEW_PATH = "/.gatehouse/admin/break-glass"
GRANT_PATH = BREAK_GLASS_PATH
_TRUE = frozenset({"1", "true", "on", "yes"})
REVIEW_NAV = (*NAV, (REVIEW_PATH, "Break-glass review"))

_STATUS_BADGE = {
    GrantStatus.ACTIVE: ("Active", "ok"),
    GrantStatus.PENDING: ("Waiting for approval", "warn"),
    GrantStatus.REJECTED: ("Refused", "bad"),
    GrantStatus.REVOKED: ("Revoked", "bad"),
    GrantStatus.ENDED: ("Ended", "muted"),
    GrantStatus.EXPIRED: ("Expired", "muted"),
}
_EVENT_TEXT = {
    EventKind.REQUESTED: "Requested",
    EventKind.GRANTED: "Granted at once",
    EventKind.PENDING: "Waiting for an approver",
    EventKind.APPROVED: "Approved",
    EventKind.REJECTED: "Refused",
    EventKind.FIRST_USE: "First used",
    EventKind.EXPIRED: "Expired",
    EventKind.ENDED: "Ended by the user",
    EventKind.REVOKED: "Revoked",
    EventKind.REVIEWED: "Reviewed",
}
_PENDING_WHY = {
    "tier-approval": "this service's tier needs an approver for every emergency grant",
    "self-grant-limit": "you reached the number of emergency grants you can give yourself this week",
}


def status_badge(status: GrantStatus) -> Markup:
    """A coloured badge naming the grant's status."""
    text, kind = _STATUS_BADGE[status]
    return el("span", text, class_=f"badge {kind}")


def _fact(term: str, value: Child) -> Markup:
    return join(el("dt", term), el("dd", value if value not in (None, "") else el("span", "—", class_="muted")))


def _when(moment: datetime | None, now: datetime) -> Markup | None:
    if moment is None:
        return None
    return join(time_el(moment, now=now), el("span", f" ({format_relative(moment, now=now)})", class_="muted"))


def _hidden(name: str, value: str) -> Markup:
    return el("input", type="hidden", name=name, value=value)


def _html(status: int, title: str, body: Markup, *, wide: bool = False, nav: tuple[tuple[str, str], ...] = NAV,
          footer: Markup | None = None) -> Rendered:
    return respond(status, HTML, page(title, body, wide=wide, nav=nav, footer=footer))


# --- the request form ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestFormView:
    """The emergency-access form on its own page (shown again, filled in, when a request was refused)."""

    offer: BreakglassOffer
    route_id: str
    return_to: str
    csrf_token: str
    service_name: str = ""
    tier: str = ""
    reason: str = ""
    """The reason as typed, to show again after an error."""
    duration_s: int | None = None
    errors: tuple[str, ...] = ()
    user: str = ""


def render_request_form(view: RequestFormView, *, status: int = 200) -> Rendered:
    """The request form page; ``status`` 400 with ``errors`` after a refused submission."""
    offer = view.offer
    chosen = view.duration_s or (int(offer.default_duration.total_seconds()) if offer.default_duration else None)
    options = [el("option", format_duration(d), value=str(int(d.total_seconds())),
                  selected=int(d.total_seconds()) == chosen) for d in offer.durations]
    errors = (el("div", el("h2", "Your request was not sent"),
                 el("ul", [el("li", e) for e in view.errors]), class_="card bad", role="alert")
              if view.errors else None)
    approval = ("An approver has to approve the request before access starts."
                if offer.needs_approval else "Access starts as soon as you submit.")
    service = view.service_name or view.route_id
    body = join(
        el("h1", "Request emergency access"),
        el("p", f"Temporary access to {service} from this device, without fixing it first. ", approval,
           " Every request is logged with your reason and reviewed by the security team.", class_="lead"),
        errors,
        el("form",
           _hidden("csrf_token", view.csrf_token),
           _hidden("return_to", view.return_to),
           _hidden("route", view.route_id),
           el("label", "Why do you need access now?", for_="bg-reason"),
           el("p", f"At least {offer.min_reason_length} characters, for example the incident or ticket.",
              class_="hint", id="bg-reason-hint"),
           el("textarea", view.reason, id="bg-reason", name="reason", required=True,
              minlength=str(offer.min_reason_length), maxlength="2000", aria_describedby="bg-reason-hint"),
           el("label", "For how long?", for_="bg-duration"),
           el("select", options, id="bg-duration", name="duration"),
           el("div", el("button", "Ask for emergency access" if offer.needs_approval else "Request emergency access",
                        type="submit"),
              el("a", "Back", href=view.return_to, class_="button secondary"), class_="actions"),
           method="post", action=BREAK_GLASS_PATH, class_="card", aria_label="Request emergency access"),
        el("p", "Signed in as ", el("strong", view.user), class_="small muted") if view.user else None,
    )
    return _html(status, "Request emergency access", body)


# --- the requester's own grant page -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantPageView:
    """One grant as its requester sees it after asking: active, waiting, refused or over."""

    grant: Grant
    status: GrantStatus
    now: datetime
    csrf_token: str
    return_to: str = "/"
    notice: str = ""


def render_grant_page(view: GrantPageView, *, status: int = 200) -> Rendered:
    """The requester's page for one grant, with the form to end it (or withdraw the request)."""
    g, now = view.grant, view.now

    def end_form(*links: Markup) -> Markup:
        return el(
            "form",
            _hidden("csrf_token", view.csrf_token),
            _hidden("return_to", view.return_to),
            el("div", *links, el("button", "End emergency access now" if view.status is GrantStatus.ACTIVE
                                 else "Withdraw the request", type="submit", class_="secondary"), class_="actions"),
            method="post", action=f"{GRANT_PATH}/{g.id}/end",
        )

    if view.status is GrantStatus.ACTIVE:
        title = "Emergency access is on"
        lead = join("You have access to ", g.scope.describe(), " until ", _when(g.expires_at, now),
                    ". Every request you make is logged.")
        card = el("div",
                  el("p", "Fix the device when you can: access ends at the time above, whatever happens."),
                  end_form(el("a", "Continue to the service", href=view.return_to, class_="button")), class_="card ok")
    elif view.status is GrantStatus.PENDING:
        why = "; ".join(_PENDING_WHY.get(b, b) for b in sorted(g.pending_because)) or "an approver must decide"
        title = "Waiting for an approver"
        lead = join("Your request was sent to the approvers because ", why, ".")
        card = el("div",
                  el("p", "Reload this page to see whether it was approved; nothing happens until an approver decides. "
                     "Unanswered requests expire after a day."),
                  end_form(el("a", "Reload", href=f"{GRANT_PATH}/{g.id}?" + urlencode({"return_to": view.return_to}),
                              class_="button")), class_="card warn")
    elif view.status is GrantStatus.REJECTED:
        title = "Emergency access refused"
        lead = join("Your request was refused: ", g.end_reason or "no reason was given", ".")
        card = el("div", el("p", "Fix the device, or ask the service owner for access."),
                  el("div", el("a", "Back", href=view.return_to, class_="button secondary"), class_="actions"),
                  class_="card bad")
    else:
        title = "Emergency access is over"
        ended = {GrantStatus.ENDED: "you ended it", GrantStatus.REVOKED: "it was revoked",
                 GrantStatus.EXPIRED: "it reached its time limit"}[view.status]
        lead = join("This grant no longer gives access: ", ended, ".",
                    join(" ", g.end_reason) if view.status is GrantStatus.REVOKED and g.end_reason else "")
        card = el("div", el("div", el("a", "Back", href=view.return_to, class_="button secondary"), class_="actions"),
                  class_="card")
    body = join(
        el("h1", title),
        el("p", lead, class_="lead"),
        el("p", view.notice, class_="card info", role="status") if view.notice else None,
        card,
        el("h2", "Your request"),
        el("dl",
           _fact("Status", status_badge(view.status)),
           _fact("Request", el("code", g.id)),
           _fact("Access to", g.scope.describe()),
           _fact("Duration asked", format_duration(g.duration)),
           _fact("Reason", g.reason),
           _fact("Device", el("code", g.device_serial)),
           _fact("Requested", _when(g.requested_at, now)),
           class_="facts card"),
    )
    return _html(status, title, body)


def render_message(status: int, title: str, message: str, *, back: tuple[str, str] | None = None,
                   kind: str = "bad") -> Rendered:
    """A short page saying what went wrong (or right) and where to go next."""
    body = join(
        el("h1", title),
        el("div", el("p", message),
           el("div", el("a", back[1], href=back[0], class_="button secondary"), class_="actions") if back else None,
           class_=f"card {kind}", role="alert" if kind == "bad" else None),
    )
    return _html(status, title, body)


# --- the review list ----------------------------------------------------------------------------


def _parse_day(value: str) -> date | None:
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ReviewQuery:
    """The review list's filters, as GET parameters; empty means "any"."""

    user: str = ""
    status: str = ""
    tier: str = ""
    since: str = ""
    """First day (``YYYY-MM-DD``, UTC) of the request date range."""
    until: str = ""
    """Last day, inclusive."""
    unreviewed: bool = False
    flagged: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ReviewQuery:
        """Read the filters from a request's query; unknown keys and malformed dates are ignored."""
        def text(name: str) -> str:
            return str(query.get(name, "")).strip()[:200]

        status = text("status").lower()
        return cls(
            user=text("user"),
            status=status if status in {s.value for s in GrantStatus} else "",
            tier=text("tier"),
            since=text("since") if _parse_day(text("since")) else "",
            until=text("until") if _parse_day(text("until")) else "",
            unreviewed=text("unreviewed").lower() in _TRUE,
            flagged=text("flagged").lower() in _TRUE,
        )

    def to_query(self) -> dict[str, str]:
        """The non-empty filters as GET parameters."""
        return {k: ("1" if v is True else str(v)) for k, v in asdict(self).items() if v}

    def to_grant_filter(self) -> GrantFilter:
        """The service's filter for these parameters (``until`` is the end of its day, UTC)."""
        since = _parse_day(self.since)
        until = _parse_day(self.until)
        return GrantFilter(
            user=self.user or None,
            status=GrantStatus(self.status) if self.status else None,
            tier=self.tier or None,
            since=datetime.combine(since, time(0), tzinfo=UTC) if since else None,
            until=datetime.combine(until, time(0), tzinfo=UTC) + timedelta(days=1) if until else None,
            unreviewed_only=self.unreviewed,
            flagged_only=self.flagged,
        )


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """One grant in the list with its status at ``now`` and how many requests it served."""

    grant: Grant
    status: GrantStatus
    uses: int = 0


@dataclass(frozen=True, slots=True)
class ReviewListView:
    """The filtered grants (newest first), the filters, and the choices the form offers."""

    rows: tuple[ReviewRow, ...]
    query: ReviewQuery
    tiers: tuple[str, ...]
    now: datetime
    viewer: str = ""
    total: int = 0
    """Grants in the log before filtering."""


def _filter_form(view: ReviewListView) -> Markup:
    q = view.query
    return el(
        "form",
        el("fieldset",
           el("legend", "Show only"),
           el("label", el("input", type="checkbox", name="unreviewed", value="1", checked=q.unreviewed,
                          id="f-unreviewed"), "Not reviewed yet", class_="check", for_="f-unreviewed"),
           el("label", el("input", type="checkbox", name="flagged", value="1", checked=q.flagged, id="f-flagged"),
              "Repeat users", class_="check", for_="f-flagged")),
        el("div",
           el("div", el("label", "User", for_="f-user"),
              el("input", type="search", id="f-user", name="user", value=q.user, autocomplete="off")),
           filter_select("status", "Status", [(s.value, _STATUS_BADGE[s][0]) for s in GrantStatus], q.status),
           filter_select("tier", "Tier", [(t, t) for t in view.tiers], q.tier),
           el("div", el("label", "Requested from", for_="f-since"),
              el("input", type="text", id="f-since", name="since", value=q.since, placeholder="YYYY-MM-DD", inputmode="numeric")),
           el("div", el("label", "Requested until", for_="f-until"),
              el("input", type="text", id="f-until", name="until", value=q.until, placeholder="YYYY-MM-DD", inputmode="numeric")),
           class_="filters"),
        el("div", el("button", "Apply filters", type="submit"),
           el("a", "Clear", href=REVIEW_PATH, class_="button secondary"), class_="actions"),
        method="get", action=REVIEW_PATH, class_="card", aria_label="Filter break-glass grants",
    )


def render_review_list(view: ReviewListView) -> Rendered:
    """``/.gatehouse/admin/break-glass``: every grant matching the filters, newest first."""
    now = view.now
    rows = []
    for row in view.rows:
        g = row.grant
        marks = [status_badge(row.status)]
        if g.flagged:
            marks.append(el("span", "Repeat user", class_="badge warn"))
        if not g.reviewed:
            marks.append(el("span", "Not reviewed", class_="badge info"))
        rows.append(el(
            "tr",
            el("th", el("a", el("code", g.id), href=f"{REVIEW_PATH}/{g.id}"), scope="row"),
            el("td", el("strong", g.user_email or g.user), el("div", el("code", g.device_serial), class_="small")),
            el("td", g.scope.describe()),
            el("td", join([join(" " if i else "", m) for i, m in enumerate(marks)])),
            el("td", time_el(g.requested_at, now=now),
               el("div", format_relative(g.requested_at, now=now), class_="small muted")),
            el("td", format_duration(g.duration)),
            el("td", str(row.uses)),
            el("td", g.reason[:140] + ("…" if len(g.reason) > 140 else ""), class_="col-main"),
        ))
    table = (el("div", el("table",
                          el("thead", el("tr", [el("th", h, scope="col") for h in (
                              "Grant", "User and device", "Access to", "Status", "Requested", "Duration",
                              "Requests", "Reason")])),
                          el("tbody", rows)), class_="table-wrap")
             if rows else el("p", "No grant matches these filters.", class_="card"))
    pending = sum(1 for r in view.rows if r.status is GrantStatus.PENDING)
    summary = f"{len(view.rows)} of {view.total} grants shown" + (f", {pending} waiting for approval." if pending else ".")
    json_href = "/.gatehouse/api/v1/admin/break-glass" + ("?" + urlencode(view.query.to_query()) if view.query.to_query() else "")
    body = join(
        el("h1", "Break-glass review"),
        el("p", summary, class_="lead"),
        el("h2", "Filters"),
        _filter_form(view),
        el("h2", "Grants"),
        el("p", "For scripts: ", el("a", "the same list as JSON", href=json_href), class_="small"),
        table,
    )
    footer = join("Generated ", time_el(now, now=now), f" for {view.viewer}" if view.viewer else "")
    return _html(200, "Break-glass review", body, wide=True, nav=REVIEW_NAV, footer=footer)


# --- the review detail --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewDetailView:
    """One grant for a reviewer: what was asked, the device then, what it reached, its audit trail."""

    grant: Grant
    status: GrantStatus
    events: tuple[AuditEvent, ...]
    usage: Mapping[str, int]
    now: datetime
    csrf_token: str
    viewer: str = ""
    can_decide: bool = False
    """The viewer is an approver and not the requester (approve/reject shown for pending grants)."""
    can_revoke: bool = False
    can_review: bool = False
    """The viewer is a reviewer and not the requester."""
    notice: str = ""
    error: str = ""


def _action_form(grant_id: str, action: str, csrf: str, button: str, *, field: str | None = None,
                 label: str = "", required: bool = False, secondary: bool = False) -> Markup:
    ident = f"{action}-{field}" if field else None
    return el(
        "form",
        _hidden("csrf_token", csrf),
        join(el("label", label, for_=ident),
             el("textarea", "", id=ident, name=field, required=required, maxlength="2000")) if field else None,
        el("div", el("button", button, type="submit", class_="secondary" if secondary else None), class_="actions"),
        method="post", action=f"{REVIEW_PATH}/{grant_id}/{action}", aria_label=button,
    )


def render_review_detail(view: ReviewDetailView, *, status: int = 200) -> Rendered:
    """``/.gatehouse/admin/break-glass/{id}``: the grant, its actions, usage and audit events."""
    g, now = view.grant, view.now
    actions: list[Markup] = []
    if view.status is GrantStatus.PENDING and view.can_decide:
        actions.append(el("div", el("h3", "Decide"),
                          _action_form(g.id, "approve", view.csrf_token, "Approve"),
                          _action_form(g.id, "reject", view.csrf_token, "Reject", field="reason",
                                       label="Why is it rejected?", required=True, secondary=True),
                          class_="card warn"))
    if view.status is GrantStatus.ACTIVE and view.can_revoke:
        actions.append(el("div", el("h3", "Revoke"),
                          el("p", "Access ends at once for this user and device."),
                          _action_form(g.id, "revoke", view.csrf_token, "Revoke now", field="reason",
                                       label="Why is it revoked?", required=True),
                          class_="card bad"))
    if view.can_review:
        done = (el("p", "Reviewed by ", el("strong", g.reviewed_by), " ", _when(g.reviewed_at, now), ": ",
                   g.comment or el("span", "no comment", class_="muted")) if g.reviewed else None)
        actions.append(el("div", el("h3", "Review again" if g.reviewed else "Mark as reviewed"), done,
                          _action_form(g.id, "review", view.csrf_token,
                                       "Save review" if g.reviewed else "Mark as reviewed", field="comment",
                                       label="Comment (goes into the audit log)", required=True),
                          class_="card info"))
    checks = (el("ul", [el("li", el("code", c.name), " — ", c.detail) for c in g.failing_checks])
              if g.failing_checks else el("p", "No failing check was recorded.", class_="muted"))
    usage_rows = [el("tr", el("th", el("code", route), scope="row"), el("td", str(count)))
                  for route, count in sorted(view.usage.items(), key=lambda kv: (-kv[1], kv[0]))]
    usage = join(
        el("div", el("table", el("thead", el("tr", el("th", "Route", scope="col"), el("th", "Requests", scope="col"))),
                     el("tbody", usage_rows)), class_="table-wrap") if usage_rows
        else el("p", "No request was served under this grant (counted since Gatehouse last started).",
                class_="card muted"),
        el("p", "First used on ", el("code", g.first_route_id), " ", _when(g.first_used_at, now), class_="small")
        if g.first_used_at else None,
    )
    events = [el("tr",
                 el("td", time_el(e.at, now=now)),
                 el("td", _EVENT_TEXT.get(e.kind, e.kind.value),
                    join(" ", [el("span", f, class_="badge muted") for f in sorted(e.flags)]) if e.flags else None),
                 el("td", e.actor),
                 el("td", e.reason or (el("code", e.route_id) if e.route_id else el("span", "—", class_="muted")),
                    class_="col-main"))
              for e in view.events]
    title = f"Break-glass {g.id}"
    body = join(
        el("p", el("a", "← All grants", href=REVIEW_PATH), class_="small"),
        el("h1", "Break-glass for ", g.user_email or g.user, " ", status_badge(view.status)),
        el("p", view.notice, class_="card ok", role="status") if view.notice else None,
        el("p", view.error, class_="card bad", role="alert") if view.error else None,
        el("div", el("h2", "Reason"), el("p", g.reason), class_="card"),
        el("dl",
           _fact("Grant", el("code", g.id)),
           _fact("User", join(g.user_email or g.user, el("span", f" ({g.user})", class_="muted")
                              if g.user_email and g.user_email != g.user else "")),
           _fact("Device", el("code", g.device_serial)),
           _fact("Access to", g.scope.describe() + (f" ({', '.join(sorted(g.scope.routes))})" if g.scope.routes else "")),
           _fact("Requested", _when(g.requested_at, now)),
           _fact("Duration", format_duration(g.duration)),
           _fact("Started", _when(g.starts_at, now)),
           _fact("Access until" if view.status is GrantStatus.ACTIVE else "Was due to end",
                 _when(g.expires_at, now)),
           _fact("Approved by", g.approver),
           _fact("Given without approver", "yes" if g.self_granted else "no"),
           _fact("Repeat user", el("span", "yes", class_="badge warn") if g.flagged else "no"),
           _fact("Ended", join(_when(g.ended_at, now), f" by {g.ended_by}" if g.ended_by else "",
                               f": {g.end_reason}" if g.end_reason else "")) if g.ended_at else None,
           class_="facts card"),
        join(el("h2", "Actions"), actions) if actions else None,
        el("h2", "Device state when requested"),
        el("div", checks, class_="card"),
        el("h2", "What was accessed"),
        usage,
        el("h2", "Audit trail"),
        el("div", el("table",
                     el("thead", el("tr", [el("th", h, scope="col") for h in ("When", "What", "Who", "Details")])),
                     el("tbody", events)), class_="table-wrap"),
    )
    footer = join("Generated ", time_el(now, now=now), f" for {view.viewer}" if view.viewer else "")
    return _html(status, title, body, wide=True, nav=REVIEW_NAV, footer=footer)
