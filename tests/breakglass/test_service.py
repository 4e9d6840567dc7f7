"""Tests for breakglass/service.py: requests, decisions, expiry, limits, concurrency, audit failures."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from breakglass import (
    AuditIntegrityError,
    AuditWriteError,
    BreakglassError,
    BreakglassService,
    EventKind,
    GrantFilter,
    GrantIndex,
    GrantNotFound,
    GrantRejected,
    GrantStatus,
    InMemoryAuditSink,
    NotAuthorised,
    Scope,
    TamperKind,
    decode_entry,
    encode_entry,
    verify,
)
from tests.breakglass.factories import (
    ALLOWED,
    APPROVAL,
    APPROVERS,
    HIGH,
    NEVER,
    NOW,
    REVIEWERS,
    BrokenSink,
    SlowSink,
    make_config,
    make_request,
    make_service,
)


async def kinds(sink: InMemoryAuditSink) -> list[str]:
    """The kinds of every entry in the sink, in order."""
    return [e.event.kind.value for e in await sink.entries()]


class TestRequest:
    async def test_allowed_tier_grants_at_once(self) -> None:
        """Under an `allowed` rule the grant is active immediately, and recorded as requested then granted."""
        sink = InMemoryAuditSink()
        service = make_service(sink)

        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        assert (GrantStatus.ACTIVE, NOW, NOW + timedelta(minutes=30)) == (grant.status, grant.starts_at, grant.expires_at)
        assert grant == service.active_for("alice", "SER-A", "billing", "high", now=NOW)
        assert ["requested", "granted"] == await kinds(sink)

    async def test_request_entry_keeps_reason_duration_scope_and_failing_checks(self) -> None:
        """The requested entry carries everything a reviewer needs about the request."""
        sink = InMemoryAuditSink()
        service = make_service(sink)

        await service.request(make_request(reason="  paged at 3am: billing database is down  "), rule=ALLOWED, now=NOW)

        event = (await sink.entries())[0].event
        assert ("alice", "paged at 3am: billing database is down", timedelta(minutes=30), HIGH) == (
            event.actor, event.reason, event.duration, event.scope
        )
        assert ("os-outdated", "disk-unencrypted") == tuple(c.name for c in event.failing_checks)

    async def test_no_duration_takes_the_tier_default(self) -> None:
        """A request without a duration gets the tier default."""
        service = make_service()

        grant = await service.request(make_request(duration=None), rule=ALLOWED, now=NOW)

        assert NOW + timedelta(hours=1) == grant.expires_at

    async def test_approval_tier_leaves_the_request_pending(self) -> None:
        """Under an `approval` rule nothing is active until an approver decides."""
        sink = InMemoryAuditSink()
        service = make_service(sink)

        grant = await service.request(make_request(), rule=APPROVAL, now=NOW)

        assert (GrantStatus.PENDING, frozenset({"tier-approval"})) == (grant.status, grant.pending_because)
        assert None is service.active_for("alice", "SER-A", "billing", "high", now=NOW)
        assert ["requested", "pending"] == await kinds(sink)

    async def test_never_tier_is_rejected_and_recorded(self) -> None:
        """Under a `never` rule the request is refused, and both request and refusal are in the log."""
        sink = InMemoryAuditSink()
        service = make_service(sink)

        with pytest.raises(GrantRejected) as caught:
            await service.request(make_request(), rule=NEVER, now=NOW)

        assert "tier-never" == caught.value.code
        assert caught.value.grant is not None and GrantStatus.REJECTED is caught.value.grant.status
        assert None is service.active_for("alice", "SER-A", "billing", "high", now=NOW)
        assert ["requested", "rejected"] == await kinds(sink)

    async def test_short_reason_is_refused_without_an_entry(self) -> None:
        """A reason under the minimum is sent back to the user; nothing is written."""
        sink = InMemoryAuditSink()
        service = make_service(sink)

        with pytest.raises(GrantRejected) as caught:
            await service.request(make_request(reason="need access"), rule=ALLOWED, now=NOW)

        assert "reason-too-short" == caught.value.code
        assert [] == await kinds(sink)

    async def test_duration_above_the_tier_maximum_is_refused(self) -> None:
        """Asking for longer than the tier allows is refused."""
        service = make_service()

        with pytest.raises(GrantRejected) as caught:
            await service.request(make_request(duration=timedelta(hours=5)), rule=ALLOWED, now=NOW)

        assert "duration-too-long" == caught.value.code

    async def test_unidentified_device_cannot_ask(self) -> None:
        """Break-glass waives device health, not identity: no serial, no request."""
        service = make_service()

        with pytest.raises(GrantRejected) as caught:
            await service.request(make_request(device_serial=""), rule=ALLOWED, now=NOW)

        assert "identity-missing" == caught.value.code

    async def test_second_request_for_the_same_scope_is_refused(self) -> None:
        """A user with an active grant for a scope cannot stack another on it."""
        service = make_service()
        await service.request(make_request(), rule=ALLOWED, now=NOW)

        with pytest.raises(GrantRejected) as caught:
            await service.request(make_request(), rule=ALLOWED, now=NOW + timedelta(minutes=1))

        assert "already-active" == caught.value.code


class TestExpiry:
    async def test_grant_ends_exactly_at_expiry(self) -> None:
        """Access holds one microsecond before expiry and ends at expiry, without any sweep."""
        service = make_service()
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)
        expiry = NOW + timedelta(minutes=30)

        before = service.active_for("alice", "SER-A", "billing", "high", now=expiry - timedelta(microseconds=1))
        at = service.active_for("alice", "SER-A", "billing", "high", now=expiry)

        assert (grant.id, None) == (before.id if before else None, at)

    async def test_expire_due_records_expiries(self) -> None:
        """The sweep writes `expired` for grants past expiry, and only those."""
        sink = InMemoryAuditSink()
        service = make_service(sink)
        short = await service.request(make_request(), rule=ALLOWED, now=NOW)
        await service.request(make_request(device_serial="SER-B", duration=timedelta(hours=2)), rule=ALLOWED, now=NOW)

        expired = await service.expire_due(now=NOW + timedelta(minutes=30))

        assert [short.id] == [g.id for g in expired]
        assert GrantStatus.EXPIRED is service.get(short.id).status
        assert NOW + timedelta(minutes=30) == (await sink.entries())[-1].event.expires_at

    async def test_pending_request_expires_after_its_ttl(self) -> None:
        """A request nobody decides on expires, and can no longer be approved."""
        service = make_service(pending_ttl=timedelta(hours=4))
        grant = await service.request(make_request(), rule=APPROVAL, now=NOW)

        await service.expire_due(now=NOW + timedelta(hours=4))

        assert GrantStatus.EXPIRED is service.get(grant.id).status
        with pytest.raises(GrantNotFound):
            await service.approve(grant.id, approver="bob", approver_groups=APPROVERS, now=NOW + timedelta(hours=4))

    async def test_nothing_due_writes_nothing(self) -> None:
        """A sweep with nothing to expire leaves the log alone."""
        sink = InMemoryAuditSink()
        service = make_service(sink)
        await service.request(make_request(), rule=ALLOWED, now=NOW)

        expired = await service.expire_due(now=NOW + timedelta(minutes=1))

        assert ((), 2) == (expired, len(await sink.entries()))


class TestApproval:
    async def test_approved_grant_starts_at_approval(self) -> None:
        """An approved grant is active from the approval for the requested duration, naming the approver."""
        service = make_service()
        pending = await service.request(make_request(), rule=APPROVAL, now=NOW)
        later = NOW + timedelta(minutes=10)

        grant = await service.approve(pending.id, approver="bob", approver_groups=APPROVERS, now=later)

        assert (GrantStatus.ACTIVE, "bob", later, later + timedelta(minutes=30)) == (
            grant.status, grant.approver, grant.starts_at, grant.expires_at
        )
        assert grant == service.active_for("alice", "SER-A", "billing", "high", now=later)

    async def test_requester_cannot_approve_own_request(self) -> None:
        """Even an approver cannot approve their own request."""
        service = make_service()
        pending = await service.request(make_request(), rule=APPROVAL, now=NOW)

        with pytest.raises(NotAuthorised) as caught:
            await service.approve(pending.id, approver="alice", approver_groups=APPROVERS, now=NOW)

        assert "approver-is-requester" == caught.value.code
        assert GrantStatus.PENDING is service.get(pending.id).status

    async def test_approver_outside_the_group_is_refused(self) -> None:
        """Someone outside the approver groups cannot approve, and the request stays pending."""
        sink = InMemoryAuditSink()
        service = make_service(sink)
        pending = await service.request(make_request(), rule=APPROVAL, now=NOW)

        with pytest.raises(NotAuthorised):
            await service.approve(pending.id, approver="mallory", approver_groups=frozenset({"eng"}), now=NOW)

        assert ["requested", "pending"] == await kinds(sink)

    async def test_rejected_request_never_becomes_active(self) -> None:
        """A rejected request records who rejected it and why."""
        service = make_service()
        pending = await service.request(make_request(), rule=APPROVAL, now=NOW)

        grant = await service.reject(pending.id, approver="bob", approver_groups=APPROVERS,
                                     reason="use the read replica", now=NOW)

        assert (GrantStatus.REJECTED, "bob", "use the read replica") == (grant.status, grant.ended_by, grant.end_reason)
        assert None is service.active_for("alice", "SER-A", "billing", "high", now=NOW)

    async def test_active_grant_cannot_be_approved(self) -> None:
        """Only pending requests can be approved."""
        service = make_service()
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        with pytest.raises(GrantNotFound, match="no pending grant"):
            await service.approve(grant.id, approver="bob", approver_groups=APPROVERS, now=NOW)


class TestRevokeAndEnd:
    async def test_revoked_grant_stops_at_once(self) -> None:
        """After revocation the grant no longer lets the user through."""
        sink = InMemoryAuditSink()
        service = make_service(sink)
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        revoked = await service.revoke(grant.id, actor="rita", actor_groups=REVIEWERS,
                                       reason="device reported stolen", now=NOW + timedelta(minutes=5))

        assert (GrantStatus.REVOKED, "rita") == (revoked.status, revoked.ended_by)
        assert None is service.active_for("alice", "SER-A", "billing", "high", now=NOW + timedelta(minutes=5))
        assert "revoked" == (await kinds(sink))[-1]

    async def test_plain_user_cannot_revoke(self) -> None:
        """Revoking needs an approver or reviewer group."""
        service = make_service()
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        with pytest.raises(NotAuthorised):
            await service.revoke(grant.id, actor="mallory", actor_groups=frozenset(), reason="x", now=NOW)

    async def test_expired_grant_cannot_be_revoked(self) -> None:
        """Revoking a grant past its expiry says it is not active."""
        service = make_service()
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        with pytest.raises(GrantNotFound, match=f"no active grant `{grant.id}`"):
            await service.revoke(grant.id, actor="rita", actor_groups=REVIEWERS, reason="x",
                                 now=NOW + timedelta(minutes=30))

    async def test_user_ends_own_grant(self) -> None:
        """The grant's user can end it early."""
        service = make_service()
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        ended = await service.end(grant.id, user="alice", reason="fixed", now=NOW + timedelta(minutes=3))

        assert (GrantStatus.ENDED, NOW + timedelta(minutes=3)) == (ended.status, ended.ended_at)
        assert None is service.active_for("alice", "SER-A", "billing", "high", now=NOW + timedelta(minutes=3))

    async def test_user_cannot_end_someone_elses_grant(self) -> None:
        """Ending is for the grant's own user only."""
        service = make_service()
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        with pytest.raises(NotAuthorised) as caught:
            await service.end(grant.id, user="bob", now=NOW)

        assert "not-grant-owner" == caught.value.code

    async def test_unknown_grant_is_not_found(self) -> None:
        """Operations on an unknown id raise GrantNotFound."""
        service = make_service()

        with pytest.raises(GrantNotFound):
            await service.end("g-nope", user="alice", now=NOW)


