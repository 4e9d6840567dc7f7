"""What the request path asks of break-glass: the deny page's offer and form token, and noting a grant's use.

Owns: deny_page_offer, csrf_token_for.
Must not import: the gateway.gate.admission of this package (the gate calls these three before any page exists).
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from breakglass import TierMode
from gateway.config.breakglass import tier_rule
from gateway.keys import BREAKGLASS_WEB, CLOCK, CSRF, DEVICE, USER
from gateway.request import RequestLike
from gateway.web.views.deny import BreakglassOffer

_log = structlog.get_logger("gateway.breakglass")


def csrf_token_for(request: RequestLike) -> str:
    """A CSRF token for the verified user of ``request`` (for the deny page's forms); empty without one."""
    identity = request.get(USER)
    protector = request.config_dict.get(CSRF)
    if identity is None or protector is None:
        return ""
    return protector.issue(identity.subject, now=request.config_dict[CLOCK]())


def deny_page_offer(request: RequestLike, tier: str) -> BreakglassOffer | None:
    """What the deny page's break-glass form offers for ``tier``, or None when it must not be shown
    (the tier never allows it, no identified device, or no policy loaded)."""
    context = request.config_dict.get(BREAKGLASS_WEB)
    if context is None or request.get(USER) is None or request.get(DEVICE) is None:
        return None
    policies = context.policies()
    info = policies.tier(tier) if policies is not None else None
    if info is None:
        return None
    rule = tier_rule(info, context.settings)
    if rule.mode is TierMode.NEVER:
        return None
    ceiling = min(rule.max_duration, timedelta(seconds=context.settings.max_duration_s))
    return BreakglassOffer.up_to(ceiling, default=min(rule.default_duration or ceiling, ceiling),
                                 min_reason_length=context.settings.min_reason_length,
                                 needs_approval=rule.mode is TierMode.APPROVAL)
