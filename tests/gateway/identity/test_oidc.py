"""The built-in OpenID Connect login, end to end against the real `oidc-provider` (npm) from tests/oidc.

Prepare with `npm ci --prefix tests/oidc`. Outside CI the tests skip when Node.js or the package is
missing; in CI (`CI` set) they fail instead.
"""

from __future__ import annotations

import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, UTC
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.conftest import missing_service
from tests.gateway.identity.support import FakeClock, build_app, settings

pytestmark = pytest.mark.oidc

OIDC_DIR = Path(__file__).resolve().parents[2] / "oidc"
_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[str]:
    """A real OpenID provider on a free 127.0.0.1 port for the whole run; yields its issuer URL."""
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


@dataclass
class Gatehouse:
    base: str
    clock: FakeClock


@pytest.fixture
async def gatehouse(oidc_issuer: str) -> AsyncIterator[Gatehouse]:
    """The test app with OIDC login, on a pre-bound socket so its redirect URI can be registered first."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    runner: web.AppRunner | None = None
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{oidc_issuer}/reg", json={
                "redirect_uris": [f"{base}/.gatehouse/callback"], "grant_types": ["authorization_code"],
                "response_types": ["code"], "token_endpoint_auth_method": "client_secret_basic",
            }) as resp:
                assert 201 == resp.status, await resp.text()
                client = await resp.json()
        # The provider signs with its real clock, so the gateway's injected clock starts at the real now.
        clock = FakeClock(datetime.fromtimestamp(int(time.time()), tz=UTC))
        built = build_app(settings({
            "sources": [{"kind": "session"}],
            "oidc": {
                "discovery_url": f"{oidc_issuer}/.well-known/openid-configuration",
                "client_id": client["client_id"], "client_secret": {"value": client["client_secret"]},
                "session_key": {"value": "s" * 40}, "scopes": ["openid", "email", "groups"], "session_lifetime_s": 3600,
            },
        }), clock)
        runner = web.AppRunner(built.app)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        yield Gatehouse(base, clock)
    finally:
        if runner is not None:
            await runner.cleanup()
        sock.close()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A cookie-keeping client that sends browser-like Accept headers."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"}) as session:
        yield session


async def submit(browser: aiohttp.ClientSession, page: aiohttp.ClientResponse, html: str, form: dict[str, str]) -> aiohttp.ClientResponse:
    action = _FORM_ACTION.search(html)
    assert action is not None, html[:500]
    return await browser.post(page.url.join(aiohttp.client.URL(action.group(1))), data=form)


async def log_in(browser: aiohttp.ClientSession, url: str, user: str = "alice") -> aiohttp.ClientResponse:
    """Drive the provider's login and consent pages; returns the final response after the callback."""
    page = await browser.get(url)
    html = await page.text()
    assert "login" in html, html[:300]
    page = await submit(browser, page, html, {"prompt": "login", "login": user, "password": "any"})
    html = await page.text()
    if 'name="prompt" value="consent"' in html:
        page = await submit(browser, page, html, {"prompt": "consent"})
    return page


class TestOidcLogin:
    async def test_full_login_flow(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """A browser without a session goes to the provider, logs in, and comes back with a session to its page."""
        final = await log_in(browser, f"{gatehouse.base}/docs/page?tab=2")
        body = await final.json()

        assert f"{gatehouse.base}/docs/page?tab=2" == str(final.url)
        assert ("alice", "alice@example.test", "session") == (body["subject"], body["email"], body["source"])
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
        seen: list[str] = []

        async def trace(session, ctx, params) -> None:  # type: ignore[no-untyped-def]
            seen.extend(params.response.headers.getall("Set-Cookie", []))

        tracer = aiohttp.TraceConfig()
        tracer.on_request_redirect.append(trace)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"},
                                         trace_configs=[tracer]) as traced:
            await log_in(traced, f"{gatehouse.base}/")

        session_cookie = next(c for c in seen if c.startswith("gatehouse_session="))
        assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie and "Max-Age=3600" in session_cookie

    async def test_api_client_gets_401_not_a_redirect(self, gatehouse: Gatehouse) -> None:
        """Without `Accept: text/html` the answer is a JSON 401, even with OIDC configured."""
        async with aiohttp.ClientSession() as api:
            resp = await api.get(f"{gatehouse.base}/x", allow_redirects=False, headers={"Accept": "application/json"})

            assert (401, "missing") == (resp.status, (await resp.json())["reason"])

    async def test_logout_forgets_the_session(self, gatehouse: Gatehouse, browser: aiohttp.ClientSession) -> None:
        """After logout the next request is sent to login again."""
        await log_in(browser, f"{gatehouse.base}/")

        await browser.post(f"{gatehouse.base}/.gatehouse/logout")
        after = await browser.get(f"{gatehouse.base}/", allow_redirects=False)

        assert 302 == after.status

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