class TestSelfGrantLimit:
    async def request_n(self, service: BreakglassService, n: int, *, start: int = 0) -> list[GrantStatus]:
        """Make n requests an hour apart (each on its own device so none overlap)."""
        statuses = []
        for i in range(start, start + n):
            grant = await service.request(make_request(device_serial=f"SER-{i}"), rule=ALLOWED,
                                          now=NOW + timedelta(hours=i))
            statuses.append(grant.status)
        return statuses

    async def test_fourth_request_in_the_window_needs_approval(self) -> None:
        """After 3 self-granted uses in 7 days, the next request is pending and flagged."""
        service = make_service(self_grant_limit=3, self_grant_window=timedelta(days=7))

        statuses = await self.request_n(service, 4)

        assert [GrantStatus.ACTIVE] * 3 + [GrantStatus.PENDING] == statuses
        fourth = service.list_grants(GrantFilter(status=GrantStatus.PENDING), now=NOW + timedelta(hours=3))[0]
        assert (True, frozenset({"self-grant-limit"})) == (fourth.flagged, fourth.pending_because)

    async def test_window_rolls_exactly_at_its_length(self) -> None:
        """A self-grant exactly 7 days old no longer counts; one a microsecond younger still does."""
        service = make_service(self_grant_limit=3, self_grant_window=timedelta(days=7))
        await self.request_n(service, 3)
        first_grant_at = NOW

        almost = await service.request(make_request(device_serial="SER-x"), rule=ALLOWED,
                                       now=first_grant_at + timedelta(days=7) - timedelta(microseconds=1))
        rolled = await service.request(make_request(device_serial="SER-y"), rule=ALLOWED,
                                       now=first_grant_at + timedelta(days=7))

        assert (GrantStatus.PENDING, GrantStatus.ACTIVE) == (almost.status, rolled.status)

    async def test_approved_grants_do_not_use_up_the_limit(self) -> None:
        """Grants an approver approved do not count as self-granted."""
        service = make_service(self_grant_limit=1)
        pending = await service.request(make_request(), rule=APPROVAL, now=NOW)
        await service.approve(pending.id, approver="bob", approver_groups=APPROVERS, now=NOW)

        grant = await service.request(make_request(device_serial="SER-B"), rule=ALLOWED, now=NOW)

        assert GrantStatus.ACTIVE is grant.status

    async def test_limit_is_per_user(self) -> None:
        """Another user's grants do not count towards alice's limit."""
        service = make_service(self_grant_limit=1)
        await service.request(make_request(user="bob"), rule=ALLOWED, now=NOW)

        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        assert GrantStatus.ACTIVE is grant.status

    async def test_repeat_users_are_flagged_for_review(self) -> None:
        """From the threshold on, a user's requests are flagged and listed as repeat users."""
        service = make_service(repeat_user_threshold=2, self_grant_limit=5)
        await self.request_n(service, 3)

        flagged = service.list_grants(GrantFilter(flagged_only=True), now=NOW + timedelta(hours=3))

        assert ["SER-2"] == [g.device_serial for g in flagged]


