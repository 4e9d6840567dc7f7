"""Tests for breakglass/grants.py: the grant index rebuilt from audit events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from breakglass import AuditIntegrityError, EventKind, GrantIndex, GrantStatus, Scope
from tests.breakglass.factories import NOW, make_event

EXPIRES = NOW + timedelta(minutes=30)


def granted_index(scope: Scope | None = None) -> GrantIndex:
    """An index holding alice's grant g-1, active from NOW for 30 minutes."""
    index = GrantIndex()
    extra = {} if scope is None else {"scope": scope}
    index.apply(make_event(EventKind.REQUESTED, **extra))
    index.apply(make_event(EventKind.GRANTED, actor="gatehouse", duration=timedelta(minutes=30),
                           expires_at=EXPIRES, **extra))
    return index


class TestApply:
    def test_requested_then_granted_is_active(self) -> None:
        """A granted request becomes an active, self-granted grant with its failing checks."""
        index = granted_index()

        grant = index.get("g-1")

        assert grant is not None
        assert (GrantStatus.ACTIVE, NOW, EXPIRES, True) == (grant.status, grant.starts_at, grant.expires_at, grant.self_granted)
        assert "os-outdated" == grant.failing_checks[0].name

    def test_approved_grant_records_the_approver(self) -> None:
        """An approved grant names its approver and does not count as self-granted."""
        index = GrantIndex()
        index.apply(make_event(EventKind.REQUESTED))
        index.apply(make_event(EventKind.PENDING, actor="gatehouse", flags=frozenset({"tier-approval"})))

        grant = index.apply(make_event(EventKind.APPROVED, actor="bob", at=NOW + timedelta(minutes=5),
                                       duration=timedelta(minutes=30), expires_at=EXPIRES + timedelta(minutes=5)))

        assert ("bob", False, NOW + timedelta(minutes=5)) == (grant.approver, grant.self_granted, grant.starts_at)

    def test_event_for_an_unknown_grant_is_refused(self) -> None:
        """An event for a grant never requested means the log is inconsistent."""
        with pytest.raises(AuditIntegrityError, match="never requested"):
            GrantIndex().apply(make_event(EventKind.REVOKED))

    def test_impossible_transition_is_refused(self) -> None:
        """Approving an active grant cannot come from a correct log."""
        index = granted_index()

        with pytest.raises(AuditIntegrityError, match="`approved` for grant `g-1`"):
            index.apply(make_event(EventKind.APPROVED, actor="bob", expires_at=EXPIRES))

    def test_revoked_grant_leaves_the_live_set(self) -> None:
        """A revoked grant is no longer live and no longer active."""
        index = granted_index()

        index.apply(make_event(EventKind.REVOKED, actor="bob", reason="done"))

        assert () == index.live_for("alice", "SER-A")
        assert None is index.active_for("alice", "SER-A", "billing", "high", now=NOW)

    def test_reviewed_keeps_the_status(self) -> None:
        """Reviewing records reviewer and comment without changing the status."""
        index = granted_index()

        grant = index.apply(make_event(EventKind.REVIEWED, actor="rita", reason="justified"))

        assert (GrantStatus.ACTIVE, True, "rita", "justified") == (grant.status, grant.reviewed, grant.reviewed_by, grant.comment)


class TestActiveFor:
    def test_tier_scope_covers_routes_of_that_tier_only(self) -> None:
        """A tier grant covers any route of its tier and nothing of another tier."""
        index = granted_index()

        same_tier = index.active_for("alice", "SER-A", "billing", "high", now=NOW)
        other_tier = index.active_for("alice", "SER-A", "wiki", "low", now=NOW)

        assert ("g-1", None) == (same_tier.id if same_tier else None, other_tier)

    def test_route_set_scope_covers_only_its_routes(self) -> None:
        """A route-set grant covers its routes and no other route of the same tier."""
        index = granted_index(Scope.for_route_set("billing-admin", frozenset({"billing", "ledger"}), tier="high"))

        inside = index.active_for("alice", "SER-A", "ledger", "high", now=NOW)
        outside = index.active_for("alice", "SER-A", "hr", "high", now=NOW)

        assert (True, None) == (inside is not None, outside)

    def test_grant_is_bound_to_user_and_device(self) -> None:
        """Another device of the same user, or another user, gets nothing."""
        index = granted_index()

        assert None is index.active_for("alice", "SER-B", "billing", "high", now=NOW)
        assert None is index.active_for("bob", "SER-A", "billing", "high", now=NOW)

    def test_ends_exactly_at_expiry(self) -> None:
        """The lookup finds the grant until, and not at, its expiry."""
        index = granted_index()

        before = index.active_for("alice", "SER-A", "billing", "high", now=EXPIRES - timedelta(microseconds=1))
        at = index.active_for("alice", "SER-A", "billing", "high", now=EXPIRES)

        assert (True, None) == (before is not None, at)
