"""A deliberately tiny, safe Markdown subset for remediation steps and configurable help texts.

Owns: render_markdown, safe_href, ALLOWED_SCHEMES.
Must not import: aiohttp or any other gateway module; standard library and gateway.web.views.html only.

Supported: paragraphs (blank-line separated; single newlines become ``<br>``), bulleted lists
(``-``/``*``/``+``), numbered lists (``1.``), ``**bold**``, ``*emphasis*``/``_emphasis_``,
```code``` and ``[text](url)`` links whose scheme is one of ``ALLOWED_SCHEMES``. Everything else,
including raw HTML, is shown as escaped text; a link with any other scheme keeps only its text.
"""

from __future__ import annotations

import re

from gateway.web.views.html import Markup, el, esc, join

ALLOWED_SCHEMES = ("https", "http", "x-apple.systempreferences", "ms-settings")
"""Link schemes the pages will emit; the two OS-settings schemes open the right settings pane."""

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_UNSAFE_URL_CHAR = re.compile(r"[\x00-\x20\x7f-\x9f\"'<>\\`]")
_INLINE = re.compile(
    r"(?P<code>`[^`\n]+`)"
    r"|(?P<link>\[(?P<text>[^\[\]\n]+)\]\((?P<url>[^()\s]+(?:\([^()\s]*\)[^()\s]*)*)\))"
    r"|(?P<strong>\*\*(?P<strong_body>[^*\n](?:.*?[^*\n])?)\*\*)"
    r"|(?P<em>(?<![\w*])\*(?P<em_body>[^*\s](?:[^*\n]*?[^*\s])?)\*(?![\w*])"
    r"|(?<![\w_])_(?P<em2_body>[^_\s](?:[^_\n]*?[^_\s])?)_(?![\w_]))"
)
_BULLET = re.compile(r"[-*+]\s+(.*)")
_NUMBER = re.compile(r"\d{1,3}[.)]\s+(.*)")


def safe_href(url: str) -> str | None:
    """The URL if a page may link to it (allowed scheme, no spaces, quotes or controls), else None."""
    if not url or _UNSAFE_URL_CHAR.search(url):
        return None
    match = _SCHEME.match(url)
    if match is None:
        return None
    scheme = match.group(1).lower()
    if scheme not in ALLOWED_SCHEMES:
        return None
    if scheme in ("http", "https") and not url[match.end() :].startswith("//"):
        return None
    return url


def render_inline(text: str) -> Markup:
    """Inline Markdown (code, links, bold, emphasis) in one line of text, escaped."""
    out: list[Markup] = []
    pos = 0
    for match in _INLINE.finditer(text):
        out.append(esc(text[pos : match.start()]))
        pos = match.end()
        if match.group("code"):
            out.append(el("code", match.group("code")[1:-1]))
        elif match.group("link"):
            label = render_inline(match.group("text"))
            href = safe_href(match.group("url"))
            out.append(el("a", label, href=href) if href else label)
        elif match.group("strong"):
            out.append(el("strong", render_inline(match.group("strong_body"))))
        else:
            body = match.group("em_body") or match.group("em2_body") or ""
            out.append(el("em", render_inline(body)))
    out.append(esc(text[pos:]))
    return join(out)


def _lines(lines: list[str]) -> Markup:
    parts: list[Markup] = []
    for i, line in enumerate(lines):
        if i:
            parts.append(Markup("<br>"))
        parts.append(render_inline(line))
    return join(parts)


def render_markdown(text: str) -> Markup:
    """Render the safe Markdown subset to HTML; never emits markup the text did not ask for."""
    blocks: list[Markup] = []
    paragraph: list[str] = []
    items: list[list[str]] = []
    list_tag = ""

    def flush_paragraph() -> None:
        if paragraph:
            blocks.append(el("p", _lines(paragraph)))
            paragraph.clear()

    def flush_list() -> None:
        nonlocal list_tag
        if items:
            blocks.append(el(list_tag, [el("li", _lines(item)) for item in items]))
            items.clear()
        list_tag = ""

    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip()
        if not line:
            flush_paragraph()
            flush_list()
            continue
        bullet = _BULLET.fullmatch(line)
        number = None if bullet else _NUMBER.fullmatch(line)
        if bullet or number:
            tag = "ul" if bullet else "ol"
            flush_paragraph()
            if list_tag and list_tag != tag:
                flush_list()
            list_tag = tag
            items.append([(bullet or number).group(1)])  # type: ignore[union-attr]
        elif items and raw[:1] in (" ", "\t"):
            items[-1].append(line)
        else:
            flush_list()
            paragraph.append(line)
    flush_paragraph()
    flush_list()
    return join(blocks)