class TestConcurrency:
    async def test_concurrent_requests_do_not_exceed_the_limit(self) -> None:
        """Ten simultaneous requests of one user yield exactly the limit of self-grants."""
        sink = SlowSink()
        service = make_service(sink, self_grant_limit=3)

        grants = await asyncio.gather(*(
            service.request(make_request(device_serial=f"SER-{i}"), rule=ALLOWED, now=NOW) for i in range(10)
        ))

        statuses = [g.status for g in grants]
        assert (3, 7) == (statuses.count(GrantStatus.ACTIVE), statuses.count(GrantStatus.PENDING))
        assert True is verify(await sink.entries(), expected_head=await sink.head()).ok

    async def test_two_instances_on_one_sink_do_not_exceed_the_limit(self) -> None:
        """Two services (as in two processes) sharing a sink still hold the limit between them."""
        sink = SlowSink()
        first = make_service(sink, self_grant_limit=3)
        second = BreakglassService(sink, config=make_config(self_grant_limit=3), new_id=lambda: f"h-{next(ids)}")
        ids = iter(range(100))

        grants = await asyncio.gather(*(
            (first if i % 2 else second).request(make_request(device_serial=f"SER-{i}"), rule=ALLOWED, now=NOW)
            for i in range(10)
        ))

        assert 3 == [g.status for g in grants].count(GrantStatus.ACTIVE)
        assert 20 == len(await sink.entries())

    def test_threads_with_their_own_loops_do_not_exceed_the_limit(self) -> None:
        """Services in four threads, each with its own event loop, share a sink and hold the limit."""
        sink = InMemoryAuditSink()
        results: list[GrantStatus] = []
        lock = threading.Lock()
        start = threading.Barrier(4)

        def worker(n: int) -> None:
            service = BreakglassService(sink, config=make_config(self_grant_limit=3),
                                        new_id=lambda: f"t{n}-{next(counter)}")
            counter = iter(range(100))

            async def run() -> None:
                for i in range(3):
                    grant = await service.request(make_request(device_serial=f"SER-{n}-{i}"), rule=ALLOWED, now=NOW)
                    with lock:
                        results.append(grant.status)

            start.wait()
            asyncio.run(run())

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert (3, 9) == (results.count(GrantStatus.ACTIVE), results.count(GrantStatus.PENDING))

    async def test_first_use_is_recorded_once_under_concurrency(self) -> None:
        """Simultaneous first requests under a grant write a single first_use entry."""
        sink = SlowSink()
        service = make_service(sink)
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        await asyncio.gather(*(service.record_use(grant.id, route_id="billing", now=NOW) for _ in range(5)))

        assert 1 == (await kinds(sink)).count("first_use")
        assert {"billing": 5} == dict(service.usage(grant.id))


