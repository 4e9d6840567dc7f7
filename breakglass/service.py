"""BreakglassService: the one entry point the gateway calls for break-glass.

Owns: BreakglassService, GrantFilter, SYSTEM_ACTOR.
Must not import: gateway, policy_engine, aiohttp; no clock (every method takes ``now``).

Why async: the gateway runs on asyncio and the store backends are asynchronous (SQLite through a
thread, PostgreSQL through asyncpg), so ``AuditSink`` is async and every method that writes to the
log is a coroutine. Reads (``active_for``, ``get``, ``list_grants``, ``usage``) are plain methods
over the in-memory index: they do no I/O and run on every denied request.

How a change happens (``_commit``):

1. Under the service's ``asyncio.Lock``, check the rules against the in-memory index and build the
   audit events.
2. Seal them after the head this service knows and ``append`` them: the audit record first.
3. Only when ``append`` returned, apply them to the index: the grant exists from here on.

If the sink reports ``AuditConflict`` (another process or service instance wrote first), read the
missed entries, apply them, and redo step 1 with the fresher state: the self-grant limit is then
checked against everything in the log, not just this process's view. If the sink fails any other
way, re-read the log once to see whether the entries landed anyway; if they did not (or the log
cannot be read), raise ``AuditWriteError`` and change nothing: no grant exists.

One service instance belongs to one event loop. Several instances (other threads, processes or
replicas) may share one sink; each sees the others' changes after ``refresh()`` or its next write,
so the gateway should call ``refresh()`` periodically when it runs more than one instance.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from breakglass.audit import (
    GENESIS_HEAD,
    AuditEntry,
    AuditSink,
    ChainHead,
    entry_hash,
    seal,
    verify,
)
from breakglass.errors import (
    AuditConflict,
    AuditIntegrityError,
    AuditWriteError,
    GrantNotFound,
    GrantRejected,
    NotAuthorised,
)
from breakglass.grants import GrantIndex
from breakglass.model import (
    AuditEvent,
    BreakglassConfig,
    EventKind,
    Grant,
    GrantRequest,
    GrantStatus,
    TierRule,
)
from breakglass.rules import (
    check_approver,
    check_reason,
    check_reviewer,
    check_revoker,
    counts_in_window,
    decide_outcome,
    effective_duration,
    is_active,
    status_at,
)

SYSTEM_ACTOR = "gatehouse"
"""The actor of events nobody in particular caused: granted at once, pending, expired."""

_EMPTY_USAGE: Mapping[str, int] = MappingProxyType({})


def new_grant_id() -> str:
    """A fresh random grant id such as ``g-3f9a1c2b7d4e``."""
    return "g-" + secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class GrantFilter:
    """What the review page asks for; ``None``/``False`` fields do not filter.

    ``status`` is the status at ``now`` (an active grant past its expiry counts as expired).
    ``since``/``until`` bound the request time: ``since <= requested_at < until``.
    ``flagged_only`` keeps grants of repeat users.
    """

    user: str | None = None
    status: GrantStatus | None = None
    tier: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    unreviewed_only: bool = False
    flagged_only: bool = False


class BreakglassService:
    """Requests, decisions and lookups of break-glass grants, each recorded in the audit log first."""

    def __init__(
        self,
        sink: AuditSink,
        *,
        config: BreakglassConfig,
        new_id: Callable[[], str] = new_grant_id,
        max_attempts: int = 8,
    ) -> None:
        """An empty service over ``sink``; use ``open`` to load an existing log."""
        self._sink = sink
        self._config = config
        self._new_id = new_id
        self._max_attempts = max_attempts
        self._index = GrantIndex()
        self._head = GENESIS_HEAD
        self._lock = asyncio.Lock()
        self._usage: dict[str, dict[str, int]] = {}

    @classmethod
    async def open(
        cls,
        sink: AuditSink,
        *,
        config: BreakglassConfig,
        new_id: Callable[[], str] = new_grant_id,
    ) -> BreakglassService:
        """Load and verify the whole log from ``sink`` and replay it into a new service.

        Raises:
            AuditIntegrityError: the chain is broken (every problem is listed) or unreadable.
            AuditWriteError: the log could not be read.
        """
        service = cls(sink, config=config, new_id=new_id)
        try:
            head = await sink.head()
            entries = await sink.entries()
        except Exception as exc:
            raise AuditWriteError(f"the audit log could not be read: {exc}; check the store") from exc
        report = verify(entries, expected_head=head)
        if not report.ok:
            raise AuditIntegrityError(
                "the audit log failed verification: "
                + "; ".join(str(p) for p in report.problems)
            )
        for entry in entries:
            service._apply(entry)
        return service

    @property
    def config(self) -> BreakglassConfig:
        """The settings this service checks requests against."""
        return self._config

    @property
    def head(self) -> ChainHead:
        """The last audit entry this service has applied."""
        return self._head

    # --- reads (no I/O) -------------------------------------------------------------------------

    def active_for(
        self, user: str, device_serial: str, route_id: str, tier: str, *, now: datetime
    ) -> Grant | None:
        """The grant that lets ``user`` on ``device_serial`` reach ``route_id`` (of ``tier``) at ``now``."""
        return self._index.active_for(user, device_serial, route_id, tier, now=now)

    def get(self, grant_id: str) -> Grant:
        """The grant with this id.

        Raises:
            GrantNotFound: no such grant.
        """
        grant = self._index.get(grant_id)
        if grant is None:
            raise GrantNotFound(grant_id)
        return grant

    def events_for(self, grant_id: str) -> tuple[AuditEvent, ...]:
        """The grant's audit events, oldest first, for the reviewer's detail view.

        Raises:
            GrantNotFound: no such grant.
        """
        self.get(grant_id)
        return self._index.events_for(grant_id)

    def status_at(self, grant: Grant, *, now: datetime) -> GrantStatus:
        """The grant's status at ``now``, counting expiries not yet written to the log."""
        return status_at(grant, now=now, pending_ttl=self._config.pending_ttl)

    def list_grants(self, grant_filter: GrantFilter = GrantFilter(), *, now: datetime) -> tuple[Grant, ...]:
        """Grants matching ``grant_filter``, newest request first."""
        f = grant_filter
        grants = self._index.of_user(f.user) if f.user is not None else iter(self._index)
        found = [
            g
            for g in grants
            if (f.status is None or self.status_at(g, now=now) is f.status)
            and (f.tier is None or g.scope.tier == f.tier)
            and (f.since is None or g.requested_at >= f.since)
            and (f.until is None or g.requested_at < f.until)
            and not (f.unreviewed_only and g.reviewed)
            and not (f.flagged_only and not g.flagged)
        ]
        found.sort(key=lambda g: (g.requested_at, g.id), reverse=True)
        return tuple(found)

    def usage(self, grant_id: str) -> Mapping[str, int]:
        """Requests served under the grant, per route id (counted by this process since it started)."""
        counts = self._usage.get(grant_id)
        return MappingProxyType(dict(counts)) if counts else _EMPTY_USAGE

    # --- changes (audit first) ------------------------------------------------------------------

    async def request(self, request: GrantRequest, *, rule: TierRule, now: datetime) -> Grant:
        """Ask for break-glass; returns the grant, active at once or pending approval.

        ``rule`` is the break-glass rule of ``request.scope.tier`` as the policy states it.

        Raises:
            GrantRejected: the reason or duration is not acceptable, the user already holds a grant
                for this scope (nothing is written), or the tier never allows break-glass (the
                request and its rejection are written; ``.grant`` is the rejected grant).
            AuditWriteError: the audit log could not be written; no grant exists.
        """
        if not request.user or not request.device_serial:
            raise GrantRejected(
                "identity-missing",
                "break-glass needs a verified user on an identified device; sign in on an enrolled device",
            )
        reason = check_reason(request.reason, config=self._config)
        duration = effective_duration(request.duration, rule=rule, config=self._config)
        grant_id = self._new_id()

        def build() -> list[AuditEvent]:
            nonlocal grant_id
            while self._index.get(grant_id) is not None:  # another writer took this id
                grant_id = self._new_id()
            for live in self._index.live_for(request.user, request.device_serial):
                current = self.status_at(live, now=now)
                if live.scope == request.scope and current in (GrantStatus.ACTIVE, GrantStatus.PENDING):
                    raise GrantRejected(
                        "already-" + current.value,
                        f"grant `{live.id}` for {live.scope.describe()} is already {current.value}; "
                        "use it, or end it before asking again",
                    )
            self_granted, requested = counts_in_window(
                self._index.of_user(request.user), now=now, window=self._config.self_grant_window
            )
            outcome = decide_outcome(
                rule, self_granted_in_window=self_granted, requests_in_window=requested, config=self._config
            )

            def event(kind: EventKind, actor: str, **fields: object) -> AuditEvent:
                return AuditEvent(
                    kind=kind, grant_id=grant_id, at=now, actor=actor, user=request.user,
                    device_serial=request.device_serial, scope=request.scope,
                    **fields,  # type: ignore[arg-type]
                )

            events = [
                event(
                    EventKind.REQUESTED, request.user, reason=reason, duration=duration,
                    failing_checks=request.failing_checks, user_email=request.user_email,
                    flags=frozenset({"repeat-user"}) if outcome.flagged else frozenset(),
                )
            ]
            if outcome.status is GrantStatus.ACTIVE:
                events.append(event(
                    EventKind.GRANTED, SYSTEM_ACTOR, duration=duration, expires_at=now + duration
                ))
            elif outcome.status is GrantStatus.PENDING:
                events.append(event(
                    EventKind.PENDING, SYSTEM_ACTOR, duration=duration,
                    reason=_pending_reason(outcome.because), flags=outcome.because,
                ))
            else:
                events.append(event(
                    EventKind.REJECTED, SYSTEM_ACTOR, flags=outcome.because,
                    reason=f"the policy never allows break-glass for tier `{request.scope.tier}`",
                ))
            return events

        await self._commit(build)
        grant = self.get(grant_id)
        if grant.status is GrantStatus.REJECTED:
            raise GrantRejected(
                "tier-never",
                f"break-glass is never allowed for tier `{request.scope.tier}`; ask the service "
                "owner for access, or fix the device and try again",
                grant=grant,
            )
        return grant

    async def approve(
        self, grant_id: str, *, approver: str, approver_groups: frozenset[str], now: datetime
    ) -> Grant:
        """Approve a pending request; access starts at ``now`` for the requested duration.

        Raises:
            GrantNotFound: no pending request with this id.
            NotAuthorised: the approver asked for it, or is in no approver group.
            AuditWriteError: the audit log could not be written; the request stays pending.
        """

        def build() -> list[AuditEvent]:
            grant = self._pending(grant_id, now=now)
            check_approver(grant, approver=approver, approver_groups=approver_groups, config=self._config)
            return [_event(grant, EventKind.APPROVED, approver, now,
                           duration=grant.duration, expires_at=now + grant.duration)]

        await self._commit(build)
        return self.get(grant_id)

    async def reject(
        self, grant_id: str, *, approver: str, approver_groups: frozenset[str], reason: str, now: datetime
    ) -> Grant:
        """Reject a pending request.

        Raises:
            GrantNotFound: no pending request with this id.
            NotAuthorised: the approver asked for it, or is in no approver group.
            AuditWriteError: the audit log could not be written; the request stays pending.
        """

        def build() -> list[AuditEvent]:
            grant = self._pending(grant_id, now=now)
            check_approver(grant, approver=approver, approver_groups=approver_groups, config=self._config)
            return [_event(grant, EventKind.REJECTED, approver, now, reason=reason.strip())]

        await self._commit(build)
        return self.get(grant_id)

    async def revoke(
        self, grant_id: str, *, actor: str, actor_groups: frozenset[str], reason: str, now: datetime
    ) -> Grant:
        """Revoke an active grant at once (approvers and reviewers may revoke any grant).

        Raises:
            GrantNotFound: no active grant with this id.
            NotAuthorised: the actor is in neither the approver nor the reviewer groups.
            AuditWriteError: the audit log could not be written; the grant stays active.
        """

        def build() -> list[AuditEvent]:
            grant = self._active(grant_id, now=now)
            check_revoker(grant, actor=actor, actor_groups=actor_groups, config=self._config)
            return [_event(grant, EventKind.REVOKED, actor, now, reason=reason.strip())]

        await self._commit(build)
        return self.get(grant_id)

    async def end(self, grant_id: str, *, user: str, now: datetime, reason: str = "") -> Grant:
        """The grant's own user ends it (or withdraws a pending request).

        Raises:
            GrantNotFound: no active or pending grant with this id.
            NotAuthorised: ``user`` is not the grant's user.
            AuditWriteError: the audit log could not be written; the grant stays as it was.
        """

        def build() -> list[AuditEvent]:
            grant = self.get(grant_id)
            if grant.user != user:
                raise NotAuthorised(
                    "not-grant-owner",
                    f"`{user}` cannot end grant `{grant_id}` of `{grant.user}`; ask an approver to revoke it",
                )
            if self.status_at(grant, now=now) not in (GrantStatus.ACTIVE, GrantStatus.PENDING):
                raise _not_live(grant_id, "active or pending")
            return [_event(grant, EventKind.ENDED, user, now, reason=reason.strip())]

        await self._commit(build)
        return self.get(grant_id)

    async def mark_reviewed(
        self, grant_id: str, *, reviewer: str, reviewer_groups: frozenset[str], comment: str, now: datetime
    ) -> Grant:
        """Record a reviewer's review of a grant, with a comment; a later review replaces it.

        Raises:
            GrantNotFound: no such grant.
            NotAuthorised: the reviewer holds the grant, or is in no reviewer group.
            AuditWriteError: the audit log could not be written.
        """

        def build() -> list[AuditEvent]:
            grant = self.get(grant_id)
            check_reviewer(grant, reviewer=reviewer, reviewer_groups=reviewer_groups, config=self._config)
            return [_event(grant, EventKind.REVIEWED, reviewer, now, reason=comment.strip())]

        await self._commit(build)
        return self.get(grant_id)

    async def record_use(self, grant_id: str, *, route_id: str, now: datetime) -> None:
        """Count one request served under the grant; the first one is also written to the audit log.

        Call it before forwarding a request that only ``active_for`` let through. If the first use
        cannot be written, ``AuditWriteError`` propagates and the request should be refused.

        Raises:
            GrantNotFound: no such grant.
            AuditWriteError: the first use could not be written.
        """
        grant = self.get(grant_id)
        if grant.first_used_at is None:

            def build() -> list[AuditEvent]:
                current = self.get(grant_id)
                if current.first_used_at is not None or not is_active(current, now=now):
                    return []
                return [_event(current, EventKind.FIRST_USE, current.user, now, route_id=route_id)]

            await self._commit(build)
        counts = self._usage.setdefault(grant_id, {})
        counts[route_id] = counts.get(route_id, 0) + 1

    async def expire_due(self, *, now: datetime) -> tuple[Grant, ...]:
        """Write ``expired`` for every grant past its expiry and every pending request past its TTL.

        Access already ends exactly at expiry without this (``active_for`` checks the time); this
        records it. Returns the grants it expired.

        Raises:
            AuditWriteError: the audit log could not be written; nothing is marked expired.
        """
        expired_ids: list[str] = []

        def build() -> list[AuditEvent]:
            expired_ids.clear()
            events = []
            for grant in sorted(self._index.live(), key=lambda g: (g.requested_at, g.id)):
                if self.status_at(grant, now=now) is not GrantStatus.EXPIRED:
                    continue
                expired_ids.append(grant.id)
                if grant.status is GrantStatus.ACTIVE:
                    events.append(_event(grant, EventKind.EXPIRED, SYSTEM_ACTOR, now,
                                         reason="the grant reached its expiry", expires_at=grant.expires_at))
                else:
                    events.append(_event(grant, EventKind.EXPIRED, SYSTEM_ACTOR, now,
                                         reason="nobody approved or rejected the request in time"))
            return events

        await self._commit(build)
        return tuple(self.get(grant_id) for grant_id in expired_ids)

    async def refresh(self) -> int:
        """Apply entries other writers appended since this service last looked; returns how many.

        Raises:
            AuditIntegrityError: a new entry does not continue the chain.
            AuditWriteError: the log could not be read.
        """
        async with self._lock:
            return await self._catch_up()

    # --- internals ------------------------------------------------------------------------------

    def _pending(self, grant_id: str, *, now: datetime) -> Grant:
        grant = self.get(grant_id)
        if self.status_at(grant, now=now) is not GrantStatus.PENDING:
            raise _not_live(grant_id, "pending")
        return grant

    def _active(self, grant_id: str, *, now: datetime) -> Grant:
        grant = self.get(grant_id)
        if not is_active(grant, now=now):
            raise _not_live(grant_id, "active")
        return grant

    def _apply(self, entry: AuditEntry) -> None:
        self._index.apply(entry.event)
        self._head = entry.head

    async def _catch_up(self) -> int:
        try:
            new = await self._sink.entries(after_seq=self._head.seq)
        except Exception as exc:
            raise AuditWriteError(f"the audit log could not be read: {exc}; check the store") from exc
        for entry in new:
            if (
                entry.seq != self._head.seq + 1
                or entry.prev_hash != self._head.hash
                or entry.hash != entry_hash(entry.seq, entry.prev_hash, entry.event)
            ):
                raise AuditIntegrityError(
                    f"audit entry {entry.seq} does not continue the chain after entry "
                    f"{self._head.seq}; run `gatehouse audit verify`"
                )
            self._apply(entry)
        return len(new)

    async def _commit(self, build: Callable[[], Sequence[AuditEvent]]) -> None:
        async with self._lock:
            for _ in range(self._max_attempts):
                events = build()
                if not events:
                    return
                entries = seal(events, head=self._head)
                try:
                    await self._sink.append(entries)
                except AuditConflict:
                    await self._catch_up()
                    continue
                except Exception as exc:
                    if await self._landed(entries):
                        return
                    raise AuditWriteError(
                        f"the audit log could not be written ({type(exc).__name__}: {exc}); "
                        "nothing was changed; try again, and check the audit store if it persists"
                    ) from exc
                for entry in entries:
                    self._apply(entry)
                return
            raise AuditWriteError(
                f"the audit log kept changing under {self._max_attempts} attempts; nothing was "
                "changed; try again"
            )

    async def _landed(self, entries: Sequence[AuditEntry]) -> bool:
        """After a failed append, whether the entries were stored after all; if so, apply them."""
        try:
            stored = await self._sink.entries(after_seq=entries[0].seq - 1)
        except Exception:
            return False
        hashes = {e.seq: e.hash for e in stored}
        if any(hashes.get(e.seq) != e.hash for e in entries):
            return False
        for entry in entries:
            self._apply(entry)
        return True


def _pending_reason(because: frozenset[str]) -> str:
    if "self-grant-limit" in because:
        return "the user reached the self-grant limit; an approver must decide"
    return "the tier requires an approver"


def _not_live(grant_id: str, state: str) -> GrantNotFound:
    return GrantNotFound(
        grant_id, f"no {state} grant `{grant_id}`; see grants with `gatehouse break-glass list`"
    )


def _event(grant: Grant, kind: EventKind, actor: str, now: datetime, **fields: object) -> AuditEvent:
    return AuditEvent(
        kind=kind, grant_id=grant.id, at=now, actor=actor, user=grant.user,
        device_serial=grant.device_serial, scope=grant.scope, **fields,  # type: ignore[arg-type]
    )
