"""What the gate answers instead of proxying, as pages: the denial, a refused break-glass use; and who is signed in on Gatehouse's own pages.

Owns: GatePages (the gate's ``GateAnswers``: ``denied``, ``audit_unavailable``), deny_response (the
denial, content-negotiated: a page that teaches for browsers, problem+json for API clients, also
what "check again" answers), enroll_origin (the address the enrollment commands name),
rendered_response, reserved_identity (the middleware that identifies users on Gatehouse's own
pages), needs_user, USER_AREAS.
Must not import: app, gateway.serve, the proxy (the gate calls GatePages through its ``answers``; the gate
itself never imports pages).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog
from aiohttp import web

from gateway.gate.decide import OWNER_REASONS, GateOutcome
from gateway.identity.errors import AuthenticationError
from gateway.ingest.connectors import connector_for_source
from gateway.keys import CLOCK, CONFIG, DEVICE, IDENTITY, REQUEST_ID, SNAPSHOT_CACHE, USER
from gateway.web.pages import error_response
from gateway.gate.policy_gate import device_owners
from gateway.request import RequestLike
from gateway.proxy.routing import Route
from gateway.web.views.deny import DenyView, SourceRefresh, platform_from_user_agent, render_deny
from gateway.web.views.layout import Rendered
from gateway.web.breakglass import csrf_token_for, deny_page_offer
from policy_engine import CompiledPolicySet


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
"""An origin safe to put in a shell command the user copies: scheme, host name or address, port."""


def enroll_origin(request: RequestLike) -> str | None:
    """Gatehouse's address for the enrollment commands; None when Gatehouse does not enroll laptops.

    Enrollment is on when ``identity.device.ca`` (Gatehouse's device CA) is configured. The address is
    ``identity.oidc.external_url`` when set (the browser's own origin for a login), else the origin
    this request reached, which is the host the browser must present its certificate to.
    """
    identity = request.config_dict[CONFIG].current.settings.identity
    # INVARIANT: `ca` is the device CA section of identity.device; absent or None means enrollment is off.
    if identity is None or identity.device.ca is None:
        return None
    origin = identity.oidc.external_url if identity.oidc is not None else f"{request.scheme}://{request.host}"
    origin = origin.rstrip("/")
    return origin if _ORIGIN.fullmatch(origin) else None


def rendered_response(rendered: Rendered) -> web.Response:
    """An aiohttp response from a view's rendered output."""
    return web.Response(status=rendered.status, headers=dict(rendered.headers), body=rendered.body)


def deny_response(
    request: RequestLike, outcome: GateOutcome, route: Route, policies: CompiledPolicySet, *,
    now: datetime, refresh_eta_s: int | None = None, return_to: str | None = None, source_refresh: SourceRefresh | None = None,
) -> web.Response:
    """The 403 denial for ``outcome``: a page for browsers, problem+json for API clients.

    ``source_refresh`` is what "check again" got from a connector-fed device's vendor; without it, a
    connector-fed device's denial still names the vendor and how soon its data changes.
    """
    device = request.get(DEVICE)
    serial = device.serial if device is not None else None
    snapshot = request.config_dict[SNAPSHOT_CACHE].get(serial) if serial else None
    if source_refresh is None and snapshot is not None and (runner := connector_for_source(request.app, snapshot.source)):
        source_refresh = SourceRefresh(runner.connector.label, runner.connector.refresh_hint)
    user = request.get(USER)
    view = DenyView(
        decision=outcome.decision,
        snapshot=snapshot,
        owners=device_owners(request.config_dict, serial) if serial and outcome.reason in OWNER_REASONS else (),
        device_serial=serial,
        route_id=route.id,
        tier=policies.tier(route.tier),
        return_to=return_to if return_to is not None else request.raw_path,
        csrf_token=csrf_token_for(request),
        now=now,
        remediation=policies.remediation,
        breakglass=deny_page_offer(request, route.tier) if outcome.reason not in OWNER_REASONS else None,
        refresh_eta_s=refresh_eta_s,
        source_refresh=source_refresh,
        user=user.email if user is not None else "",
        request_id=request.get(REQUEST_ID) or "",
        platform_hint=platform_from_user_agent(request.headers.get("User-Agent", "")),
        enroll_origin=enroll_origin(request) if serial is None else None,
    )
    return rendered_response(render_deny(view, accept=request.headers.get("Accept")))


class GatePages:
    """The gate's answers as pages and problem documents (``gateway.gate.admission.GateAnswers``)."""

    def denied(
        self, request: RequestLike, outcome: GateOutcome, route: Route, policies: CompiledPolicySet, *, now: datetime,
    ) -> web.StreamResponse:
        """The 403 for a denied request (``deny_response``)."""
        return deny_response(request, outcome, route, policies, now=now)

    def audit_unavailable(self, request: RequestLike) -> web.StreamResponse:
        """The 503 for a break-glass request whose use could not be recorded in the audit log."""
        return error_response(
            request.headers.get("Accept", ""), status=503, code="audit-unavailable",
            detail="your break-glass grant is valid, but its use could not be recorded in the audit log, "
            "so this request is refused; try again in a minute",
            request_id=request.get(REQUEST_ID),
        )


# Gatehouse's own pages that act for a signed-in user. Everything else under /.gatehouse/ is either
# public (health, login, keys) or authenticates its own way (osquery node keys, ingest tokens).
USER_AREAS = (
    "/.gatehouse/break-glass", "/.gatehouse/api/v1/break-glass", "/.gatehouse/admin/",
    "/.gatehouse/api/v1/admin/", "/.gatehouse/recheck", "/.gatehouse/me", "/.gatehouse/enroll/confirm",
)


def needs_user(path: str) -> bool:
    """True for Gatehouse pages that need a verified user (the status page ``/.gatehouse/`` included)."""
    return path == "/.gatehouse/" or path.startswith(USER_AREAS)


@web.middleware
async def reserved_identity(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Identify the user (and device) on Gatehouse's own user pages; 401 or login redirect otherwise."""
    if not needs_user(request.path):
        return await handler(request)
    resolver = request.config_dict[IDENTITY]
    try:
        identity = await resolver.authenticate(request, now=request.config_dict[CLOCK]())
    except AuthenticationError as err:
        return await resolver.challenge(request, err)
    request[USER] = identity
    try:
        device = resolver.device(request, identity)
    except AuthenticationError as err:
        return await resolver.challenge(request, err)
    if device is not None:
        request[DEVICE] = device
    structlog.contextvars.bind_contextvars(user=identity.email, device=device.serial if device else None)
    return await handler(request)
