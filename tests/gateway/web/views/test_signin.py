"""The sign-in problem and signed-out renderers: every reason has words, nothing a request sends becomes markup."""

from __future__ import annotations

import orjson

from gateway.identity.errors import AuthReason, LoginFailure
from gateway.web.views.signin import PROBLEM_CODES, SignInProblem, render_sign_in_problem, render_signed_out

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class TestSignInProblem:
    def test_every_reason_has_a_page(self) -> None:
        """Each public auth reason and each login failure has its own title and explanation."""
        reasons = {r.public for r in AuthReason} | {f.value for f in LoginFailure}

        assert set() == reasons - PROBLEM_CODES

    def test_provider_error_is_shown_only_when_plain(self) -> None:
        """The provider's error code appears when it is a plain token; markup in it never reaches the page."""
        plain = SignInProblem(401, "login-failed", "provider-error", login_url="/.gatehouse/login", provider_error="login_required")
        hostile = SignInProblem(401, "login-failed", "provider-error", provider_error='<script>alert(1)</script>')

        assert "<code>login_required</code>" in render_sign_in_problem(plain, accept=BROWSER).text
        assert "script" not in render_sign_in_problem(hostile, accept=BROWSER).text

    def test_api_clients_get_problem_json(self) -> None:
        """Without a browser's Accept the answer is an RFC 9457 document with the reason and the login address."""
        problem = SignInProblem(401, "login-failed", "stale", login_url="/.gatehouse/login", request_id="r-1")

        rendered = render_sign_in_problem(problem, accept="application/json", extra={"WWW-Authenticate": 'Bearer realm="gatehouse"'})
        doc = orjson.loads(rendered.body)

        assert ("application/problem+json", 401) == (rendered.content_type, rendered.status)
        assert ("urn:gatehouse:problem:login-failed", "stale", "/.gatehouse/login", "r-1") == (
            doc["type"], doc["reason"], doc["login_url"], doc["request_id"])
        assert 'Bearer realm="gatehouse"' == rendered.headers["WWW-Authenticate"]


class TestSignedOut:
    def test_warns_when_the_provider_may_remember_the_user(self) -> None:
        """Without a provider logout the page says the provider may still remember the user."""
        text = render_signed_out(login_url="/.gatehouse/login", provider_ended=False, accept=BROWSER).text

        assert "may still remember you" in text and 'href="/.gatehouse/login"' in text
