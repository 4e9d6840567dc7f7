"""Values of the break-glass package: requests, grants, audit events, rules and settings.

Owns: Scope, FailingCheck, GrantRequest, Grant, GrantStatus, AuditEvent, EventKind, TierMode,
TierRule, BreakglassConfig, HARD_MAX_DURATION.
Must not import: gateway, policy_engine, aiohttp, orjson (values only; encoding lives in audit.py).

Every datetime is timezone-aware; every duration is a whole number of seconds (both are checked
here so that an audit entry always encodes and decodes to the same bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

HARD_MAX_DURATION = timedelta(hours=24)
"""No grant lasts longer than this, whatever the policy says."""

_SECOND = timedelta(seconds=1)


def _check_aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name}: `{value.isoformat()}` has no timezone; pass an aware datetime")


def _check_whole_seconds(name: str, value: timedelta | None) -> None:
    if value is not None and value % _SECOND:
        raise ValueError(f"{name}: `{value}` is not a whole number of seconds; round it first")


class TierMode(StrEnum):
    """What a tier's break-glass rule allows, as written in the policy."""

    ALLOWED = "allowed"
    APPROVAL = "approval"
    NEVER = "never"


class GrantStatus(StrEnum):
    """Where a grant is in its life; see ``rules.status_at`` for the status at a given time."""

    PENDING = "pending"
    ACTIVE = "active"
    REJECTED = "rejected"
    ENDED = "ended"
    REVOKED = "revoked"
    EXPIRED = "expired"


TERMINAL_STATUSES = frozenset(
    {GrantStatus.REJECTED, GrantStatus.ENDED, GrantStatus.REVOKED, GrantStatus.EXPIRED}
)


class EventKind(StrEnum):
    """The kinds of audit event, one per thing that can happen to a grant."""

    REQUESTED = "requested"
    GRANTED = "granted"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    FIRST_USE = "first_use"
    EXPIRED = "expired"
    ENDED = "ended"
    REVOKED = "revoked"
    REVIEWED = "reviewed"


@dataclass(frozen=True, slots=True)
class Scope:
    """What a grant covers: every route of one tier, or a named set of routes.

    ``tier`` is always set: for a route set it is the strictest tier among its routes, chosen by
    the gateway, and it decides which tier rule applies and how the review page files the grant.
    """

    tier: str
    route_set: str | None = None
    routes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.tier:
            raise ValueError("scope: the tier is empty; name the tier the grant is for")
        if self.route_set is None and self.routes:
            raise ValueError("scope: routes given without a route set name; name the set")
        if self.route_set is not None and not self.routes:
            raise ValueError(f"scope: route set `{self.route_set}` has no routes; list its routes")

    @classmethod
    def for_tier(cls, tier: str) -> Scope:
        """Every route protected by ``tier``."""
        return cls(tier=tier)

    @classmethod
    def for_route_set(cls, name: str, routes: frozenset[str], *, tier: str) -> Scope:
        """Only the routes in the set ``name``; ``tier`` is the strictest tier among them."""
        return cls(tier=tier, route_set=name, routes=frozenset(routes))

    def covers(self, route_id: str, tier: str) -> bool:
        """Whether a request to ``route_id`` (protected by ``tier``) falls under this scope."""
        if self.route_set is None:
            return tier == self.tier
        return route_id in self.routes

    def describe(self) -> str:
        """A short label for pages and logs: ``tier high`` or ``routes billing-admin``."""
        if self.route_set is None:
            return f"tier {self.tier}"
        return f"routes {self.route_set}"


@dataclass(frozen=True, slots=True)
class FailingCheck:
    """A device-health check that failed when break-glass was requested."""

    name: str
    detail: str


@dataclass(frozen=True, slots=True)
class TierRule:
    """A tier's break-glass rule, read by the gateway from the policy (``allowed(max)`` and so on).

    ``default_duration`` is used when the request names none; it defaults to ``max_duration``.
    """

    mode: TierMode
    max_duration: timedelta = timedelta(hours=1)
    default_duration: timedelta | None = None

    def __post_init__(self) -> None:
        if self.max_duration <= timedelta(0):
            raise ValueError(f"tier rule: maximum `{self.max_duration}` is not positive")
        if self.default_duration is not None and not (
            timedelta(0) < self.default_duration <= self.max_duration
        ):
            raise ValueError(
                f"tier rule: default `{self.default_duration}` is not between zero and the "
                f"maximum `{self.max_duration}`; lower the default"
            )
        _check_whole_seconds("tier rule max_duration", self.max_duration)
        _check_whole_seconds("tier rule default_duration", self.default_duration)


