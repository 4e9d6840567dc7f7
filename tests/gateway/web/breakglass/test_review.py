"""The managers' review over real HTTP: who may see it, the filters, the detail, and each audited action."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from breakglass import EventKind
from gateway.gate.policy_gate import note_use
from tests.gateway.web.breakglass.support import APPROVER, BOTH, CLIENT, REASON, REVIEWER, Harness, as_user

API = "/.gatehouse/api/v1/break-glass"
REVIEW = "/.gatehouse/admin/break-glass"
REVIEW_API = "/.gatehouse/api/v1/admin/break-glass"


async def ask(client: TestClient, user: str = "alice", device: str = "SER-A", route: str = "wiki",  # type: ignore[type-arg]
              reason: str = REASON) -> str:
    response = await client.post(API, json={"route": route, "reason": reason, "duration_s": 1800},
                                 headers=as_user(user, device, **CLIENT))
    assert response.status in (201, 202), await response.text()
    return str((await response.json())["id"])


async def act(client: TestClient, user: str, grant_id: str, action: str, **body: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = await client.post(f"{REVIEW_API}/{grant_id}/{action}", json=body, headers=as_user(user, None, **CLIENT))
    return response.status, await response.json(content_type=None)


class TestAccess:
    @pytest.mark.parametrize("path", [REVIEW, f"{REVIEW}/g-1", REVIEW_API, f"{REVIEW_API}/g-1"])
    async def test_non_reviewer_gets_403_and_is_logged(self, client: TestClient, path: str) -> None:  # type: ignore[type-arg]
        """Someone outside the reviewer and approver groups is refused, and the attempt is logged."""
        with capture_logs() as logs:
            response = await client.get(path, headers=as_user("mallory;engineering", None))

        assert 403 == response.status
        refused = [e for e in logs if e["event"] == "breakglass.review_refused"]
        assert [("mallory", "not-a-reviewer")] == [(e["user"], e["code"]) for e in refused]

    async def test_non_reviewer_action_is_refused_and_logged(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A non-reviewer's revoke through the API is refused, logged, and the grant stays active."""
        grant_id = await ask(client)

        with capture_logs() as logs:
            status, body = await act(client, "mallory", grant_id, "revoke", reason="because I can")

        assert 403 == status
        assert "not-a-reviewer" == body["code"]
        assert "breakglass.review_refused" in [e["event"] for e in logs]
        assert harness.service.active_for("alice", "SER-A", "wiki", "low", now=harness.clock()) is not None

    async def test_reviewer_without_approver_group_cannot_approve(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A reviewer may see a pending request but only approvers may approve it."""
        grant_id = await ask(client, route="source")

        status, body = await act(client, REVIEWER, grant_id, "approve")

        assert 403 == status
        assert "not-an-approver" == body["code"]

    async def test_reviewer_cannot_review_own_grant(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """Nobody marks their own grant as reviewed."""
        grant_id = await ask(client, user=REVIEWER)

        status, body = await act(client, REVIEWER, grant_id, "review", comment="all fine")

        assert 403 == status
        assert "reviewer-is-requester" == body["code"]


class TestActions:
    async def test_reject_needs_a_reason_and_is_audited(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """Rejecting without a reason is refused naming the field; with one, it is in the audit log."""
        grant_id = await ask(client, route="source")

        missing, problem = await act(client, APPROVER, grant_id, "reject")
        status, body = await act(client, APPROVER, grant_id, "reject", reason="use the on-call laptop")

        assert (400, "reason") == (missing, problem["errors"][0]["field"])
        assert (200, "rejected") == (status, body["status"])
        assert ("rejected", "carol", "use the on-call laptop") == (
            body["events"][-1]["kind"], body["events"][-1]["actor"], body["events"][-1]["reason"])

    async def test_mark_reviewed_with_comment_is_audited(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A review's comment goes into the audit log and the grant is no longer unreviewed."""
        grant_id = await ask(client)

        with capture_logs() as logs:
            status, body = await act(client, REVIEWER, grant_id, "review", comment="matches INC-4711")

        assert 200 == status
        assert (True, "rita", "matches INC-4711") == (body["reviewed"], body["reviewed_by"], body["comment"])
        event = harness.service.events_for(grant_id)[-1]
        assert (EventKind.REVIEWED, "rita", "matches INC-4711") == (event.kind, event.actor, event.reason)
        assert "grant.reviewed" in [e["event"] for e in logs]

    async def test_approving_twice_conflicts(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """Approving a request that is no longer pending answers 409; an unknown id answers 404."""
        grant_id = await ask(client, route="source")
        await act(client, APPROVER, grant_id, "approve")

        again, _ = await act(client, APPROVER, grant_id, "approve")
        unknown, _ = await act(client, APPROVER, "g-000000000000", "approve")

        assert (409, 404) == (again, unknown)

    async def test_forms_redirect_back_to_the_detail(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """The detail page's approve form approves and redirects to the detail with a notice."""
        grant_id = await ask(client, route="source")

        response = await client.post(f"{REVIEW}/{grant_id}/approve", data={"csrf_token": harness.token(BOTH)},
                                     headers=as_user(BOTH, None), allow_redirects=False)
        page = await client.get(response.headers["Location"], headers=as_user(BOTH, None))

        assert 303 == response.status
        assert "Approved: access started" in await page.text()

    async def test_form_action_on_wrong_state_shows_the_error(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """Revoking a grant that already ended shows the detail page with the reason it failed."""
        grant_id = await ask(client)
        harness.clock.advance(hours=1)

        response = await client.post(f"{REVIEW}/{grant_id}/revoke",
                                     data={"csrf_token": harness.token(REVIEWER), "reason": "late"},
                                     headers=as_user(REVIEWER, None), allow_redirects=False)

        assert 409 == response.status
        assert f"no active grant `{grant_id}`" in await response.text()


class TestListAndDetail:
    async def test_filters_select_grants(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """Status, user, tier, unreviewed, repeat users and date range each narrow the JSON list."""
        a1 = await ask(client, device="SER-1")
        a2 = await ask(client, device="SER-2")
        b1 = await ask(client, user="bob", route="source")
        harness.clock.advance(days=2)
        a3 = await ask(client, device="SER-3")
        await act(client, REVIEWER, a1, "review", comment="ok")

        async def ids(query: str) -> set[str]:
            response = await client.get(f"{REVIEW_API}?{query}", headers=as_user(REVIEWER, None))
            return {g["id"] for g in (await response.json())["grants"]}

        assert {a3} == await ids("status=active")
        assert {a1, a2, b1} == await ids("status=expired")
        assert {a1, a2, a3} == await ids("user=alice")
        assert {b1} == await ids("tier=medium")
        assert {a2, a3, b1} == await ids("unreviewed=1")
        assert {a3} == await ids("flagged=1")
        assert {a1, a2, b1} == await ids("since=2026-11-22&until=2026-11-22")
        assert {a3} == await ids("since=2026-11-24")

    async def test_detail_page_shows_reason_device_state_usage_and_events(self, client: TestClient,  # type: ignore[type-arg]
                                                                          harness: Harness) -> None:
        """The detail view has the reason, failing checks at request time, requests per route and the events."""
        grant_id = await ask(client, reason="<b>paged</b> for INC-4711 & the outage")
        grant = harness.service.get(grant_id)
        for route in ("wiki", "wiki", "chat"):
            await note_use(harness.app, grant, route, now=harness.clock())

        response = await client.get(f"{REVIEW}/{grant_id}", headers=as_user(REVIEWER, None))
        text = await response.text()

        assert 200 == response.status
        assert "&lt;b&gt;paged&lt;/b&gt; for INC-4711 &amp; the outage" in text
        assert "<b>paged" not in text
        assert "Device state when requested" in text and "not-evaluated" in text
        assert "<code>wiki</code></th><td>2</td>" in text
        assert "First used" in text and "Granted at once" in text
        assert "Mark as reviewed" in text

    async def test_list_page_marks_repeat_and_unreviewed(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """The list page flags repeat users and unreviewed grants."""
        for serial in ("SER-1", "SER-2", "SER-3"):
            await ask(client, device=serial)

        response = await client.get(f"{REVIEW}?unreviewed=1", headers=as_user(REVIEWER, None))
        text = await response.text()

        assert 200 == response.status
        assert "Repeat user" in text
        assert "Not reviewed" in text
        assert "3 of 3 grants shown." in text


async def test_pending_request_expires_after_its_ttl(client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
    """A pending request nobody decides on shows as expired a day later and cannot be approved."""
    grant_id = await ask(client, route="source")
    harness.clock.advance(days=1)

    status, _ = await act(client, APPROVER, grant_id, "approve")
    detail = await client.get(f"{REVIEW_API}/{grant_id}", headers=as_user(REVIEWER, None))

    assert 409 == status
    assert "expired" == (await detail.json())["status"]
    assert timedelta(days=1) == harness.clock() - harness.service.get(grant_id).requested_at
