"""The requester's break-glass pages over real HTTP: the form, the grant page, withdrawing, a failed audit log."""

from __future__ import annotations

from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from breakglass import GrantStatus
from tests.gateway.web.breakglass.support import REASON, FailingSink, Harness, as_user, ask, build_app


class TestAuditFailure:
    async def test_form_tells_the_user_no_access_was_given(self, aiohttp_client: AiohttpClient) -> None:
        """The form path shows a page saying the request could not be recorded and nothing was granted."""
        harness = build_app(sink=FailingSink())
        client = await aiohttp_client(harness.app)

        response = await client.post("/.gatehouse/break-glass", data={
            "csrf_token": harness.token("alice"), "route": "wiki", "reason": REASON, "duration": "1800",
            "return_to": "/wiki/page"}, headers=as_user("alice"), allow_redirects=False)
        text = await response.text()

        assert 503 == response.status
        assert "No access was given" in text
        assert "could not record your request in the audit log" in text


class TestFormFlow:
    async def test_pending_form_request_lands_on_its_page_and_can_be_withdrawn(self, client: TestClient,  # type: ignore[type-arg]
                                                                               harness: Harness) -> None:
        """A form request that needs approval redirects to its page; the withdraw form ends it."""
        response = await client.post("/.gatehouse/break-glass", data={
            "csrf_token": harness.token("alice"), "route": "source", "reason": REASON, "duration": "1800",
            "return_to": "/src/"}, headers=as_user("alice"), allow_redirects=False)
        location = response.headers["Location"]
        page = await client.get(location, headers=as_user("alice"))
        grant_id = location.split("?")[0].rsplit("/", 1)[1]

        withdrawn = await client.post(f"/.gatehouse/break-glass/{grant_id}/end", allow_redirects=False,
                                      data={"csrf_token": harness.token("alice"), "return_to": "/src/"},
                                      headers=as_user("alice"))

        assert 303 == response.status
        assert "Waiting for an approver" in await page.text()
        assert 303 == withdrawn.status
        assert GrantStatus.ENDED is harness.service.get(grant_id).status

    async def test_invalid_form_shows_the_form_again_with_the_reason_kept(self, client: TestClient,  # type: ignore[type-arg]
                                                                          harness: Harness) -> None:
        """A too-short reason re-renders the form (400) with the message and what was typed."""
        response = await client.post("/.gatehouse/break-glass", data={
            "csrf_token": harness.token("alice"), "route": "wiki", "reason": "urgent <now>", "duration": "1800",
            "return_to": "/wiki/"}, headers=as_user("alice"), allow_redirects=False)
        text = await response.text()

        assert 400 == response.status
        assert "the reason has 12 characters; write at least 20" in text
        assert "urgent &lt;now&gt;</textarea>" in text

    async def test_someone_elses_grant_page_is_not_found(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """Another user's grant page answers 404, not a hint that it exists."""
        status, body = await ask(client)

        response = await client.get(f"/.gatehouse/break-glass/{body['id']}", headers=as_user("mallory"))

        assert 404 == response.status
