"""The break-glass CSRF glue: every state-changing form and API call is refused without proof it came from Gatehouse's own page."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from tests.gateway.web.breakglass.support import CLIENT, REASON, REVIEWER, Harness, as_user

FORM = "/.gatehouse/break-glass"
API = "/.gatehouse/api/v1/break-glass"


def form(harness: Harness, **overrides: str) -> dict[str, str]:
    fields = {"csrf_token": harness.token("alice"), "route": "wiki", "reason": REASON, "duration": "1800",
              "return_to": "/wiki/"}
    fields.update(overrides)
    return fields


class TestForms:
    async def test_form_with_its_token_is_accepted(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """The deny page's form with the token issued to this user grants and redirects back."""
        response = await client.post(FORM, data=form(harness), headers=as_user("alice", Origin=f"http://{client.host}:{client.port}",
                                                                              **{"Sec-Fetch-Site": "same-origin"}),
                                     allow_redirects=False)

        assert 303 == response.status
        assert "/wiki/" == response.headers["Location"]

    @pytest.mark.parametrize("token", [None, "", "garbage", "1763780400.AAAA.BBBB"])
    async def test_form_without_a_valid_token_is_refused(self, client: TestClient, harness: Harness,  # type: ignore[type-arg]
                                                         token: str | None) -> None:
        """No token, a malformed one or a forged one: 403, and nothing is written."""
        fields = form(harness)
        if token is None:
            del fields["csrf_token"]
        else:
            fields["csrf_token"] = token

        with capture_logs() as logs:
            response = await client.post(FORM, data=fields, headers=as_user("alice"), allow_redirects=False)

        assert 403 == response.status
        assert [] == list(await harness.sink.entries())
        assert "breakglass.csrf_refused" in [e["event"] for e in logs]

    async def test_another_users_token_is_refused(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A token issued to mallory does not work for alice (tokens are bound to the user)."""
        response = await client.post(FORM, data=form(harness, csrf_token=harness.token("mallory")),
                                     headers=as_user("alice"), allow_redirects=False)

        assert 403 == response.status
        assert "not issued to you" in await response.text()

    async def test_expired_token_is_refused(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A token older than its maximum age (12 h) asks the user to reload the page."""
        token = harness.token("alice")
        harness.clock.advance(hours=12, seconds=1)

        response = await client.post(FORM, data=form(harness, csrf_token=token), headers=as_user("alice"),
                                     allow_redirects=False)

        assert 403 == response.status
        assert "too old" in await response.text()

    @pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Origin": "null"},
                                         {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"},
                                         {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}])
    async def test_cross_site_form_is_refused_even_with_a_token(self, client: TestClient, harness: Harness,  # type: ignore[type-arg]
                                                                headers: dict[str, str]) -> None:
        """A post the browser marks as coming from another site is refused whatever token it carries."""
        response = await client.post(FORM, data=form(harness), headers=as_user("alice", **headers), allow_redirects=False)

        assert 403 == response.status
        assert [] == list(await harness.sink.entries())

    async def test_null_origin_from_our_own_page_is_accepted(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """Chromium sends `Origin: null` from a no-referrer page; same-origin fetch metadata vouches for it."""
        response = await client.post(FORM, data=form(harness), allow_redirects=False,
                                     headers=as_user("alice", Origin="null", **{"Sec-Fetch-Site": "same-origin"}))

        assert 303 == response.status

    async def test_review_action_without_token_is_refused(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A reviewer's revoke form without a token changes nothing."""
        created = await client.post(API, json={"route": "wiki", "reason": REASON}, headers=as_user("alice", **CLIENT))
        grant_id = (await created.json())["id"]

        response = await client.post(f"/.gatehouse/admin/break-glass/{grant_id}/revoke", data={"reason": "x"},
                                     headers=as_user(REVIEWER, None), allow_redirects=False)

        assert 403 == response.status
        assert "active" == harness.service.status_at(harness.service.get(grant_id), now=harness.clock()).value


class TestJsonApi:
    async def test_without_client_header_or_token_is_refused(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A JSON call with neither `X-Gatehouse-Client` nor a token is refused, naming both."""
        response = await client.post(API, json={"route": "wiki", "reason": REASON}, headers=as_user("alice"))
        body = await response.json(content_type=None)

        assert 403 == response.status
        assert "csrf-missing" == body["code"]
        assert "X-Gatehouse-Client" in body["detail"]

    async def test_wrong_token_is_refused_even_with_the_client_header(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """A token that is present but wrong is refused even when the client header is also sent."""
        response = await client.post(API, json={"route": "wiki", "reason": REASON},
                                     headers=as_user("alice", **CLIENT, **{"X-Gatehouse-CSRF": "1.2.3"}))

        assert 403 == response.status

    async def test_valid_token_header_is_accepted(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A browser script may send the page's token in `X-Gatehouse-CSRF` instead of a client header."""
        response = await client.post(API, json={"route": "wiki", "reason": REASON},
                                     headers=as_user("alice", **{"X-Gatehouse-CSRF": harness.token("alice")}))

        assert 201 == response.status

    async def test_form_encoded_body_is_refused(self, client: TestClient) -> None:  # type: ignore[type-arg]
        """The API only takes `application/json`: a cross-site HTML form cannot reach it (415)."""
        response = await client.post(API, data={"route": "wiki", "reason": REASON}, headers=as_user("alice", **CLIENT))

        assert 415 == response.status

    async def test_cross_site_origin_is_refused(self, client: TestClient, harness: Harness) -> None:  # type: ignore[type-arg]
        """A JSON call from another origin is refused even with the client header."""
        response = await client.post(API, json={"route": "wiki", "reason": REASON},
                                     headers=as_user("alice", **CLIENT, Origin="https://evil.example"))

        assert 403 == response.status
        assert [] == list(await harness.sink.entries())


@pytest.mark.parametrize("return_to", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"])
async def test_return_url_never_leaves_the_site(client: TestClient, harness: Harness, return_to: str) -> None:  # type: ignore[type-arg]
    """After a grant the user is sent back to a path on this site only (no open redirect)."""
    response = await client.post(FORM, data=form(harness, return_to=return_to), headers=as_user("alice"),
                                 allow_redirects=False)

    assert 303 == response.status
    assert "/" == response.headers["Location"]
