"""The in-memory index of grants, rebuilt by replaying audit events.

Owns: GrantIndex.
Must not import: gateway, policy_engine, aiohttp; no clock, no I/O.

``GrantIndex.apply(event)`` is the only mutator. Replaying the same events always gives the same
grants; an event that makes no sense for the grant's state (approving a grant that is not pending,
say) raises ``AuditIntegrityError``, because the service only writes events it has checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

from breakglass.errors import AuditIntegrityError
from breakglass.model import (
    TERMINAL_STATUSES,
    AuditEvent,
    EventKind,
    Grant,
    GrantStatus,
)
from breakglass.rules import is_active

_FROM: dict[EventKind, frozenset[GrantStatus]] = {
    EventKind.GRANTED: frozenset({GrantStatus.PENDING}),
    EventKind.PENDING: frozenset({GrantStatus.PENDING}),
    EventKind.APPROVED: frozenset({GrantStatus.PENDING}),
    EventKind.REJECTED: frozenset({GrantStatus.PENDING}),
    EventKind.FIRST_USE: frozenset({GrantStatus.ACTIVE}),
    EventKind.EXPIRED: frozenset({GrantStatus.ACTIVE, GrantStatus.PENDING}),
    EventKind.ENDED: frozenset({GrantStatus.ACTIVE, GrantStatus.PENDING}),
    EventKind.REVOKED: frozenset({GrantStatus.ACTIVE}),
    EventKind.REVIEWED: frozenset(GrantStatus),
}


class GrantIndex:
    """Every grant by id, plus the non-terminal ones by (user, device) for the per-request lookup."""

    def __init__(self) -> None:
        self._grants: dict[str, Grant] = {}
        self._live: dict[tuple[str, str], dict[str, Grant]] = {}
        self._by_user: dict[str, list[str]] = {}
        self._events: dict[str, list[AuditEvent]] = {}

    def apply(self, event: AuditEvent) -> Grant:
        """Apply one audit event and return the grant as it now stands.

        Raises:
            AuditIntegrityError: the event does not fit the grant's current state.
        """
        current = self._grants.get(event.grant_id)
        if event.kind is EventKind.REQUESTED:
            if current is not None:
                raise _broken(event, "the grant was already requested")
            grant = Grant(
                id=event.grant_id,
                user=event.user,
                user_email=event.user_email,
                device_serial=event.device_serial,
                scope=event.scope,
                reason=event.reason,
                duration=_duration(event),
                requested_at=event.at,
                status=GrantStatus.PENDING,
                failing_checks=event.failing_checks,
                flagged="repeat-user" in event.flags,
            )
            self._by_user.setdefault(grant.user, []).append(grant.id)
            self._events[grant.id] = []
        else:
            if current is None:
                raise _broken(event, "the grant was never requested")
            if current.status not in _FROM[event.kind]:
                raise _broken(event, f"the grant is {current.status.value}")
            grant = self._transition(current, event)
        self._grants[grant.id] = grant
        self._events[grant.id].append(event)
        key = (grant.user, grant.device_serial)
        if grant.status in TERMINAL_STATUSES:
            live = self._live.get(key)
            if live is not None:
                live.pop(grant.id, None)
                if not live:
                    del self._live[key]
        else:
            self._live.setdefault(key, {})[grant.id] = grant
        return grant

    @staticmethod
    def _transition(grant: Grant, event: AuditEvent) -> Grant:
        kind = event.kind
        if kind is EventKind.GRANTED or kind is EventKind.APPROVED:
            if event.expires_at is None:
                raise _broken(event, "it has no expiry")
            return replace(
                grant,
                status=GrantStatus.ACTIVE,
                starts_at=event.at,
                expires_at=event.expires_at,
                duration=_duration(event, grant.duration),
                self_granted=kind is EventKind.GRANTED,
                approver=event.actor if kind is EventKind.APPROVED else None,
            )
        if kind is EventKind.PENDING:
            return replace(grant, pending_because=event.flags, flagged=grant.flagged or "self-grant-limit" in event.flags)
        if kind is EventKind.FIRST_USE:
            if grant.first_used_at is not None:
                raise _broken(event, "its first use was already recorded")
            return replace(grant, first_used_at=event.at, first_route_id=event.route_id)
        if kind is EventKind.REVIEWED:
            return replace(
                grant, reviewed=True, reviewed_by=event.actor, reviewed_at=event.at, comment=event.reason
            )
        status = {
            EventKind.REJECTED: GrantStatus.REJECTED,
            EventKind.EXPIRED: GrantStatus.EXPIRED,
            EventKind.ENDED: GrantStatus.ENDED,
            EventKind.REVOKED: GrantStatus.REVOKED,
        }[kind]
        return replace(
            grant,
            status=status,
            ended_at=event.at,
            ended_by=event.actor,
            end_reason=event.reason,
            approver=event.actor if kind is EventKind.REJECTED else grant.approver,
        )

    def get(self, grant_id: str) -> Grant | None:
        """The grant with this id, or ``None``."""
        return self._grants.get(grant_id)

    def __iter__(self) -> Iterator[Grant]:
        return iter(self._grants.values())

    def __len__(self) -> int:
        return len(self._grants)

    def events_for(self, grant_id: str) -> tuple[AuditEvent, ...]:
        """The events applied to this grant, oldest first."""
        return tuple(self._events.get(grant_id, ()))

    def of_user(self, user: str) -> Iterator[Grant]:
        """Every grant of ``user``, oldest request first."""
        for grant_id in self._by_user.get(user, ()):
            yield self._grants[grant_id]

    def live(self) -> Iterator[Grant]:
        """Every pending or active grant (including active ones whose expiry passed unrecorded)."""
        for grants in self._live.values():
            yield from grants.values()

    def live_for(self, user: str, device_serial: str) -> tuple[Grant, ...]:
        """The pending or active grants of one user on one device."""
        live = self._live.get((user, device_serial))
        return tuple(live.values()) if live else ()

    def active_for(
        self, user: str, device_serial: str, route_id: str, tier: str, *, now: datetime
    ) -> Grant | None:
        """The grant letting ``user`` on ``device_serial`` reach ``route_id`` at ``now``, if any.

        When several apply, the one ending last is returned. Runs on every denied request: one dict
        lookup, then a scan of that user's few live grants on that device.
        """
        live = self._live.get((user, device_serial))
        if not live:
            return None
        best: Grant | None = None
        for grant in live.values():
            if is_active(grant, now=now) and grant.scope.covers(route_id, tier):
                # INVARIANT: an active grant has an expiry (is_active checked it).
                if best is None or _expiry(grant) > _expiry(best):
                    best = grant
        return best


def _duration(event: AuditEvent, fallback: timedelta | None = None) -> timedelta:
    if event.duration is not None:
        return event.duration
    if fallback is not None:
        return fallback
    raise _broken(event, "it has no duration")


def _expiry(grant: Grant) -> datetime:
    if grant.expires_at is None:
        raise ValueError(f"grant `{grant.id}` has no expiry")
    return grant.expires_at


def _broken(event: AuditEvent, why: str) -> AuditIntegrityError:
    return AuditIntegrityError(
        f"audit event `{event.kind.value}` for grant `{event.grant_id}` cannot apply: {why}; "
        "run `gatehouse audit verify`"
    )
