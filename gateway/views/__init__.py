"""Server-rendered pages of Gatehouse's own: the denial, the user's status, privacy, the fleet view, sign-in problems.

Pure renderers: plain data in, ``Rendered(status, headers, body)`` out (``.response()`` makes the
aiohttp response). No decision logic, no clock, no I/O; handlers evaluate and pass Decisions in.
Every HTML page carries a strict Content-Security-Policy (the one inline stylesheet by hash), no
scripts and no external assets.
"""

from __future__ import annotations

from gateway.views.deny import (
    DEFAULT_AGENT_HELP,
    DEFAULT_ENROLL_HELP,
    BreakglassOffer,
    DenyView,
    SourceRefresh,
    platform_from_user_agent,
    render_deny,
)
from gateway.views.fleet import FleetFilter, FleetRow, FleetView, filter_rows, render_fleet
from gateway.views.layout import CONTENT_SECURITY_POLICY, Rendered
from gateway.views.markdown import render_markdown
from gateway.views.privacy import FactUse, PrivacyView, render_privacy
from gateway.views.signin import SignInProblem, render_sign_in_problem, render_signed_out
from gateway.views.status import CheckRef, DeviceStatus, ServiceLink, StatusView, render_status

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DEFAULT_AGENT_HELP",
    "DEFAULT_ENROLL_HELP",
    "BreakglassOffer",
    "CheckRef",
    "DenyView",
    "DeviceStatus",
    "FactUse",
    "FleetFilter",
    "FleetRow",
    "FleetView",
    "PrivacyView",
    "Rendered",
    "ServiceLink",
    "SignInProblem",
    "SourceRefresh",
    "StatusView",
    "filter_rows",
    "platform_from_user_agent",
    "render_deny",
    "render_fleet",
    "render_markdown",
    "render_privacy",
    "render_sign_in_problem",
    "render_signed_out",
    "render_status",
]
