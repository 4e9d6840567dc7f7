"""Pure break-glass rules: is this request acceptable, who may act on a grant, is it active.

Owns: check_reason, effective_duration, decide_outcome, check_approver, check_reviewer,
check_revoker, is_active, status_at, counts_in_window, Outcome.
Must not import: gateway, policy_engine, aiohttp; no clock (``now`` comes in), no I/O.

Each check raises ``GrantRejected`` or ``NotAuthorised`` with a message for the person asking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from breakglass.errors import GrantRejected, NotAuthorised
from breakglass.model import (
    HARD_MAX_DURATION,
    BreakglassConfig,
    Grant,
    GrantStatus,
    TierMode,
    TierRule,
)

_SECOND = timedelta(seconds=1)


def _fmt(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def check_reason(reason: str, *, config: BreakglassConfig) -> str:
    """Return the stripped reason.

    Raises:
        GrantRejected: ``reason-too-short`` when it has fewer than ``min_reason_length`` characters.
    """
    stripped = reason.strip()
    if len(stripped) < config.min_reason_length:
        raise GrantRejected(
            "reason-too-short",
            f"the reason has {len(stripped)} characters; write at least "
            f"{config.min_reason_length} saying why you need access",
        )
    return stripped


def effective_duration(
    requested: timedelta | None, *, rule: TierRule, config: BreakglassConfig
) -> timedelta:
    """Return the duration to grant: the tier default when none is asked, whole seconds only.

    The ceiling is the smallest of the tier's maximum, the configured maximum and 24 hours.

    Raises:
        GrantRejected: ``duration-invalid`` (zero or negative) or ``duration-too-long``.
    """
    ceiling = min(rule.max_duration, config.max_duration, HARD_MAX_DURATION)
    if requested is None:
        requested = rule.default_duration or rule.max_duration
        return min(requested, ceiling)
    if requested < _SECOND:
        raise GrantRejected(
            "duration-invalid",
            f"the duration `{_fmt(requested)}` is not positive; ask for up to `{_fmt(ceiling)}`",
        )
    requested = requested - requested % _SECOND
    if requested > ceiling:
        raise GrantRejected(
            "duration-too-long",
            f"the duration `{_fmt(requested)}` is longer than allowed; ask for at most `{_fmt(ceiling)}`",
        )
    return requested


@dataclass(frozen=True, slots=True)
class Outcome:
    """What becomes of a valid request: granted at once, pending approval, or refused.

    ``because`` holds closed-set codes: ``tier-approval``, ``self-grant-limit``, ``tier-never``.
    """

    status: GrantStatus
    because: frozenset[str]
    flagged: bool


def counts_in_window(grants: Iterable[Grant], *, now: datetime, window: timedelta) -> tuple[int, int]:
    """Return (self-granted grants, requests) of one user inside the rolling window ending at ``now``.

    A grant counts when it started (or was requested) after ``now - window``: one started exactly
    a window ago has just dropped out.
    """
    since = now - window
    self_granted = 0
    requested = 0
    for grant in grants:
        if since < grant.requested_at <= now:
            requested += 1
        if grant.self_granted and grant.starts_at is not None and since < grant.starts_at <= now:
            self_granted += 1
    return self_granted, requested


def decide_outcome(
    rule: TierRule, *, self_granted_in_window: int, requests_in_window: int, config: BreakglassConfig
) -> Outcome:
    """Decide a valid request's outcome from the tier rule and the user's recent history."""
    flagged = requests_in_window >= config.repeat_user_threshold
    if rule.mode is TierMode.NEVER:
        return Outcome(GrantStatus.REJECTED, frozenset({"tier-never"}), flagged)
    if rule.mode is TierMode.APPROVAL:
        return Outcome(GrantStatus.PENDING, frozenset({"tier-approval"}), flagged)
    if self_granted_in_window >= config.self_grant_limit:
        return Outcome(GrantStatus.PENDING, frozenset({"self-grant-limit"}), True)
    return Outcome(GrantStatus.ACTIVE, frozenset(), flagged)


def check_approver(grant: Grant, *, approver: str, approver_groups: frozenset[str], config: BreakglassConfig) -> None:
    """Check that ``approver`` may approve or reject ``grant``.

    Raises:
        NotAuthorised: ``approver-is-requester`` or ``not-an-approver``.
    """
    if approver == grant.user:
        raise NotAuthorised(
            "approver-is-requester",
            f"`{approver}` asked for grant `{grant.id}` and cannot decide on it; ask another approver",
        )
    if not approver_groups & config.approver_groups:
        raise NotAuthorised(
            "not-an-approver",
            f"`{approver}` is not in an approver group; ask a member of "
            f"{_groups(config.approver_groups)}",
        )


def check_revoker(grant: Grant, *, actor: str, actor_groups: frozenset[str], config: BreakglassConfig) -> None:
    """Check that ``actor`` may revoke ``grant`` (approvers and reviewers may revoke any grant).

    Raises:
        NotAuthorised: ``not-a-revoker``.
    """
    if not actor_groups & (config.approver_groups | config.reviewer_groups):
        raise NotAuthorised(
            "not-a-revoker",
            f"`{actor}` may not revoke grant `{grant.id}`; ask a member of "
            f"{_groups(config.approver_groups | config.reviewer_groups)}, or end your own grant",
        )


def check_reviewer(grant: Grant, *, reviewer: str, reviewer_groups: frozenset[str], config: BreakglassConfig) -> None:
    """Check that ``reviewer`` may mark ``grant`` reviewed (never their own).

    Raises:
        NotAuthorised: ``reviewer-is-requester`` or ``not-a-reviewer``.
    """
    if reviewer == grant.user:
        raise NotAuthorised(
            "reviewer-is-requester",
            f"`{reviewer}` cannot review their own grant `{grant.id}`; ask another reviewer",
        )
    if not reviewer_groups & config.reviewer_groups:
        raise NotAuthorised(
            "not-a-reviewer",
            f"`{reviewer}` is not in a reviewer group; ask a member of {_groups(config.reviewer_groups)}",
        )


def _groups(groups: frozenset[str]) -> str:
    if not groups:
        return "a group (none is configured; set the break-glass approver/reviewer groups)"
    return ", ".join(f"`{g}`" for g in sorted(groups))


def is_active(grant: Grant, *, now: datetime) -> bool:
    """Whether ``grant`` lets its user through at ``now``: ``starts_at <= now < expires_at``."""
    return (
        grant.status is GrantStatus.ACTIVE
        and grant.starts_at is not None
        and grant.expires_at is not None
        and grant.starts_at <= now < grant.expires_at
    )


def status_at(grant: Grant, *, now: datetime, pending_ttl: timedelta) -> GrantStatus:
    """The grant's status at ``now``, counting an elapsed expiry not yet written to the log."""
    if grant.status is GrantStatus.ACTIVE and grant.expires_at is not None and now >= grant.expires_at:
        return GrantStatus.EXPIRED
    if grant.status is GrantStatus.PENDING and now >= grant.requested_at + pending_ttl:
        return GrantStatus.EXPIRED
    return grant.status