class TestAuditWriteFailure:
    async def test_failed_write_means_no_grant(self) -> None:
        """When the audit entry cannot be written the user gets AuditWriteError and no grant exists."""
        sink = BrokenSink()
        service = make_service(sink)

        with pytest.raises(AuditWriteError) as caught:
            await service.request(make_request(), rule=ALLOWED, now=NOW)

        assert isinstance(caught.value, OSError)
        assert "nothing was changed" in str(caught.value)
        assert None is service.active_for("alice", "SER-A", "billing", "high", now=NOW)
        assert () == service.list_grants(now=NOW)
        assert [] == await kinds(sink)

    async def test_service_recovers_when_the_store_does(self) -> None:
        """After the store comes back, the next request is granted normally."""
        sink = BrokenSink()
        service = make_service(sink)
        with pytest.raises(AuditWriteError):
            await service.request(make_request(), rule=ALLOWED, now=NOW)
        sink.broken = False

        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        assert GrantStatus.ACTIVE is grant.status
        assert ["requested", "granted"] == await kinds(sink)

    async def test_failed_revoke_leaves_the_grant_active(self) -> None:
        """A revocation that cannot be written does not take effect."""
        sink = BrokenSink()
        sink.broken = False
        service = make_service(sink)
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)
        sink.broken = True

        with pytest.raises(AuditWriteError):
            await service.revoke(grant.id, actor="rita", actor_groups=REVIEWERS, reason="x", now=NOW)

        assert grant == service.active_for("alice", "SER-A", "billing", "high", now=NOW)

    async def test_write_that_landed_despite_the_error_counts(self) -> None:
        """If the entries were stored before the error (commit then disconnect), the grant stands."""
        sink = BrokenSink(store_then_fail=True)
        service = make_service(sink)

        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        assert GrantStatus.ACTIVE is grant.status
        assert ["requested", "granted"] == await kinds(sink)

    async def test_failed_first_use_write_propagates(self) -> None:
        """A first use that cannot be recorded raises, so the gateway can refuse the request."""
        sink = BrokenSink()
        sink.broken = False
        service = make_service(sink)
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)
        sink.broken = True

        with pytest.raises(AuditWriteError):
            await service.record_use(grant.id, route_id="billing", now=NOW)

        assert ({}, None) == (dict(service.usage(grant.id)), service.get(grant.id).first_used_at)


