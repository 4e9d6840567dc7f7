"""Requesting break-glass over real HTTP: each tier rule, expiry, ending, limits, concurrency, failures."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from structlog.testing import capture_logs

from breakglass import BreakglassService, EventKind, GrantStatus, InMemoryAuditSink
from gateway.gate.decide import GateOutcome, Verdict
from gateway.keys import OUTCOME
from gateway.web.breakglass import failing_checks_of
from tests.gateway.web.breakglass.support import (
    API,
    APPROVER,
    CLIENT,
    REASON,
    FailingSink,
    Harness,
    as_user,
    ask,
    build_app,
    make_settings,
)
from tests.gateway.web.views import samples

ADMIN_API = "/.gatehouse/api/v1/admin/break-glass"


class TestTierRules:
    async def test_allowed_tier_grants_at_once(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A tier whose rule is `allowed` grants at once, for the asked duration, and the gate sees it."""
        with capture_logs() as logs:
            status, body = await ask(client)

        assert 201 == status
        assert "active" == body["status"]
        assert (harness.clock() + timedelta(seconds=1800)).isoformat() == body["expires_at"]
        assert body["id"] == harness.service.active_for("alice", "SER-A", "wiki", "low", now=harness.clock()).id
        assert ["grant.requested", "grant.issued"] == [e["event"] for e in logs if e["event"].startswith("grant.")]
        assert 1.0 == harness.count("gatehouse_breakglass_grants_total", tier="low", outcome="granted")
        assert 1.0 == harness.count("gatehouse_breakglass_active_grants")

    async def test_approval_tier_waits_for_an_approver(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A tier whose rule is `approval` answers 202 pending; nothing is let through until approved."""
        status, body = await ask(client, route="source")

        assert 202 == status
        assert "pending" == body["status"]
        assert ["tier-approval"] == body["pending_because"]
        assert None is harness.service.active_for("alice", "SER-A", "source", "medium", now=harness.clock())

    async def test_approver_approves_and_access_starts(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """An approver's approval makes the pending request active from the approval time."""
        _, pending = await ask(client, route="source")
        harness.clock.advance(minutes=5)

        response = await client.post(f"{ADMIN_API}/{pending['id']}/approve", json={}, headers=as_user(APPROVER, None, **CLIENT))
        body = await response.json()

        assert 200 == response.status
        assert "active" == body["status"]
        assert "carol" == body["approver"]
        assert (harness.clock() + timedelta(seconds=1800)).isoformat() == body["expires_at"]
        assert harness.service.active_for("alice", "SER-A", "source", "medium", now=harness.clock()) is not None

    async def test_requester_cannot_approve_own_request(self, aiohttp_client: AiohttpClient) -> None:
        """An approver who asked for the grant cannot approve it themselves."""
        harness = build_app()
        client = await aiohttp_client(harness.app)
        _, pending = await ask(client, user="carol;sre-leads", route="source")

        response = await client.post(f"{ADMIN_API}/{pending['id']}/approve", json={},
                                     headers=as_user("carol;sre-leads", None, **CLIENT))

        assert 403 == response.status
        assert "approver-is-requester" == (await response.json())["code"]
        assert GrantStatus.PENDING is harness.service.get(pending["id"]).status

    async def test_never_tier_is_refused_and_recorded(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A tier whose rule is `never` refuses with 403, and the refusal is in the audit log."""
        status, body = await ask(client, route="prod")

        assert 403 == status
        assert "tier-never" == body["code"]
        assert "rejected" == body["grant"]["status"]
        kinds = [e.kind for e in harness.service.events_for(body["grant"]["id"])]
        assert [EventKind.REQUESTED, EventKind.REJECTED] == kinds
        assert 1.0 == harness.count("gatehouse_breakglass_grants_total", tier="high", outcome="refused")

    async def test_route_set_scope_takes_the_strictest_rule(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A route set mixing a low and a medium route needs approval and is filed under the stricter tier."""
        status, body = await ask(client, route=None, scope={"route_set": "eng"})

        assert 202 == status
        assert {"tier": "medium", "route_set": "eng", "routes": ["source", "wiki"]} == body["scope"]

    async def test_route_set_grant_covers_only_its_routes(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A grant for a route set lets its routes through and no other route of the same tier."""
        status, body = await ask(client, route="chat", scope={"route_set": "collab"})

        now = harness.clock()
        assert 201 == status
        assert ["chat", "wiki"] == body["scope"]["routes"]
        assert harness.service.active_for("alice", "SER-A", "chat", "low", now=now) is not None
        assert None is harness.service.active_for("alice", "SER-A", "intranet", "low", now=now)


class TestValidation:
    async def test_every_problem_is_named_with_what_is_expected(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """A malformed request lists every wrong field, what is wrong and what is expected."""
        response = await client.post(API, json={"route": "nope", "duration_s": "long", "colour": "red"},
                                     headers=as_user("alice", **CLIENT))
        body = await response.json(content_type=None)

        assert 400 == response.status
        assert "application/problem+json" == response.content_type
        assert {"colour", "reason", "duration_s"} == {e["field"] for e in body["errors"]}
        assert all(e["expected"] for e in body["errors"])

    async def test_unknown_route_is_named(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """A route that is not configured is reported with the field `route`."""
        status, body = await ask(client, route="nope")

        assert 400 == status
        assert [("route", "`nope` is not a configured route")] == [(e["field"], e["problem"]) for e in body["errors"]]

    async def test_short_reason_is_refused_and_nothing_written(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A reason under the minimum length is refused with its length and the minimum; the log stays empty."""
        status, body = await ask(client, reason="because")

        assert 400 == status
        assert "reason-too-short" == body["code"]
        assert "at least 20" in body["detail"]
        assert [] == list(await harness.sink.entries())

    async def test_duration_above_the_tier_maximum_is_refused(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """A duration longer than the tier allows (8 h for low) is refused naming the maximum."""
        status, body = await ask(client, duration_s=9 * 3600)

        assert 400 == status
        assert "duration-too-long" == body["code"]
        assert "8h" in body["detail"]

    async def test_no_duration_takes_the_default(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """Without `duration_s` the configured default (1 h) applies."""
        status, body = await ask(client, duration_s=None)

        assert 201 == status
        assert 3600 == body["duration_s"]

    async def test_unidentified_device_cannot_ask(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """Break-glass never waives identity: without a verified device the request is refused."""
        status, body = await ask(client, device=None)

        assert 403 == status
        assert "device-unidentified" == body["code"]
        assert [] == list(await harness.sink.entries())

    async def test_unverified_user_cannot_ask(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """Without a verified user the API answers 401."""
        response = await client.post(API, json={"route": "wiki", "reason": REASON}, headers=CLIENT)

        assert 401 == response.status

    async def test_second_request_for_the_same_scope_conflicts(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """Asking again while a grant for the same scope is active answers 409 naming the grant."""
        _, first = await ask(client)

        status, body = await ask(client)

        assert 409 == status
        assert "already-active" == body["code"]
        assert first["id"] in body["detail"]


class TestExpiryAndEnding:
    async def test_grant_ends_exactly_at_its_expiry(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """The grant lets through until the last microsecond before expiry and not at expiry itself."""
        _, body = await ask(client, duration_s=900)
        expires = harness.service.get(body["id"]).expires_at
        assert expires is not None

        harness.clock.now = expires - timedelta(microseconds=1)
        before = harness.service.active_for("alice", "SER-A", "wiki", "low", now=harness.clock())
        status_before = (await (await client.get(f"{API}/{body['id']}", headers=as_user("alice"))).json())["status"]
        harness.clock.now = expires
        after = harness.service.active_for("alice", "SER-A", "wiki", "low", now=harness.clock())
        status_after = (await (await client.get(f"{API}/{body['id']}", headers=as_user("alice"))).json())["status"]

        assert before is not None
        assert "active" == status_before
        assert None is after
        assert "expired" == status_after

    async def test_user_ends_own_grant(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """The user ends their own grant through the API; access stops at once."""
        _, body = await ask(client)

        with capture_logs() as logs:
            response = await client.post(f"{API}/{body['id']}/end", json={"reason": "fixed"},
                                         headers=as_user("alice", **CLIENT))

        assert 200 == response.status
        assert "ended" == (await response.json())["status"]
        assert None is harness.service.active_for("alice", "SER-A", "wiki", "low", now=harness.clock())
        assert "grant.ended" in [e["event"] for e in logs]

    async def test_other_user_cannot_end_a_grant(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """Someone else's end request is refused and the grant stays active."""
        _, body = await ask(client)

        response = await client.post(f"{API}/{body['id']}/end", json={}, headers=as_user("mallory", **CLIENT))

        assert 403 == response.status
        assert harness.service.active_for("alice", "SER-A", "wiki", "low", now=harness.clock()) is not None

    async def test_reviewer_revokes_an_active_grant(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A revocation by a reviewer stops access at once and is audited with its reason."""
        _, body = await ask(client)

        response = await client.post(f"{ADMIN_API}/{body['id']}/revoke", json={"reason": "not an incident"},
                                     headers=as_user("rita;security-review", None, **CLIENT))
        detail = await response.json()

        assert 200 == response.status
        assert "revoked" == detail["status"]
        assert ("revoked", "rita", "not an incident") == (detail["events"][-1]["kind"], detail["events"][-1]["actor"],
                                                          detail["events"][-1]["reason"])
        assert None is harness.service.active_for("alice", "SER-A", "wiki", "low", now=harness.clock())


class TestAbuseLimit:
    async def test_beyond_the_self_grant_limit_requests_need_approval(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """The fourth self-grant within the window waits for approval and is flagged as a repeat user."""
        for serial in ("SER-1", "SER-2", "SER-3"):
            status, _ = await ask(client, device=serial)
            assert 201 == status

        status, body = await ask(client, device="SER-4")

        assert 202 == status
        assert ["self-grant-limit"] == body["pending_because"]
        assert True is body["flagged"]

    async def test_the_window_rolls(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A week after the first self-grants, the user may grant themselves again."""
        for serial in ("SER-1", "SER-2", "SER-3"):
            await ask(client, device=serial)
        harness.clock.advance(days=7, seconds=1)

        status, _ = await ask(client, device="SER-4")

        assert 201 == status

    async def test_concurrent_requests_do_not_exceed_the_limit(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """Eight requests of one user at once over HTTP: exactly three are granted, the rest wait."""
        results = await asyncio.gather(*(ask(client, device=f"SER-{i}") for i in range(8)))

        statuses = sorted(status for status, _ in results)

        assert [201, 201, 201, 202, 202, 202, 202, 202] == statuses

    async def test_replicas_sharing_one_log_do_not_exceed_the_limit(self, aiohttp_client: AiohttpClient) -> None:
        """Two gateway instances over one audit log, eight concurrent requests: still three grants."""
        sink = InMemoryAuditSink()
        settings = make_settings()
        apps = [build_app(sink=sink, service=BreakglassService(sink, config=settings.to_config())) for _ in range(2)]
        clients = [await aiohttp_client(h.app) for h in apps]

        results = await asyncio.gather(*(ask(clients[i % 2], device=f"SER-{i}") for i in range(8)))

        assert 3 == sum(1 for status, _ in results if status == 201)
        assert 5 == sum(1 for status, _ in results if status == 202)


class TestAuditFailure:
    async def test_api_refuses_the_grant_when_the_log_cannot_be_written(self, aiohttp_client: AiohttpClient) -> None:
        """A sink whose append fails: 503 saying no grant was given, and nothing lets the user through."""
        harness = build_app(sink=FailingSink())
        client = await aiohttp_client(harness.app)

        with capture_logs() as logs:
            status, body = await ask(client)

        assert 503 == status
        assert "audit-unavailable" == body["code"]
        assert body["detail"].startswith("no grant was given")
        assert None is harness.service.active_for("alice", "SER-A", "wiki", "low", now=harness.clock())
        assert "grant.audit_failed" in [e["event"] for e in logs]



class TestFailingChecks:
    async def test_failing_checks_come_from_the_evaluator(self, aiohttp_client: AiohttpClient) -> None:
        """Without a gate outcome on the request, the given evaluator's failing checks are recorded."""
        decision = samples.decide(samples.outdated_mac(), "medium")
        harness = build_app(evaluate=lambda request, route, tier: decision)
        client = await aiohttp_client(harness.app)

        _, body = await ask(client)

        assert [c.name for c in failing_checks_of(decision)] == [c["name"] for c in body["failing_checks"]]
        assert body["failing_checks"]

    async def test_failing_checks_come_from_the_gate_outcome(self, aiohttp_client: AiohttpClient) -> None:
        """When the gate already decided the request (OUTCOME), its decision's failures are recorded."""
        decision = samples.decide(None, "low")

        @web.middleware
        async def gate(request: web.Request, handler: object) -> web.StreamResponse:
            request[OUTCOME] = GateOutcome(Verdict.DENY, decision.reason.value, decision)
            return await handler(request)  # type: ignore[operator]

        harness = build_app()
        harness.app.middlewares.append(gate)
        client = await aiohttp_client(harness.app)

        _, body = await ask(client)

        assert [{"name": "device-unknown", "detail": "device unknown"}] == body["failing_checks"]


@pytest.mark.parametrize("reason", ["<script>alert(1)</script> paged for the outage", "=cmd|' /C calc'!A0 outage on call"])
async def test_hostile_reasons_are_kept_verbatim_in_json(client: TestClient, reason: str) -> None:  # type: ignore[type-arg]
    """Reasons are returned exactly as written (JSON escapes them; pages escape them as HTML)."""
    status, body = await ask(client, reason=reason)

    assert 201 == status
    assert reason == body["reason"]
