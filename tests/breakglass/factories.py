"""Builders for break-glass tests: requests, rules, configs and sinks that misbehave on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from itertools import count

from breakglass import (
    AuditEntry,
    AuditEvent,
    BreakglassConfig,
    BreakglassService,
    ChainHead,
    EventKind,
    FailingCheck,
    GrantRequest,
    InMemoryAuditSink,
    Scope,
    TierMode,
    TierRule,
    seal,
)

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)
REASON = "paged at 3am: billing database is down"
APPROVERS = frozenset({"sre-leads"})
REVIEWERS = frozenset({"security-review"})
ALLOWED = TierRule(TierMode.ALLOWED, max_duration=timedelta(hours=4), default_duration=timedelta(hours=1))
APPROVAL = TierRule(TierMode.APPROVAL, max_duration=timedelta(hours=2))
NEVER = TierRule(TierMode.NEVER)
HIGH = Scope.for_tier("high")
CHECKS = (FailingCheck("os-outdated", "macOS 13.1, needs 14.2"), FailingCheck("disk-unencrypted", "FileVault off"))


def make_config(**overrides: object) -> BreakglassConfig:
    """A config with approver and reviewer groups set."""
    fields: dict[str, object] = {"approver_groups": APPROVERS, "reviewer_groups": REVIEWERS}
    fields.update(overrides)
    return BreakglassConfig(**fields)  # type: ignore[arg-type]


def make_request(**overrides: object) -> GrantRequest:
    """A valid request by alice on device SER-A for the high tier."""
    request = GrantRequest(
        user="alice",
        user_email="alice@example.com",
        device_serial="SER-A",
        scope=HIGH,
        reason=REASON,
        duration=timedelta(minutes=30),
        failing_checks=CHECKS,
    )
    return replace(request, **overrides)  # type: ignore[arg-type]


def sequential_ids() -> "IdFactory":
    """Grant ids g-1, g-2, … so tests can name them."""
    return IdFactory()


class IdFactory:
    """Callable handing out g-1, g-2, …"""

    def __init__(self) -> None:
        self._next = count(1)

    def __call__(self) -> str:
        return f"g-{next(self._next)}"


def make_service(sink: InMemoryAuditSink | None = None, **config: object) -> BreakglassService:
    """A service over a fresh in-memory sink, with sequential grant ids."""
    return BreakglassService(
        sink if sink is not None else InMemoryAuditSink(), config=make_config(**config), new_id=sequential_ids()
    )


def make_event(kind: EventKind = EventKind.REQUESTED, *, grant_id: str = "g-1", at: datetime = NOW,
               **overrides: object) -> AuditEvent:
    """An audit event for alice's grant; pass fields to override."""
    fields: dict[str, object] = {
        "kind": kind, "grant_id": grant_id, "at": at, "actor": "alice", "user": "alice",
        "device_serial": "SER-A", "scope": HIGH,
    }
    if kind is EventKind.REQUESTED:
        fields.update(reason=REASON, duration=timedelta(minutes=30), failing_checks=CHECKS,
                      user_email="alice@example.com")
    fields.update(overrides)
    return AuditEvent(**fields)  # type: ignore[arg-type]


def make_chain(length: int) -> tuple[AuditEntry, ...]:
    """A valid chain of ``length`` entries (requested events of grants g-1, g-2, …)."""
    events = [make_event(grant_id=f"g-{i}", at=NOW + timedelta(minutes=i)) for i in range(1, length + 1)]
    return seal(events, head=ChainHead(0, "0" * 64))


class BrokenSink(InMemoryAuditSink):
    """A sink whose appends fail with ``OSError`` (disk full) until ``broken`` is cleared.

    With ``store_then_fail`` the entries are stored before the error, as when a connection drops
    after the commit.
    """

    def __init__(self, *, store_then_fail: bool = False) -> None:
        super().__init__()
        self.broken = True
        self.store_then_fail = store_then_fail

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        if self.broken and self.store_then_fail:
            await super().append(entries)
        if self.broken:
            raise OSError(28, "No space left on device")
        await super().append(entries)


class SlowSink(InMemoryAuditSink):
    """A sink that yields to the event loop before appending, so concurrent writers interleave."""

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await super().append(entries)
