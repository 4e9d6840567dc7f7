"""What every break-glass handler shares: the paths, the body limit, and BreakglassWeb (settings, policy, CSRF).

Owns: FORM_PATH, API_PATH, REVIEW_PATH, REVIEW_API_PATH, MAX_BODY_BYTES, REVIEW_ACTIONS, DecisionSource, BreakglassWeb.
Must not import: gateway.keys (``keys.BREAKGLASS_WEB`` names BreakglassWeb, so this module stays below it),
the handlers of this package.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Union

from aiohttp import web

from gateway.config.breakglass import BreakglassSettings
from gateway.web.csrf import CsrfProtector
from policy_engine import CompiledPolicySet, Decision

FORM_PATH = "/.gatehouse/break-glass"
API_PATH = "/.gatehouse/api/v1/break-glass"
REVIEW_PATH = "/.gatehouse/admin/break-glass"
REVIEW_API_PATH = "/.gatehouse/api/v1/admin/break-glass"
MAX_BODY_BYTES = 64 * 1024
"""The largest form or JSON body a break-glass POST may send."""
REVIEW_ACTIONS = ("approve", "reject", "revoke", "review")


DecisionSource = Callable[[web.Request, "str | None", str], Union["Decision | None", Awaitable["Decision | None"]]]
"""Re-evaluates the requesting device for a route (id, or None for a whole tier) and tier, now."""


@dataclass(frozen=True, slots=True)
class BreakglassWeb:
    """What the break-glass handlers need beyond the service: settings, policy, CSRF, re-evaluation."""

    settings: BreakglassSettings
    policies: Callable[[], CompiledPolicySet | None]
    """The policy set in force (read per request, so reloads apply); None before one is loaded."""
    csrf: CsrfProtector
    evaluate: DecisionSource | None = None
    """Used for the failing checks at request time when the request has no ``OUTCOME``."""
    route_tiers: Callable[[], Mapping[str, str]] | None = None
    """Route id → tier; by default read from the live configuration (``request[LIVE]``)."""
    service_names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: BreakglassSettings, *, policies: Callable[[], CompiledPolicySet | None],
                      evaluate: DecisionSource | None = None,
                      route_tiers: Callable[[], Mapping[str, str]] | None = None) -> BreakglassWeb:
        """Build the handlers' context; the CSRF key is the configured one or a random per-process one."""
        max_age = timedelta(seconds=settings.csrf_max_age_s)
        if settings.csrf_secret is not None:
            csrf = CsrfProtector(settings.csrf_secret.reveal().encode(), max_age, frozenset(settings.allowed_origins))
        else:
            csrf = CsrfProtector.with_random_secret(max_age=max_age, allowed_origins=settings.allowed_origins)
        return cls(settings=settings, policies=policies, csrf=csrf, evaluate=evaluate, route_tiers=route_tiers)
