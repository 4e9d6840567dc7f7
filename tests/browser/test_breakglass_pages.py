"""Break-glass in headless Chromium: ask from the deny page, then a reviewer approves, revokes and reviews.

The break-glass routes run on 127.0.0.1 with a fake clock; identity comes from test headers that the
browser context sends (``X-Test-User``, ``X-Test-Device``) in place of the real identity middleware.
A ``/denied`` page renders the real deny page (gateway/web/views) with the real CSRF token and offer, and
``/wiki/page`` stands in for the upstream. Screenshots go to artifacts/screenshots/breakglass-*.png.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from gateway.gate.policy_gate import note_use
from gateway.web.breakglass import csrf_token_for, deny_page_offer
from gateway.web.views import render_deny
from tests.browser.conftest import screenshot
from tests.gateway.web.breakglass.support import ROUTES, FakeClock, Harness, build_app, policies
from tests.gateway.web.views import samples

pytestmark = pytest.mark.browser

REASON = "Paged for INC-4711: billing database down, need the runbook on the wiki"


def routes(app: web.Application) -> None:
    async def denied(request: web.Request) -> web.Response:
        route = request.query.get("route", "wiki")
        tier = ROUTES[route]
        snapshot = samples.outdated_mac(disk_encrypted=False)
        view = samples.deny_view(
            snapshot, tier=tier, route_id=route, return_to=f"/{route}/page", csrf_token=csrf_token_for(request),
            breakglass=deny_page_offer(request, tier), decision=policies().evaluate(snapshot, tier, now=samples.NOW,
                                                                                   failing_since=samples.FAILING_SINCE),
            service_name={"wiki": "Team wiki", "source": "Source code"}.get(route, route), now=samples.NOW,
        )
        return render_deny(view, accept=request.headers.get("Accept")).response()

    async def upstream(request: web.Request) -> web.Response:
        return web.Response(text=f"<!doctype html><title>Wiki</title><h1>Welcome to the {request.match_info['route']}</h1>",
                            content_type="text/html")

    app.router.add_get("/denied", denied)
    app.router.add_get("/{route}/page", upstream)


async def as_user(page: Any, user: str, device: str | None = "C02XK1JHJG5J") -> None:
    headers = {"X-Test-User": user}
    if device:
        headers["X-Test-Device"] = device
    await page.set_extra_http_headers(headers)


async def test_request_from_the_deny_page_and_review(browser_page: Any, aiohttp_server: AiohttpServer) -> None:
    """Alice gets access from the deny page; a reviewer approves her pending request, revokes and reviews."""
    snapshot = samples.outdated_mac(disk_encrypted=False)
    harness: Harness = build_app(
        extra_routes=routes, clock=FakeClock(samples.NOW),
        evaluate=lambda request, route, tier: policies().evaluate(snapshot, tier, now=samples.NOW,
                                                                  failing_since=samples.FAILING_SINCE),
    )
    server = await aiohttp_server(harness.app)
    base = str(server.make_url("")).rstrip("/")
    page = browser_page

    # Alice is denied on the wiki (tier low: granted at once) and asks from the deny page.
    await as_user(page, "alice")
    await page.goto(f"{base}/denied?route=wiki")
    await page.fill("#bg-reason", REASON)
    await page.select_option("#bg-duration", str(30 * 60))
    await screenshot(page, "breakglass-deny-form")
    await page.click("text=Request emergency access")
    await page.wait_for_url(f"{base}/wiki/page")
    assert "Welcome to the wiki" == await page.text_content("h1")
    wiki_grant = harness.service.list_grants(now=harness.clock())[0]
    for path in ("wiki", "wiki", "wiki", "chat"):  # what the proxy path records for requests under the grant
        harness.clock.advance(minutes=1)
        assert await note_use(harness.app, wiki_grant, path, now=harness.clock())

    await page.goto(f"{base}/.gatehouse/break-glass/{wiki_grant.id}?return_to=/wiki/page")
    await page.wait_for_selector("text=Emergency access is on")
    await screenshot(page, "breakglass-active")

    # On source code (tier medium) the request waits for an approver.
    await page.goto(f"{base}/denied?route=source")
    await page.fill("#bg-reason", REASON)
    await page.click("text=Ask for emergency access")
    await page.wait_for_selector("text=Waiting for an approver")
    await screenshot(page, "breakglass-pending")
    pending = next(g for g in harness.service.list_grants(now=harness.clock()) if g.scope.tier == "medium")

    harness.clock.advance(minutes=10)

    # A reviewer who is also an approver opens the review.
    await as_user(page, "boss;sre-leads,security-review", None)
    await page.goto(f"{base}/.gatehouse/admin/break-glass")
    await page.wait_for_selector("text=Break-glass review")
    await screenshot(page, "breakglass-review-list")

    await page.click(f"text={pending.id}")
    await page.click("button:has-text('Approve')")
    await page.wait_for_selector("text=Approved: access started")
    await screenshot(page, "breakglass-approved")
    await page.goto(f"{base}/.gatehouse/admin/break-glass/{wiki_grant.id}")
    await screenshot(page, "breakglass-detail-active")
    assert harness.service.active_for("alice", "C02XK1JHJG5J", "source", "medium", now=harness.clock()) is not None

    await page.goto(f"{base}/.gatehouse/admin/break-glass/{wiki_grant.id}")
    await page.fill("#revoke-reason", "Incident closed; access no longer needed")
    await page.click("button:has-text('Revoke now')")
    await page.wait_for_selector("text=Revoked: access ended at once")
    assert None is harness.service.active_for("alice", "C02XK1JHJG5J", "wiki", "low", now=harness.clock())

    await page.fill("#review-comment", "Matches INC-4711; reasonable use")
    await page.click("button:has-text('Mark as reviewed')")
    await page.wait_for_selector("text=Your review was saved")
    await screenshot(page, "breakglass-reviewed")
    assert harness.service.get(wiki_grant.id).reviewed

    # Alice sees that her wiki access is over; the standalone request form is there for another try.
    await as_user(page, "alice")
    await page.goto(f"{base}/.gatehouse/break-glass?route=wiki&return_to=/wiki/page")
    await page.wait_for_selector("text=Request emergency access")
    await screenshot(page, "breakglass-request-form")
    await page.goto(f"{base}/.gatehouse/break-glass/{wiki_grant.id}?return_to=/wiki/page")
    await page.wait_for_selector("text=Emergency access is over")
    await screenshot(page, "breakglass-grant-over")