@dataclass(frozen=True, slots=True)
class BreakglassConfig:
    """Operator settings for break-glass; every field has a safe default.

    - ``min_reason_length``: characters the reason must have after stripping whitespace.
    - ``max_duration``: the ceiling across all tiers; capped at ``HARD_MAX_DURATION`` (24 h).
    - ``self_grant_limit`` / ``self_grant_window``: at most this many grants given at once (without
      an approver) per user per rolling window; beyond it requests wait for approval.
    - ``repeat_user_threshold``: a request is flagged when the user already made this many
      requests in the window (flagged requests are listed as repeat users in the review).
    - ``pending_ttl``: a pending request nobody decides on expires after this long.
    - ``approver_groups``: members may approve and reject pending requests, and revoke grants.
    - ``reviewer_groups``: members may revoke grants and mark them reviewed.
    """

    min_reason_length: int = 20
    max_duration: timedelta = HARD_MAX_DURATION
    self_grant_limit: int = 3
    self_grant_window: timedelta = timedelta(days=7)
    repeat_user_threshold: int = 2
    pending_ttl: timedelta = timedelta(hours=24)
    approver_groups: frozenset[str] = frozenset()
    reviewer_groups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.min_reason_length < 0:
            problems.append(f"min_reason_length `{self.min_reason_length}` is negative")
        if not timedelta(0) < self.max_duration <= HARD_MAX_DURATION:
            problems.append(
                f"max_duration `{self.max_duration}` is outside (0, 24 h]; at most `24h` is allowed"
            )
        if self.self_grant_limit < 0:
            problems.append(f"self_grant_limit `{self.self_grant_limit}` is negative")
        if self.self_grant_window <= timedelta(0):
            problems.append(f"self_grant_window `{self.self_grant_window}` is not positive")
        if self.repeat_user_threshold < 1:
            problems.append(f"repeat_user_threshold `{self.repeat_user_threshold}` is below 1")
        if self.pending_ttl <= timedelta(0):
            problems.append(f"pending_ttl `{self.pending_ttl}` is not positive")
        if problems:
            raise ValueError("break-glass config: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """What a verified user on an identified device asks for.

    ``duration`` is ``None`` to take the tier's default. ``failing_checks`` are the device's failed
    checks at the time of the request, as the deny page showed them.
    """

    user: str
    user_email: str
    device_serial: str
    scope: Scope
    reason: str
    duration: timedelta | None = None
    failing_checks: tuple[FailingCheck, ...] = ()


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One thing that happened to a grant, exactly as written to the audit log.

    Every event names the grant, its user, device and scope, the actor and the time. The other
    fields are filled where relevant and empty otherwise:

    - ``reason``: the user's justification (requested), why (rejected, revoked, ended, expired,
      pending), or the reviewer's comment (reviewed).
    - ``duration``: asked for (requested) or given (granted, approved, pending).
    - ``expires_at``: when access ends (granted, approved).
    - ``failing_checks`` and ``user_email``: the device state and contact (requested).
    - ``route_id``: the route first used (first_use).
    - ``flags``: closed-set markers: ``repeat-user`` (requested), ``self-grant-limit`` and
      ``tier-approval`` (pending), ``tier-never`` (rejected).
    """

    kind: EventKind
    grant_id: str
    at: datetime
    actor: str
    user: str
    device_serial: str
    scope: Scope
    reason: str = ""
    duration: timedelta | None = None
    expires_at: datetime | None = None
    failing_checks: tuple[FailingCheck, ...] = ()
    user_email: str = ""
    route_id: str | None = None
    flags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _check_aware("event at", self.at)
        _check_aware("event expires_at", self.expires_at)
        _check_whole_seconds("event duration", self.duration)
        if not self.grant_id:
            raise ValueError("event: the grant id is empty")


@dataclass(frozen=True, slots=True)
class Grant:
    """A break-glass grant as the audit log says it stands; built only by ``grants.GrantIndex``.

    ``starts_at``/``expires_at`` are ``None`` until the grant is granted or approved.
    ``self_granted`` is true when no approver was needed (these count towards the limit).
    ``flagged`` marks a repeat user; ``ended_*`` describe how a grant stopped early or was refused.
    """

    id: str
    user: str
    user_email: str
    device_serial: str
    scope: Scope
    reason: str
    duration: timedelta
    requested_at: datetime
    status: GrantStatus
    failing_checks: tuple[FailingCheck, ...] = ()
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    self_granted: bool = False
    flagged: bool = False
    pending_because: frozenset[str] = frozenset()
    approver: str | None = None
    first_used_at: datetime | None = None
    first_route_id: str | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None
    end_reason: str = ""
    reviewed: bool = False
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    comment: str = ""
