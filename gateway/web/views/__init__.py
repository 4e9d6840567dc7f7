"""Server-rendered pages of Gatehouse's own: the denial, the user's status, privacy, the fleet view, sign-in problems.

Pure renderers: plain data in, ``Rendered(status, headers, body)`` out (``.response()`` makes the
aiohttp response). No decision logic, no clock, no I/O; handlers evaluate and pass Decisions in.
Every HTML page carries a strict Content-Security-Policy (the one inline stylesheet by hash), no
scripts and no external assets.

Public names load lazily (as in ``gateway.identity``), so importing one renderer, or
``gateway.web.problem`` (which builds on ``gateway.web.views.layout``), does not import every page.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "deny": ("DEFAULT_AGENT_HELP", "DEFAULT_ENROLL_HELP", "BreakglassOffer", "DenyView", "SourceRefresh",
             "platform_from_user_agent", "render_deny"),
    "fleet": ("FleetFilter", "FleetRow", "FleetView", "filter_rows", "render_fleet"),
    "layout": ("CONTENT_SECURITY_POLICY", "Rendered"),
    "markdown": ("render_markdown",),
    "privacy": ("FactUse", "PrivacyView", "render_privacy"),
    "signin": ("SignInProblem", "render_sign_in_problem", "render_signed_out"),
    "status": ("CheckRef", "DeviceStatus", "ServiceLink", "StatusView", "render_status"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

# Written out (not computed) so that checkers see the public names; a test keeps it equal to
# sorted(_MODULE_OF).
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


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module `gateway.web.views` has no attribute `{name}`")
    value = getattr(importlib.import_module(f"gateway.web.views.{module}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from gateway.web.views.deny import (
        DEFAULT_AGENT_HELP, DEFAULT_ENROLL_HELP, BreakglassOffer, DenyView, SourceRefresh, platform_from_user_agent,
        render_deny,
    )
    from gateway.web.views.fleet import FleetFilter, FleetRow, FleetView, filter_rows, render_fleet
    from gateway.web.views.layout import CONTENT_SECURITY_POLICY, Rendered
    from gateway.web.views.markdown import render_markdown
    from gateway.web.views.privacy import FactUse, PrivacyView, render_privacy
    from gateway.web.views.signin import SignInProblem, render_sign_in_problem, render_signed_out
    from gateway.web.views.status import CheckRef, DeviceStatus, ServiceLink, StatusView, render_status
