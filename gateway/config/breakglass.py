"""Configuration of break-glass: the ``breakglass:`` section of the settings file.

Owns: BreakglassSettings, WebhookSettings, tier_rule (policy tier → breakglass.TierRule),
route_set_problems (cross-check of named route sets against the configured routes).
Must not import: aiohttp, gateway.app (settings sections are leaves).

Example::

    break_glass:
      min_reason_length: 20
      self_grant_limit: 3            # self-granted grants per user per window; beyond: approval
      self_grant_window_s: 604800    # 7 days
      approver_groups: [sre-leads]
      reviewer_groups: [security-review]
      route_sets:
        billing-admin: [billing, billing-api]
      csrf_secret: {env: GATEHOUSE_CSRF_SECRET}   # needed when more than one replica serves pages
      webhook:
        url: {env: GATEHOUSE_BREAKGLASS_WEBHOOK}
        public_url: https://gatehouse.corp.example
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta

from pydantic import Field, field_validator, model_validator

from breakglass import HARD_MAX_DURATION, BreakglassConfig, TierMode, TierRule
from gateway.errors import Problem
from gateway.config.secret import SecretValue
from gateway.config.section import Section
from policy_engine.evaluate import TierInfo

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_DAY = 86400


class WebhookSettings(Section):
    """A Slack-compatible incoming webhook told about every request, grant and decision."""

    url: SecretValue
    """The incoming-webhook URL (it embeds a token, so it is a secret: ``{env: NAME}``)."""
    public_url: str = ""
    """Gatehouse's base URL for links in messages (``https://gatehouse.corp.example``); none when empty."""
    timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    queue_size: int = Field(default=1000, ge=1)
    """Messages waiting to be sent; when full, new ones are dropped (logged and counted)."""

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"`{value}` is not an http(s) URL; write e.g. `https://gatehouse.corp.example`")
        return value.rstrip("/")


class BreakglassSettings(Section):
    """Who may ask, approve and review; the abuse limits; CSRF; notifications.

    Tier rules (allowed/approval/never and each tier's maximum) come from the policy, not from here.
    """

    min_reason_length: int = Field(default=20, ge=0, le=1000)
    max_reason_length: int = Field(default=2000, ge=1, le=20000)
    default_duration_s: int = Field(default=3600, ge=60)
    """Used when a request names no duration; capped at the tier's maximum."""
    max_duration_s: int = Field(default=_DAY, ge=60, le=_DAY)
    """Ceiling across all tiers; the policy's maximum per tier applies below it; never above 24 h."""
    self_grant_limit: int = Field(default=3, ge=0)
    self_grant_window_s: int = Field(default=7 * _DAY, ge=60)
    repeat_user_threshold: int = Field(default=2, ge=1)
    pending_ttl_s: int = Field(default=_DAY, ge=60)
    approver_groups: tuple[str, ...] = ()
    """Members approve and reject pending requests, and revoke grants."""
    reviewer_groups: tuple[str, ...] = ()
    """Members see the review pages, revoke grants and mark them reviewed."""
    route_sets: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Named sets of route ids a grant may be scoped to instead of a whole tier."""
    csrf_secret: SecretValue | None = None
    """Signs CSRF tokens; a random per-process key when absent (set it when replicas share users)."""
    csrf_max_age_s: int = Field(default=12 * 3600, ge=60)
    allowed_origins: tuple[str, ...] = ()
    """Extra origins (``https://admin.corp.example``) whose forms may post here; the page's own host always may."""
    maintenance_interval_s: float = Field(default=30.0, gt=0)
    """How often expiries are written, other replicas' entries read, and the active-grants gauge set."""
    webhook: WebhookSettings | None = None

    @field_validator("route_sets")
    @classmethod
    def _route_sets(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        problems = []
        for name, routes in value.items():
            if not _NAME.fullmatch(name):
                problems.append(f"route set `{name}` is not a name; use lowercase letters, digits, `-` and `_`")
            if not routes:
                problems.append(f"route set `{name}` lists no routes; list at least one route id")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"`{origin}` is not an origin; write scheme and host only, e.g. `https://admin.corp.example`")
        return tuple(o.lower() for o in value)

    @model_validator(mode="after")
    def _consistent(self) -> BreakglassSettings:
        if self.default_duration_s > self.max_duration_s:
            raise ValueError(
                f"default_duration_s `{self.default_duration_s}` is above max_duration_s `{self.max_duration_s}`; lower it"
            )
        if self.min_reason_length > self.max_reason_length:
            raise ValueError(
                f"min_reason_length `{self.min_reason_length}` is above max_reason_length `{self.max_reason_length}`"
            )
        return self

    @property
    def staff_groups(self) -> frozenset[str]:
        """Groups whose members may open the review pages (approvers and reviewers)."""
        return frozenset(self.approver_groups) | frozenset(self.reviewer_groups)

    def to_config(self) -> BreakglassConfig:
        """The ``breakglass`` package's config for these settings."""
        return BreakglassConfig(
            min_reason_length=self.min_reason_length,
            max_duration=timedelta(seconds=self.max_duration_s),
            self_grant_limit=self.self_grant_limit,
            self_grant_window=timedelta(seconds=self.self_grant_window_s),
            repeat_user_threshold=self.repeat_user_threshold,
            pending_ttl=timedelta(seconds=self.pending_ttl_s),
            approver_groups=frozenset(self.approver_groups),
            reviewer_groups=frozenset(self.reviewer_groups),
        )

    def route_set(self, name: str) -> frozenset[str] | None:
        """The route ids of the set ``name``, or None when no such set is configured."""
        routes = self.route_sets.get(name)
        return frozenset(routes) if routes is not None else None


def tier_rule(info: TierInfo, settings: BreakglassSettings) -> TierRule:
    """The break-glass rule of a compiled policy tier, as the ``breakglass`` package wants it.

    The maximum is the policy's (whole seconds, at most 24 h); the default is the configured
    ``default_duration_s`` capped at that maximum.
    """
    spec = info.break_glass
    mode = TierMode(spec.mode.value)
    if mode is TierMode.NEVER or spec.max_duration is None:
        return TierRule(TierMode.NEVER) if mode is TierMode.NEVER else TierRule(mode)
    seconds = max(1, min(int(spec.max_duration.total_seconds()), int(HARD_MAX_DURATION.total_seconds())))
    maximum = timedelta(seconds=seconds)
    default = min(timedelta(seconds=settings.default_duration_s), maximum)
    return TierRule(mode, max_duration=maximum, default_duration=default)


def route_set_problems(settings: BreakglassSettings, route_ids: Iterable[str]) -> list[Problem]:
    """Route sets naming routes that are not configured (a grant for them would cover nothing)."""
    known = set(route_ids)
    return [
        Problem(f"breakglass.route_sets.{name}", f"route `{route}` is not a configured route; known routes: "
                + ", ".join(f"`{r}`" for r in sorted(known)))
        for name, routes in settings.route_sets.items()
        for route in routes
        if route not in known
    ]
