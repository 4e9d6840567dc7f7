"""The remediation Markdown subset renders what it should and nothing a policy author could abuse."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.web.views.markdown import render_markdown, safe_href

ALLOWED_TAGS = {"p", "ul", "ol", "li", "strong", "em", "code", "a", "br"}


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def tags_of(markup: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _Collect()
    parser.feed(markup)
    return parser.tags


class TestSubset:
    def test_numbered_steps_become_an_ordered_list(self) -> None:
        """`1.` lines become one <ol> with an <li> per step."""
        html = render_markdown("1. Open settings.\n2. Turn it on.")

        assert "<ol><li>Open settings.</li><li>Turn it on.</li></ol>" == html

    def test_bullets_paragraphs_and_breaks(self) -> None:
        """Blank lines separate paragraphs, single newlines break lines, `-` lines are bullets."""
        html = render_markdown("First line\nsecond line\n\n- a\n- b")

        assert "<p>First line<br>second line</p><ul><li>a</li><li>b</li></ul>" == html

    def test_a_list_may_follow_a_paragraph_without_a_blank_line(self) -> None:
        """A step list directly under an intro line still renders as a list."""
        html = render_markdown("Do this:\n1. Back up.")

        assert "<p>Do this:</p><ol><li>Back up.</li></ol>" == html

    def test_inline_bold_emphasis_and_code(self) -> None:
        """`**b**`, `*e*` and backticks render; code keeps its content literally."""
        html = render_markdown("Click **Turn On…**, *then* run `sudo ufw enable`.")

        assert "<p>Click <strong>Turn On…</strong>, <em>then</em> run <code>sudo ufw enable</code>.</p>" == html

    def test_code_content_is_not_formatted(self) -> None:
        """Markdown inside a code span stays literal (and escaped)."""
        html = render_markdown("`**x** <b>`")

        assert "<p><code>**x** &lt;b&gt;</code></p>" == html

    def test_snake_case_words_are_not_emphasised(self) -> None:
        """Underscores inside words (fact names) are left alone."""
        html = render_markdown("set screen_lock_delay_s low")

        assert "<p>set screen_lock_delay_s low</p>" == html

    @pytest.mark.parametrize(
        "url",
        [
            "https://support.apple.com/en-us/102149",
            "http://intranet.example/it",
            "x-apple.systempreferences:com.apple.preference.security?FileVault",
            "ms-settings:windowsupdate",
        ],
    )
    def test_links_with_allowed_schemes_are_kept(self, url: str) -> None:
        """https, http and the two OS settings schemes become links."""
        html = render_markdown(f"[Open]({url})")

        assert [("p", []), ("a", [("href", url)])] == tags_of(html)

    @pytest.mark.parametrize(
        "url",
        [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox",
            "file:///etc/passwd",
            "windowsdefender://network/",
            "//evil.example/x",
            "/relative/path",
            "https:evil.example",
        ],
    )
    def test_links_with_other_schemes_keep_only_their_text(self, url: str) -> None:
        """Any other scheme (or none) drops the link and keeps the escaped text."""
        html = render_markdown(f"[Open it]({url})")

        assert "<a" not in html
        assert "Open it" in html

    def test_raw_html_is_escaped(self) -> None:
        """HTML in the source is shown as text, never parsed."""
        html = render_markdown('<script>alert(1)</script><img src=x onerror="alert(1)">')

        assert "<script" not in html
        assert "<img" not in html
        assert "&lt;script&gt;" in html

    def test_quotes_in_a_link_cannot_break_out_of_the_attribute(self) -> None:
        """A URL carrying quotes or spaces is refused rather than half-quoted."""
        html = render_markdown('[x](https://a.example/"onmouseover="alert(1))')

        assert "onmouseover=\"" not in html
        assert "<a" not in html


class TestSafeHref:
    def test_control_characters_are_refused(self) -> None:
        """Tabs and newlines hidden in a scheme do not sneak javascript: through."""
        assert None is safe_href("java\tscript:alert(1)")
        assert None is safe_href("https://ok.example/\nx")

    def test_scheme_match_is_case_insensitive(self) -> None:
        """HTTPS in capitals is still https."""
        assert "HTTPS://ok.example/" == safe_href("HTTPS://ok.example/")


@given(st.text(max_size=300))
def test_any_text_renders_only_the_subset(text: str) -> None:
    """Whatever the text, the output holds only the subset's tags, and links only allowed URLs."""
    html = render_markdown(text)

    for tag, attrs in tags_of(html):
        assert tag in ALLOWED_TAGS
        if tag == "a":
            assert len(attrs) == 1 and attrs[0][0] == "href"
            assert safe_href(attrs[0][1] or "") is not None
        else:
            assert [] == attrs
