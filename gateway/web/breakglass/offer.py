"""What the request path asks of break-glass: the deny page's offer and form token, and noting a grant's use.

Owns: deny_page_offer, csrf_token_for, note_use.
Must not import: the handlers of this package (the gate calls these three before any page exists).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from aiohttp import web

from breakglass import AuditWriteError, Grant, GrantNotFound, TierMode
from gateway.breakglass_config import tier_rule
from gateway.keys import BREAKGLASS, BREAKGLASS_WEB, CLOCK, CSRF, DEVICE, METRICS, USER
from gateway.views.deny import BreakglassOffer

_log = structlog.get_logger("gateway.breakglass")


def csrf_token_for(request: web.Request) -> str:
    """A CSRF token for the verified user of ``request`` (for the deny page's forms); empty without one."""
    identity = request.get(USER)
    protector = request.config_dict.get(CSRF)
    if identity is None or protector is None:
        return ""
    return protector.issue(identity.subject, now=request.config_dict[CLOCK]())


def deny_page_offer(request: web.Request, tier: str) -> BreakglassOffer | None:
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


async def note_use(app: web.Application, grant: Grant, route_id: str, *, now: datetime) -> bool:
    """Count one request let through by ``grant`` (the gate's ``BREAK_GLASS`` verdict) before proxying.

    The first use is written to the audit log. Returns False when it could not be written: the
    caller must refuse the request (503), because a use that is not on record must not happen.
    Binds ``break_glass=True`` and ``grant_id`` for the ``request.completed`` line.
    """
    structlog.contextvars.bind_contextvars(break_glass=True, grant_id=grant.id)
    try:
        await app[BREAKGLASS].record_use(grant.id, route_id=route_id, now=now)
    except (AuditWriteError, GrantNotFound) as exc:
        _log.error("grant.use_refused", grant_id=grant.id, route=route_id, error=str(exc))
        return False
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.breakglass_requests.labels(route=route_id).inc()
    return True
