"""Error pages: content negotiation, escaping, strict CSP."""

from __future__ import annotations

import base64
import hashlib
import re

import orjson
import pytest

from gateway.errors import BadRequestTarget, UpstreamError
from gateway.web.pages import error_response, gateway_error_response, wants_html
from gateway.web.views.layout import BASE_HEADERS


class TestNegotiation:
    @pytest.mark.parametrize(("accept", "expected"), [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
        ("application/problem+json, text/html;q=0.5", False),
        ("text/html;q=0", False),
    ])
    def test_browser_gets_html_and_others_json(self, accept: str, expected: bool) -> None:
        """A browser's Accept gets HTML; API clients, curl and an empty Accept get JSON."""
        assert expected is wants_html(accept)


class TestErrorPages:
    def test_json_problem_document(self) -> None:
        """API clients get application/problem+json with code, status and request id."""
        response = error_response("application/json", status=504, code="upstream-timeout", request_id="r1")

        doc = orjson.loads(response.body)  # type: ignore[arg-type]
        assert "application/problem+json" == response.content_type
        assert (504, "upstream-timeout", "r1") == (doc["status"], doc["code"], doc["request_id"])
        assert "urn:gatehouse:problem:upstream-timeout" == doc["type"]

    def test_html_page_escapes_every_value_and_has_strict_csp(self) -> None:
        """Interpolated values are escaped and the CSP allows no script and no external asset."""
        hostile = BadRequestTarget("<script>alert(1)</script>")

        response = gateway_error_response("text/html", hostile, request_id='"><img src=x>')
        text = response.text or ""

        assert 400 == response.status
        assert "<script>" not in text and "<img" not in text
        assert "&lt;script&gt;" in text
        csp = response.headers["Content-Security-Policy"]
        assert csp.startswith("default-src 'none'")
        assert "script-src" not in csp and "http" not in csp
        assert "nosniff" == response.headers["X-Content-Type-Options"]

    def test_error_page_is_the_one_page_shell(self) -> None:
        """The error page is views/layout.py's shell: its stylesheet matches the CSP hash, its headers are every page's."""
        response = error_response("text/html", status=404, code="no-route")
        page = response.text or ""
        style = re.search(r"<style>(.*?)</style>", page, re.S)

        assert style is not None
        digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
        assert f"'sha256-{digest}'" in response.headers["Content-Security-Policy"]
        assert '<meta name="viewport"' in page and '<header class="bar">' in page
        assert dict(BASE_HEADERS) == {k: response.headers[k] for k in BASE_HEADERS}

    def test_upstream_details_are_not_shown(self) -> None:
        """Only 400 messages are shown; upstream error details stay in the logs."""
        response = gateway_error_response("application/json", UpstreamError("connect", "route `x`: 10.0.0.5 refused", status=502), request_id=None)

        doc = orjson.loads(response.body)  # type: ignore[arg-type]
        assert "10.0.0.5" not in doc["detail"]
        assert "upstream-connect" == doc["code"]
