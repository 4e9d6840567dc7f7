"""The escape-by-default builder never lets a plain string become markup."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.web.views.html import Markup, el, esc, join


def test_text_and_attributes_are_escaped() -> None:
    """Quotes, angle brackets and ampersands are escaped in text and attribute values."""
    html = el("a", '<b>"x"</b> & y', href='"><script>', title="it's")

    assert '<a href="&quot;&gt;&lt;script&gt;" title="it&#x27;s">&lt;b&gt;&quot;x&quot;&lt;/b&gt; &amp; y</a>' == html


def test_markup_passes_through_and_none_is_skipped() -> None:
    """Markup children are kept as built; None and False children and attributes disappear."""
    html = el("p", el("strong", "a"), None, False, "b", hidden=False, open=True, id=None)

    assert "<p open><strong>a</strong>b</p>" == html


def test_void_elements_and_underscored_attribute_names() -> None:
    """Void elements have no closing tag; class_/for_/aria_label map to class/for/aria-label."""
    assert '<input class="x">' == el("input", class_="x")
    assert '<label for="a" aria-label="b">c</label>' == el("label", "c", for_="a", aria_label="b")


@given(st.text())
def test_no_plain_string_produces_a_tag(text: str) -> None:
    """Whatever a device reports, escaping leaves no `<` or unescaped quote."""
    out = join(text, el("span", text, title=text))

    assert isinstance(esc(text), Markup)
    assert "<" not in out.replace("<span", "").replace("</span>", "")
    assert '"' not in out.replace(f'title="{esc(text)}"', "")