class TestReview:
    async def test_mark_reviewed_records_comment_in_the_log(self) -> None:
        """Reviewing stores reviewer and comment, and writes a reviewed entry."""
        sink = InMemoryAuditSink()
        service = make_service(sink)
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        reviewed = await service.mark_reviewed(grant.id, reviewer="rita", reviewer_groups=REVIEWERS,
                                               comment="justified by INC-4711", now=NOW + timedelta(days=1))

        assert (True, "rita", "justified by INC-4711") == (reviewed.reviewed, reviewed.reviewed_by, reviewed.comment)
        last = (await sink.entries())[-1].event
        assert (EventKind.REVIEWED, "rita", "justified by INC-4711") == (last.kind, last.actor, last.reason)

    async def test_non_reviewer_cannot_review(self) -> None:
        """Only reviewer groups may mark grants reviewed."""
        service = make_service()
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        with pytest.raises(NotAuthorised):
            await service.mark_reviewed(grant.id, reviewer="bob", reviewer_groups=APPROVERS, comment="", now=NOW)

    async def test_filters_for_the_review_page(self) -> None:
        """User, status, tier, date range and unreviewed filters combine."""
        service = make_service()
        a = await service.request(make_request(), rule=ALLOWED, now=NOW)
        b = await service.request(make_request(user="bob", scope=Scope.for_tier("medium")), rule=APPROVAL,
                                  now=NOW + timedelta(hours=1))
        await service.mark_reviewed(a.id, reviewer="rita", reviewer_groups=REVIEWERS, comment="ok", now=NOW)
        later = NOW + timedelta(hours=2)

        assert [b.id, a.id] == [g.id for g in service.list_grants(now=later)]
        assert [a.id] == [g.id for g in service.list_grants(GrantFilter(user="alice"), now=later)]
        assert [a.id] == [g.id for g in service.list_grants(GrantFilter(status=GrantStatus.EXPIRED), now=later)]
        assert [b.id] == [g.id for g in service.list_grants(GrantFilter(tier="medium"), now=later)]
        assert [b.id] == [g.id for g in service.list_grants(GrantFilter(unreviewed_only=True), now=later)]
        assert [a.id] == [g.id for g in service.list_grants(
            GrantFilter(since=NOW, until=NOW + timedelta(hours=1)), now=later)]

    async def test_detail_view_has_events_and_usage_per_route(self) -> None:
        """The detail view shows the grant's events and request counts per route."""
        service = make_service()
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        await service.record_use(grant.id, route_id="billing", now=NOW)
        await service.record_use(grant.id, route_id="billing", now=NOW + timedelta(minutes=1))
        await service.record_use(grant.id, route_id="ledger", now=NOW + timedelta(minutes=2))

        assert {"billing": 2, "ledger": 1} == dict(service.usage(grant.id))
        assert [EventKind.REQUESTED, EventKind.GRANTED, EventKind.FIRST_USE] == [
            e.kind for e in service.events_for(grant.id)
        ]
        assert (NOW, "billing") == (service.get(grant.id).first_used_at, service.get(grant.id).first_route_id)


