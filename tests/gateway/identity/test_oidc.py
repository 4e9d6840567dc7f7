"""The built-in OpenID Connect login, end to end against the real `oidc-provider` (npm) from tests/oidc.

Gatehouse runs as `gatehouse serve` runs it (``start_gateway``: its listener, proxy and policy
gate) in front of an upstream that echoes the identity it receives. Prepare the provider with
`npm ci --prefix tests/oidc`. Outside CI the tests skip when Node.js or the package is missing; in
CI (`CI` set) they fail instead. The Chromium tests drive the provider's own pages as a user would.
"""

from __future__ import annotations

import io
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.cli.commands.config import check_config
from gateway.serve.server import Gateway, start_gateway
from gateway.config.settings import parse_settings
from tests.browser.conftest import browser_page, screenshot  # noqa: F401  (browser_page is a fixture)
from tests.conftest import free_port, missing_service
from tests.gateway.identity.support import FakeClock

pytestmark = pytest.mark.oidc

ROOT = Path(__file__).resolve().parents[3]
OIDC_DIR = ROOT / "tests" / "oidc"
POLICY = ROOT / "deploy" / "policy.yaml"
_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')
_XSRF = re.compile(r'name="xsrf" value="([^"]+)"')


@contextmanager
def running_provider() -> Iterator[str]:
    """A real OpenID provider on a free 127.0.0.1 port until the block ends; yields its issuer URL."""
    node = shutil.which("node")
    if node is None:
        missing_service("Node.js", "install Node.js 20 or later, then run `npm ci --prefix tests/oidc`")
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        missing_service("the npm package oidc-provider", "run `npm ci --prefix tests/oidc`")
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([node, "provider.js"], cwd=OIDC_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else b""  # type: ignore[union-attr]
        if not line:
            log.seek(0)
            pytest.fail(f"oidc-provider did not start: {log.read().decode(errors='replace')[-2000:]}", pytrace=False)
        yield orjson.loads(line)["issuer"]
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        log.close()


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[str]:
    """The real OpenID provider for the whole run; yields its issuer URL."""
    with running_provider() as issuer:
        yield issuer


async def echo_identity(request: web.Request) -> web.Response:
    """The upstream: tells who Gatehouse said the user is."""
    groups = request.headers.get("X-Gatehouse-Groups", "")
    return web.json_response({
        "subject": unquote(request.headers.get("X-Gatehouse-User", "")),
        "email": unquote(request.headers.get("X-Gatehouse-Email", "")),
        "groups": [unquote(g) for g in groups.split(",")] if groups else [],
        "path_qs": request.path_qs,
    })


@dataclass
class Gatehouse:
    base: str
    clock: FakeClock
    client_id: str


StartGatehouse = Callable[..., Awaitable[Gatehouse]]


async def register_client(issuer: str, base: str) -> dict[str, Any]:
    """Register Gatehouse at the provider with its callback and signed-out addresses."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{issuer}/reg", json={
            "redirect_uris": [f"{base}/.gatehouse/callback"], "post_logout_redirect_uris": [f"{base}/.gatehouse/signed-out"],
            "grant_types": ["authorization_code"], "response_types": ["code"], "token_endpoint_auth_method": "client_secret_basic",
        }) as resp:
            assert 201 == resp.status, await resp.text()
            return await resp.json()  # type: ignore[no-any-return]


@pytest.fixture
async def start_gatehouse(tmp_path: Path) -> AsyncIterator[StartGatehouse]:
    """Starts Gatehouses as `gatehouse serve` does, with OIDC login at the given provider and a monitor route to the echo upstream."""
    upstream = TestServer(_echo_app(), host="127.0.0.1")
    await upstream.start_server()
    gateways: list[Gateway] = []

    async def start(issuer: str, *, client_secret: str | None = None, discovery_url: str | None = None) -> Gatehouse:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        client = await register_client(issuer, base)
        # The provider signs with its real clock, so the gateway's injected clock starts at the real now.
        clock = FakeClock(datetime.fromtimestamp(int(time.time()), tz=UTC))
        settings = parse_settings({
            "listeners": [{"address": f"127.0.0.1:{port}"}], "metrics": {"address": None},
            "store": f"sqlite:///{tmp_path / f'gatehouse-{port}.db'}", "policy": str(POLICY),
            "server": {"shutdown_grace_s": 1},
            "routes": [{"id": "app", "path_prefix": "/", "upstream": str(upstream.make_url("")).rstrip("/"),
                        "tier": "low", "mode": "monitor"}],
            "identity": {
                "sources": [{"kind": "session"}],
                "oidc": {
                    "discovery_url": discovery_url or f"{issuer}/.well-known/openid-configuration",
                    "client_id": client["client_id"], "client_secret": {"value": client_secret or client["client_secret"]},
                    "external_url": base, "session_key": {"value": "s" * 40}, "scopes": ["openid", "email", "groups"],
                    "session_lifetime_s": 3600, "timeout_s": 3,
                },
            },
        }, source="test-oidc.yaml", base_dir=tmp_path, environ={})
        gateways.append(await start_gateway(settings, clock=clock))
        return Gatehouse(base, clock, client["client_id"])

    yield start
    for gateway in gateways:
        await gateway.stop()
    await upstream.close()


def _echo_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo_identity)
    return app


@pytest.fixture
async def gatehouse(start_gatehouse: StartGatehouse, oidc_issuer: str) -> Gatehouse:
    """A Gatehouse with OIDC login at the session's provider."""
    return await start_gatehouse(oidc_issuer)


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A cookie-keeping client that sends a browser's Accept header."""
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": accept}) as session:
        yield session


async def submit(browser: aiohttp.ClientSession, page: aiohttp.ClientResponse, html: str, form: dict[str, str],
                 **kwargs: Any) -> aiohttp.ClientResponse:
    action = _FORM_ACTION.search(html)
    assert action is not None, html[:500]
    return await browser.post(page.url.join(aiohttp.client.URL(action.group(1))), data=form, **kwargs)


async def _to_callback(browser: aiohttp.ClientSession, resp: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
    """Follow the provider's redirects by hand, stopping at a page or at the redirect to Gatehouse's callback."""
    while resp.status in (302, 303) and "/.gatehouse/callback" not in resp.headers["Location"]:
        resp = await browser.get(resp.url.join(aiohttp.client.URL(resp.headers["Location"])), allow_redirects=False)
    return resp


async def log_in(browser: aiohttp.ClientSession, url: str, user: str = "alice", *, follow_callback: bool = True) -> aiohttp.ClientResponse:
    """Drive the provider's login and consent pages; returns the callback's answer, or the redirect to it."""
    page = await browser.get(url)
    html = await page.text()
    assert 'name="login"' in html, html[:300]
    page = await _to_callback(browser, await submit(browser, page, html, {"prompt": "login", "login": user, "password": "any"},
                                                    allow_redirects=False))
    if page.status == 200 and 'name="prompt" value="consent"' in (html := await page.text()):
        page = await _to_callback(browser, await submit(browser, page, html, {"prompt": "consent"}, allow_redirects=False))
    assert "/.gatehouse/callback" in page.headers.get("Location", ""), (page.status, (await page.text())[:300])
    if not follow_callback:
        return page
    return await browser.get(page.headers["Location"])


class TestOidcLogin:
    async def test_full_login_flow(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """A browser without a session goes to the provider, logs in, and comes back with a session to its page."""
        final = await log_in(browser, f"{gatehouse.base}/docs/page?tab=2")
        body = await final.json()

        assert f"{gatehouse.base}/docs/page?tab=2" == str(final.url)
        assert ("alice", "alice@example.test", "/docs/page?tab=2") == (body["subject"], body["email"], body["path_qs"])
        assert ["staff", "a,admins"] == body["groups"]
        assert "gatehouse_login" not in {c.key for c in browser.cookie_jar if c.value}

    async def test_login_redirect_uses_pkce_state_and_nonce(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """The authorization request carries S256 PKCE, state and nonce, and the login cookie is HttpOnly and Lax."""
        resp = await browser.get(f"{gatehouse.base}/x", allow_redirects=False)
        query = parse_qs(urlsplit(resp.headers["Location"]).query)
        cookie = resp.headers["Set-Cookie"]

        assert 302 == resp.status
        assert (["S256"], ["code"]) == (query["code_challenge_method"], query["response_type"])
        assert {"state", "nonce", "code_challenge"} <= set(query)
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie

    async def test_session_cookie_attributes(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """The session cookie is HttpOnly, SameSite=Lax and expiring (not Secure over plain HTTP)."""
        callback = await log_in(browser, f"{gatehouse.base}/", follow_callback=False)

        done = await browser.get(callback.headers["Location"], allow_redirects=False)
        cookies = done.headers.getall("Set-Cookie", [])

        session_cookie = next(c for c in cookies if c.startswith("gatehouse_session="))
        assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie and "Max-Age=3600" in session_cookie

    async def test_logout_hint_cookie_is_sent_only_to_logout(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """The provider's ID token is kept for the logout hint in an HttpOnly cookie scoped to the logout path."""
        callback = await log_in(browser, f"{gatehouse.base}/", follow_callback=False)

        done = await browser.get(callback.headers["Location"], allow_redirects=False)
        hint = next(c for c in done.headers.getall("Set-Cookie", []) if c.startswith("gatehouse_logout="))

        assert "Path=/.gatehouse/logout" in hint and "HttpOnly" in hint and "Max-Age=3600" in hint

    async def test_api_client_gets_problem_json_not_a_redirect(self, gatehouse: Gatehouse) -> None:
        """Without a browser's Accept the answer is a problem+json 401, even with OIDC configured."""
        async with aiohttp.ClientSession() as api:
            resp = await api.get(f"{gatehouse.base}/x", allow_redirects=False, headers={"Accept": "application/json"})
            doc = orjson.loads(await resp.read())

            assert (401, "application/problem+json") == (resp.status, resp.content_type)
            assert ("unauthenticated", "missing", "/.gatehouse/login?return_to=%2Fx") == (doc["code"], doc["reason"], doc["login_url"])

    async def test_session_expires_with_the_clock(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """After the session lifetime the user must log in again."""
        await log_in(browser, f"{gatehouse.base}/")
        gatehouse.clock.advance(seconds=3601)

        after = await browser.get(f"{gatehouse.base}/", allow_redirects=False)

        assert 302 == after.status

    async def test_open_redirect_is_refused(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """An explicit login with an absolute return URL lands on `/` of Gatehouse, never elsewhere."""
        final = await log_in(browser, f"{gatehouse.base}/.gatehouse/login?return_to=//evil.example/x")

        assert f"{gatehouse.base}/" == str(final.url)

    async def test_forged_callback_is_refused(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """A callback whose state does not match this browser's login cookie is refused (login CSRF)."""
        await browser.get(f"{gatehouse.base}/x", allow_redirects=False)

        resp = await browser.get(f"{gatehouse.base}/.gatehouse/callback?code=abc&state={'A' * 43}", allow_redirects=False)

        assert 401 == resp.status
        assert "gatehouse_session" not in {c.key for c in browser.cookie_jar}


class TestCallbackAddress:
    async def test_login_redirect_ignores_the_request_host(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """A request with another Host is still sent to the provider with the configured callback address."""
        resp = await browser.get(f"{gatehouse.base}/x", headers={"Host": "evil.example"}, allow_redirects=False)
        query = parse_qs(urlsplit(resp.headers["Location"]).query)

        assert 302 == resp.status
        assert [f"{gatehouse.base}/.gatehouse/callback"] == query["redirect_uri"]

    def test_oidc_without_external_url_fails_check_config(self, tmp_path: Path) -> None:
        """`gatehouse check-config` refuses OIDC login without `external_url`, naming the key."""
        config = tmp_path / "gatehouse.yaml"
        config.write_text(
            "listeners: [{address: '127.0.0.1:8080'}]\n"
            "identity:\n"
            "  sources: [{kind: session}]\n"
            "  oidc:\n"
            "    discovery_url: https://login.corp.example/.well-known/openid-configuration\n"
            "    client_id: gatehouse\n"
            "    session_key: {value: " + "k" * 40 + "}\n",
            encoding="utf-8",
        )
        out = io.StringIO()

        status = check_config(config, out=out, environ={})

        assert 1 == status
        assert "identity.oidc.external_url: is required with `oidc`" in out.getvalue()


class TestLoginFailures:
    async def test_replayed_callback_shows_a_page(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """A callback used once already gets a sign-in page saying so, with "Sign in again", and no session."""
        callback = await log_in(browser, f"{gatehouse.base}/docs", follow_callback=False)
        await browser.get(callback.headers["Location"], allow_redirects=False)
        browser.cookie_jar.clear(lambda c: c.key == "gatehouse_session")

        replay = await browser.get(callback.headers["Location"], allow_redirects=False)
        html = await replay.text()

        assert (401, "text/html") == (replay.status, replay.content_type)
        assert "This sign-in link is old or was already used" in html
        assert 'href="/.gatehouse/login"' in html and "Sign in again" in html
        assert "gatehouse_session" not in {c.key for c in browser.cookie_jar}

    async def test_old_callback_shows_a_page(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """A callback arriving after the login timed out gets the same page, and API clients a problem document."""
        callback = await log_in(browser, f"{gatehouse.base}/docs", follow_callback=False)
        gatehouse.clock.advance(seconds=601)

        late = await browser.get(callback.headers["Location"], allow_redirects=False, headers={"Accept": "application/json"})
        doc = orjson.loads(await late.read())

        assert (401, "application/problem+json") == (late.status, late.content_type)
        assert ("login-failed", "stale", "/.gatehouse/login") == (doc["code"], doc["reason"], doc["login_url"])

    async def test_cancel_at_provider_shows_a_page(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """Cancelling at the provider (error=access_denied) gets a page saying so, offering to sign in again to the same page."""
        page = await browser.get(f"{gatehouse.base}/docs")
        abort = re.search(r'href="([^"]*/abort)"', await page.text())
        assert abort is not None

        cancelled = await browser.get(page.url.join(aiohttp.client.URL(abort.group(1))))
        html = await cancelled.text()

        assert 401 == cancelled.status
        assert "Sign-in was cancelled" in html
        assert 'href="/.gatehouse/login?return_to=%2Fdocs"' in html

    async def test_wrong_client_secret_shows_a_page(self, start_gatehouse: StartGatehouse, oidc_issuer: str,
                                                    browser: aiohttp.ClientSession) -> None:
        """When the provider refuses Gatehouse's client secret, the browser gets a page saying the provider refused, not JSON."""
        wrong = await start_gatehouse(oidc_issuer, client_secret="not-the-secret-at-all")

        final = await log_in(browser, f"{wrong.base}/docs")
        html = await final.text()

        assert (401, "text/html") == (final.status, final.content_type)
        assert "The identity provider refused to finish the sign-in" in html
        assert "Request id" in html and 'href="/.gatehouse/login?return_to=%2Fdocs"' in html

    async def test_provider_unreachable_at_callback_shows_a_page(self, start_gatehouse: StartGatehouse,
                                                                 browser: aiohttp.ClientSession) -> None:
        """When the provider goes away between login and callback, the browser gets a 503 page saying sign-in is unavailable."""
        with running_provider() as issuer:
            own = await start_gatehouse(issuer)
            callback = await log_in(browser, f"{own.base}/docs", follow_callback=False)

        resp = await browser.get(callback.headers["Location"], allow_redirects=False)
        html = await resp.text()

        assert (503, "5") == (resp.status, resp.headers["Retry-After"])
        assert "Sign-in is not available right now" in html

    async def test_provider_unreachable_at_login_shows_a_page(self, start_gatehouse: StartGatehouse, oidc_issuer: str,
                                                              browser: aiohttp.ClientSession) -> None:
        """A login that cannot start (provider unreachable) gets browsers a 503 page, API clients a problem document."""
        down = await start_gatehouse(oidc_issuer, discovery_url=f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration")

        page = await browser.get(f"{down.base}/docs", allow_redirects=False)
        api = await browser.get(f"{down.base}/.gatehouse/login", allow_redirects=False, headers={"Accept": "application/json"})
        doc = orjson.loads(await api.read())

        assert (503, "text/html") == (page.status, page.content_type)
        assert "Sign-in is not available right now" in await page.text()
        assert (503, "identity-unavailable", "unavailable") == (api.status, doc["code"], doc["reason"])


class TestLogout:
    async def test_logout_ends_the_provider_session(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """Logout sends the browser to the provider's end_session_endpoint with the hint; the next visit must log in again."""
        await log_in(browser, f"{gatehouse.base}/")

        out = await browser.post(f"{gatehouse.base}/.gatehouse/logout", allow_redirects=False)
        query = parse_qs(urlsplit(out.headers["Location"]).query)
        confirm = await browser.get(out.headers["Location"])
        html = await confirm.text()
        xsrf = _XSRF.search(html)
        assert xsrf is not None, html[:500]
        landed = await submit(browser, confirm, html, {"xsrf": xsrf.group(1), "logout": "yes"})
        after = await browser.get(f"{gatehouse.base}/")

        assert 303 == out.status
        assert [f"{gatehouse.base}/.gatehouse/signed-out"] == query["post_logout_redirect_uri"]
        assert {"id_token_hint", "client_id"} <= set(query)
        assert (f"{gatehouse.base}/.gatehouse/signed-out", 200) == (str(landed.url), landed.status)
        assert "You are signed out" in await landed.text()
        assert 'name="login"' in await after.text()

    async def test_logout_forgets_the_session(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """After logout the next request is sent to login again, even before the provider is visited."""
        await log_in(browser, f"{gatehouse.base}/")

        await browser.post(f"{gatehouse.base}/.gatehouse/logout", allow_redirects=False)
        after = await browser.get(f"{gatehouse.base}/", allow_redirects=False)

        assert 302 == after.status
        assert {"gatehouse_session", "gatehouse_logout"}.isdisjoint(c.key for c in browser.cookie_jar if c.value)


@pytest.mark.browser
class TestInChromium:
    async def test_cancel_at_provider(self, gatehouse: Gatehouse, browser_page: Any) -> None:  # noqa: F811
        """A user who cancels at the provider sees Gatehouse's page saying so, and "Sign in again" starts a new login."""
        page = browser_page
        await page.goto(f"{gatehouse.base}/docs")
        await page.click("text=[ Cancel ]")
        await page.wait_for_url(re.compile(r".*/\.gatehouse/callback\?.*"))
        heading = await page.inner_text("h1")
        await screenshot(page, "oidc-cancelled")
        await page.click("text=Sign in again")

        assert "Sign-in was cancelled" == heading
        assert 1 == await page.locator("input[name=login]").count()

    async def test_logout_ends_the_provider_session(self, gatehouse: Gatehouse, browser_page: Any) -> None:  # noqa: F811
        """After signing out, the user sees Gatehouse's signed-out page, and the next visit asks for the password again."""
        page = browser_page
        await page.goto(f"{gatehouse.base}/docs")
        await page.fill("input[name=login]", "alice")
        await page.fill("input[name=password]", "any")
        await page.click("button[type=submit]")
        await page.click("text=Continue")
        await page.wait_for_url(f"{gatehouse.base}/docs")
        await page.goto(f"{gatehouse.base}/.gatehouse/logout")
        await page.click("text=Yes, sign me out")
        await page.wait_for_url(f"{gatehouse.base}/.gatehouse/signed-out")
        signed_out = await page.inner_text("main")
        await screenshot(page, "oidc-signed-out")
        await page.goto(f"{gatehouse.base}/docs")

        assert "You are signed out" in signed_out
        assert 1 == await page.locator("input[name=password]").count()
