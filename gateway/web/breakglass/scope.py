"""What a break-glass request is for: its scope (a route's tier, a tier, a route set) and the rule that applies.

Owns: Target, resolve_target, combine_rules, route_tiers, offer_for.
Must not import: the gateway.gate.admission of this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web

from breakglass import Scope, TierMode, TierRule
from gateway.config.breakglass import tier_rule
from gateway.keys import CONFIG, LIVE
from gateway.web.views.deny import BreakglassOffer
from gateway.web.breakglass.context import BreakglassWeb
from gateway.web.breakglass.http import RequestInvalid
from gateway.web.problem import FieldError


def combine_rules(rules: list[TierRule]) -> TierRule:
    """The strictest combination: never beats approval beats allowed; the shortest maximum."""
    if any(r.mode is TierMode.NEVER for r in rules):
        return TierRule(TierMode.NEVER)
    mode = TierMode.APPROVAL if any(r.mode is TierMode.APPROVAL for r in rules) else TierMode.ALLOWED
    maximum = min(r.max_duration for r in rules)
    defaults = [r.default_duration for r in rules if r.default_duration is not None]
    default = min([*defaults, maximum]) if defaults else None
    return TierRule(mode, max_duration=maximum, default_duration=default)


@dataclass(frozen=True, slots=True)
class Target:
    """A request's scope, the tier rule that applies to it, and the route it was asked from (if any)."""

    scope: Scope
    rule: TierRule
    route_id: str | None


def route_tiers(request: web.Request, context: BreakglassWeb) -> Mapping[str, str]:
    """Route id -> tier, from the context or else the live configuration."""
    if context.route_tiers is not None:
        return context.route_tiers()
    live = request.get(LIVE)
    if live is None and CONFIG in request.config_dict:
        live = request.config_dict[CONFIG].current
    if live is None:
        return {}
    return {route.id: route.tier for route in live.routes.routes}


def resolve_target(request: web.Request, context: BreakglassWeb, *, route_id: str | None, tier: str | None,
                   route_set: str | None) -> Target:
    """Work out the scope and tier rule of a request from a route id, a tier or a route set name.

    Raises:
        RequestInvalid: every problem with the three fields (unknown names, no policy loaded…).
    """
    policies = context.policies()
    if policies is None:
        raise RequestInvalid([FieldError("", "no policy is loaded yet", "try again in a minute")],
                             status=503, code="policy-unavailable")
    tiers = route_tiers(request, context)
    problems: list[FieldError] = []
    if not (route_id or tier or route_set):
        problems.append(FieldError("route", "no route, tier or route set was named",
                                   "send `route` (the service you were denied) or `scope`"))
    if route_id and route_id not in tiers:
        problems.append(FieldError("route", f"`{route_id}` is not a configured route",
                                   "send the route id shown on the deny page"))
    if tier and policies.tier(tier) is None:
        problems.append(FieldError("scope.tier", f"`{tier}` is not a tier of the policy",
                                   "one of " + ", ".join(f"`{t}`" for t in policies.tier_names)))
    routes: frozenset[str] | None = None
    if route_set:
        routes = context.settings.route_set(route_set)
        if routes is None:
            known = ", ".join(f"`{n}`" for n in sorted(context.settings.route_sets)) or "none is configured"
            problems.append(FieldError("scope.route_set", f"`{route_set}` is not a configured route set",
                                       f"one of {known}"))
        elif route_id and route_id not in routes:
            problems.append(FieldError("route", f"route `{route_id}` is not in route set `{route_set}`",
                                       "name a route of the set, or leave `route` out"))
        if tier:
            problems.append(FieldError("scope", "both a tier and a route set were named", "name one of them"))
    if route_id and tier and route_id in tiers and tiers[route_id] != tier:
        problems.append(FieldError("scope.tier", f"route `{route_id}` is protected by tier `{tiers[route_id]}`, not `{tier}`",
                                   f"ask for tier `{tiers[route_id]}` or leave `scope` out"))
    if problems:
        raise RequestInvalid(problems)
    if routes is not None and route_set is not None:
        unknown = sorted(r for r in routes if r not in tiers or policies.tier(tiers[r]) is None)
        if unknown:
            raise RequestInvalid([FieldError("scope.route_set", f"route set `{route_set}` names routes that are not "
                                             f"configured: {', '.join(unknown)}", "ask an administrator to fix the set")],
                                 status=503, code="route-set-broken")
        infos = [policies.tier(tiers[r]) for r in routes]
        ranked = sorted((i for i in infos if i is not None), key=lambda i: (i.rank, i.name))
        rule = combine_rules([tier_rule(i, context.settings) for i in ranked])
        return Target(Scope.for_route_set(route_set, routes, tier=ranked[-1].name), rule, route_id)
    name = tier or tiers[str(route_id)]
    info = policies.tier(name)
    if info is None:
        raise RequestInvalid([FieldError("route", f"route `{route_id}` is protected by tier `{name}`, which the "
                                         "policy does not define", "ask an administrator to fix the route")],
                             status=503, code="tier-unknown")
    return Target(Scope.for_tier(name), tier_rule(info, context.settings), route_id)


def offer_for(context: BreakglassWeb, target: Target | None) -> BreakglassOffer:
    """The durations and rules the request form offers for ``target`` (the settings' limits without one)."""
    maximum = timedelta(seconds=context.settings.max_duration_s)
    default = timedelta(seconds=context.settings.default_duration_s)
    approval = False
    if target is not None:
        maximum = min(maximum, target.rule.max_duration)
        default = min(target.rule.default_duration or maximum, maximum)
        approval = target.rule.mode is TierMode.APPROVAL
    return BreakglassOffer.up_to(maximum, default=min(default, maximum),
                                 min_reason_length=context.settings.min_reason_length, needs_approval=approval)