class TestOpen:
    async def test_open_replays_the_log(self) -> None:
        """A service opened on an existing log sees the same grants."""
        sink = InMemoryAuditSink()
        service = make_service(sink)
        grant = await service.request(make_request(), rule=ALLOWED, now=NOW)

        reopened = await BreakglassService.open(sink, config=make_config())

        assert grant == reopened.active_for("alice", "SER-A", "billing", "high", now=NOW)
        assert service.head == reopened.head

    async def test_open_refuses_a_tampered_log(self) -> None:
        """A log that fails verification is not loaded, and the problem is named."""
        sink = InMemoryAuditSink()
        service = make_service(sink)
        await service.request(make_request(), rule=ALLOWED, now=NOW)
        head, entries = sink.snapshot()
        tampered = InMemoryAuditSink(entries[:1])

        report = verify(tampered.snapshot()[1], expected_head=head)
        with pytest.raises(AuditIntegrityError, match="failed verification"):
            await BreakglassService.open(BrokenHeadSink(tampered, head), config=make_config())

        assert {TamperKind.TRUNCATED} == report.kinds()

    async def test_refresh_sees_another_instances_grants(self) -> None:
        """A second instance learns of the first one's grants on refresh."""
        sink = InMemoryAuditSink()
        first = make_service(sink)
        second = make_service(sink)
        grant = await first.request(make_request(), rule=ALLOWED, now=NOW)

        applied = await second.refresh()

        assert (2, grant) == (applied, second.active_for("alice", "SER-A", "billing", "high", now=NOW))


class BrokenHeadSink(InMemoryAuditSink):
    """A sink whose stored head says more entries exist than it returns (a truncated log)."""

    def __init__(self, inner: InMemoryAuditSink, head: object) -> None:
        super().__init__(inner.snapshot()[1])
        self._claimed = head

    async def head(self):  # type: ignore[no-untyped-def]
        return self._claimed


# --- replay property ------------------------------------------------------------------------------

USERS = ("alice", "bob", "carol")
DEVICES = ("SER-A", "SER-B")
SCOPES = (HIGH, Scope.for_tier("medium"), Scope.for_route_set("billing-admin", frozenset({"billing"}), tier="high"))
RULES = (ALLOWED, APPROVAL, NEVER)
PROBES = (("billing", "high"), ("wiki", "medium"), ("hr", "high"))

