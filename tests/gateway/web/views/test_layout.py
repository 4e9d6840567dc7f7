"""The page shell, security headers, negotiation and formatting shared by every page."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest

from gateway.web.pages import error_response
from gateway.web.views import render_deny, render_fleet, render_privacy, render_status
from gateway.web.views.layout import (
    BASE_HEADERS, CONTENT_SECURITY_POLICY, format_relative, format_seconds, format_when, negotiate, page,
)
from tests.gateway.web.views import samples

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def all_pages() -> dict[str, str]:
    return {
        "deny": render_deny(samples.deny_view(), accept=BROWSER).text,
        "status": render_status(samples.status_view(), accept=BROWSER).text,
        "privacy": render_privacy(samples.privacy_view()).text,
        "fleet": render_fleet(samples.fleet_view(), accept=BROWSER).text,
    }


class TestShell:
    def test_the_csp_hash_matches_the_inline_stylesheet(self) -> None:
        """The style-src hash is the sha256 of the one <style> element's content; no unsafe-inline."""
        html = page("t", "body")

        style = re.search(r"<style>(.*?)</style>", html, re.S)
        assert style is not None
        digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
        assert f"style-src 'sha256-{digest}'" in CONTENT_SECURITY_POLICY
        assert "unsafe" not in CONTENT_SECURITY_POLICY

    def test_error_pages_send_the_same_headers(self) -> None:
        """The error pages (gateway/web/pages.py) are pages of this shell: the same protective headers, CSP included."""
        response = error_response(BROWSER, status=404, code="no-route")

        assert dict(BASE_HEADERS) == {k: response.headers[k] for k in BASE_HEADERS}

    @pytest.mark.parametrize("name", ["deny", "status", "privacy", "fleet"])
    def test_every_page_is_accessible_and_self_contained(self, name: str) -> None:
        """lang, one h1, headings never skip a level, no scripts, no external URLs, no inline style attributes."""
        html = all_pages()[name]

        levels = [int(n) for n in re.findall(r"<h([1-6])[ >]", html)]
        assert '<html lang="en">' in html
        assert 1 == levels.count(1) and 1 == levels[0]
        assert all(b - a <= 1 for a, b in zip(levels, levels[1:]))
        assert "<script" not in html
        assert " style=" not in html
        assert not re.search(r'(src|href)="(https?:)?//(?!wiki\.example\.com|support\.apple\.com|[a-z]+\.example\.com)',
                             html)

    @pytest.mark.parametrize("name", ["deny", "status", "privacy", "fleet"])
    def test_every_form_field_has_a_label(self, name: str) -> None:
        """Each visible input, select and textarea has an id that a <label for> names."""
        html = all_pages()[name]

        fields = re.findall(r'<(?:input|select|textarea)(?![^>]*type="hidden")[^>]*\bid="([^"]+)"', html)
        unlabelled = re.findall(r'<(?:input|select|textarea)(?![^>]*type="hidden")(?![^>]*\bid=)[^>]*>', html)
        assert [] == unlabelled
        for ident in fields:
            assert f'for="{ident}"' in html


class TestNegotiate:
    @pytest.mark.parametrize(
        ("accept", "expected"),
        [
            (BROWSER, "text/html"),
            ("*/*", "application/json"),
            (None, "application/json"),
            ("text/*", "text/html"),
            ("application/json;q=0, */*", "text/html"),
            ("image/png", "application/json"),
            ("text/html;q=0.2, application/json;q=0.8", "application/json"),
        ],
    )
    def test_best_offer(self, accept: str | None, expected: str) -> None:
        """Quality first, then specificity, then the server's order; nothing acceptable gives the first offer."""
        chosen = negotiate(accept, ("application/json", "text/html"))

        assert expected == chosen


class TestFormatting:
    def test_when_omits_the_current_year(self) -> None:
        """Dates in the current year read `24 Nov 15:00 UTC`; others carry the year."""
        moment = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)

        assert "24 Nov 15:00 UTC" == format_when(moment, now=samples.NOW)
        assert "24 Nov 2026 15:00 UTC" == format_when(moment, now=samples.NOW + timedelta(days=60))

    def test_when_converts_to_utc(self) -> None:
        """An aware time in another zone is shown in UTC."""
        from datetime import timezone

        moment = datetime(2026, 11, 24, 16, 0, tzinfo=timezone(timedelta(hours=1)))

        assert "24 Nov 15:00 UTC" == format_when(moment, now=samples.NOW)

    @pytest.mark.parametrize(
        ("seconds", "expected"),
        [(1, "1 second"), (45, "45 seconds"), (90, "1 minute 30 seconds"), (600, "10 minutes"),
         (3600, "1 hour"), (5400, "1 hour 30 minutes"), (90000, "25 hours"), (3 * 86400, "3 days"),
         (10 * 86400 + 3600, "10 days")],
    )
    def test_durations_in_words(self, seconds: int, expected: str) -> None:
        """Durations use the largest sensible unit."""
        assert expected == format_seconds(seconds)

    def test_relative_times(self) -> None:
        """Past, future and now."""
        assert "3 hours ago" == format_relative(samples.NOW - timedelta(hours=3), now=samples.NOW)
        assert "in 2 days" == format_relative(samples.NOW + timedelta(days=2), now=samples.NOW)
        assert "just now" == format_relative(samples.NOW, now=samples.NOW)