operation = st.tuples(
    st.sampled_from(["request"] * 4 + ["approve"] * 2 + ["use"] * 2
                    + ["reject", "revoke", "end", "review", "expire", "fail", "heal"]),
    st.integers(min_value=0, max_value=len(USERS) - 1),
    st.integers(min_value=0, max_value=len(DEVICES) - 1),
    st.integers(min_value=0, max_value=len(SCOPES) - 1),
    st.integers(min_value=0, max_value=len(RULES) - 1),
    st.integers(min_value=0, max_value=90),
)


async def run_operations(ops: list[tuple[str, int, int, int, int, int]]) -> tuple[BreakglassService, BrokenSink, list[datetime]]:
    """Drive a service through ``ops`` (refusals and audit failures included); return it, its sink and the times used."""
    sink = BrokenSink()
    sink.broken = False
    service = make_service(sink, self_grant_limit=2, repeat_user_threshold=2, pending_ttl=timedelta(hours=2))
    now = NOW
    times = [now]
    for op, u, d, s, r, minutes in ops:
        now += timedelta(minutes=minutes)
        times.append(now)
        user, device = USERS[u], DEVICES[d]
        wanted = {"approve": GrantStatus.PENDING, "reject": GrantStatus.PENDING, "revoke": GrantStatus.ACTIVE,
                  "end": GrantStatus.ACTIVE, "use": GrantStatus.ACTIVE}.get(op)
        every = service.list_grants(GrantFilter(status=wanted), now=now)
        target = every[(s + r) % len(every)].id if every else "g-none"
        try:
            if op == "request":
                await service.request(make_request(user=user, device_serial=device, scope=SCOPES[s],
                                                   duration=timedelta(minutes=15 * (r + 1))), rule=RULES[r], now=now)
            elif op == "approve":
                await service.approve(target, approver=USERS[(u + 1) % 3], approver_groups=APPROVERS, now=now)
            elif op == "reject":
                await service.reject(target, approver=USERS[(u + 1) % 3], approver_groups=APPROVERS, reason="no", now=now)
            elif op == "revoke":
                await service.revoke(target, actor="rita", actor_groups=REVIEWERS, reason="stop", now=now)
            elif op == "end":
                await service.end(target, user=service.get(target).user if every else user, now=now)
            elif op == "review":
                await service.mark_reviewed(target, reviewer="rita", reviewer_groups=REVIEWERS, comment="seen", now=now)
            elif op == "use" and every:
                grant = service.get(target)
                route_id, tier = next(((r_, t) for r_, t in PROBES if grant.scope.covers(r_, t)), PROBES[0])
                if service.active_for(grant.user, grant.device_serial, route_id, tier, now=now) is not None:
                    await service.record_use(grant.id, route_id=route_id, now=now)
            elif op == "expire":
                await service.expire_due(now=now)
            elif op == "fail":
                sink.broken = True
            else:
                sink.broken = False
        except BreakglassError:
            pass
    return service, sink, times


class TestReplay:
    @settings(max_examples=150, deadline=None)
    @given(st.lists(operation, min_size=1, max_size=40))
    def test_replaying_the_log_rebuilds_the_same_grants(self, ops: list[tuple[str, int, int, int, int, int]]) -> None:
        """Replaying the stored log (encoded and decoded) gives the same grants and the same active grants."""
        service, sink, times = asyncio.run(run_operations(ops))
        head, entries = sink.snapshot()

        replayed = GrantIndex()
        for entry in entries:
            replayed.apply(decode_entry(encode_entry(entry)).event)

        assert True is verify(entries, expected_head=head).ok
        assert {g.id: g for g in service.list_grants(now=times[-1])} == {g.id: g for g in replayed}
        for now in times + [times[-1] + timedelta(days=1)]:
            for user in USERS:
                for device in DEVICES:
                    for route_id, tier in PROBES:
                        assert service.active_for(user, device, route_id, tier, now=now) == replayed.active_for(
                            user, device, route_id, tier, now=now
                        )


async def test_a_taken_grant_id_is_never_reused() -> None:
    """If the id generator repeats itself, the service draws another id instead of corrupting the log."""
    ids = iter(["g-1", "g-1", "g-2"])
    service = BreakglassService(InMemoryAuditSink(), config=make_config(), new_id=lambda: next(ids))
    first = await service.request(make_request(), rule=ALLOWED, now=NOW)

    second = await service.request(make_request(device_serial="SER-B"), rule=ALLOWED, now=NOW)

    assert ("g-1", "g-2") == (first.id, second.id)
