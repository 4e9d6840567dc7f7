"""The shared page shell, security headers, content negotiation and display formatting.

Owns: Rendered, page, negotiate, security headers (CSP with a sha256 hash of the inline
stylesheet), and the date/duration/platform formatters every page uses.
Must not import: aiohttp at module level (``Rendered.response`` imports it lazily), any decision
logic, the clock, files or the network.

``gateway/web/pages.py`` (error pages) has its own narrow single-card layout whose CSP hashes only its
own stylesheet, too small for cards, forms and wide tables; these pages therefore keep their own
shell and stylesheet, but send the same protective headers (a test keeps them equal) and the deny
page negotiates with ``pages.wants_html``. Merging the two shells belongs to whoever owns both.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping, Sequence

from gateway.web.views.html import Child, Markup, el, join
from policy_engine.model import OsFamily

if TYPE_CHECKING:
    from aiohttp import web

HTML = "text/html"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
CSV = "text/csv"

STYLESHEET = """
:root{--fg:#1a1f24;--muted:#4f5963;--bg:#f5f6f8;--card:#fff;--line:#d9dde2;--accent:#0b57d0;--on-accent:#fff;
--bad:#b3261e;--bad-bg:#fdecea;--bad-line:#f3b8b3;--warn:#8a4b00;--warn-bg:#fff4e0;--warn-line:#f5cf8e;
--warn-edge:#d98e04;--info:#0b57d0;--info-bg:#e8f0fe;--info-line:#b7cdf8;--ok:#146c2e;--ok-bg:#e6f4ea;
--ok-line:#a8d5b5;--soft:#eef0f3;--head:#333b44;--field:#fff;--field-line:#8a939c;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#a3adb8;--bg:#0d1117;--card:#161b22;
--line:#30363d;--accent:#6ea8fe;--on-accent:#0d1117;--bad:#ff8a80;--bad-bg:#3a1d1b;--bad-line:#6e2b26;
--warn:#f2c26b;--warn-bg:#33260f;--warn-line:#6b4d12;--warn-edge:#d98e04;--info:#8ab4f8;--info-bg:#172a45;
--info-line:#2d4a77;--ok:#7ee2a0;--ok-bg:#12301d;--ok-line:#235c36;--soft:#21262d;--head:#c9d1d9;
--field:#0d1117;--field-line:#6e7681}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
a{color:var(--accent)}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,textarea:focus-visible{
outline:3px solid #7aa7f7;outline-offset:2px}
code{font:0.9em/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--soft);
padding:0.1em 0.35em;border-radius:4px;overflow-wrap:anywhere}
.skip{position:absolute;left:-999px;top:0;background:var(--card);padding:0.5rem 1rem}
.skip:focus{left:0.5rem;z-index:2}
header.bar{background:#15202b;color:#fff}
header.bar.wide .in{max-width:90rem}
header.bar .in{max-width:60rem;margin:0 auto;padding:0.7rem 1.25rem;display:flex;gap:1rem;
align-items:center;justify-content:space-between;flex-wrap:wrap}
header.bar .brand{font-weight:700;letter-spacing:0.02em;color:#fff;text-decoration:none}
header.bar nav a{color:#d6e2ff;margin-left:1rem;text-decoration:none}
header.bar nav a:hover{text-decoration:underline}
main{max-width:60rem;margin:0 auto;padding:1.5rem 1.25rem 3rem}
main.wide{max-width:90rem}
h1{font-size:1.75rem;line-height:1.25;margin:0.5rem 0 0.75rem}
h2{font-size:1.25rem;margin:2rem 0 0.75rem}
h3{font-size:1.05rem;margin:1.25rem 0 0.5rem}
.card>h2:first-child,.card>h3:first-child{margin-top:0}
h4{font-size:0.95rem;margin:1rem 0 0.25rem}
p{margin:0.5rem 0}
.lead{font-size:1.1rem;color:var(--muted);margin-top:0}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1rem 1.25rem;
margin:0 0 1rem}
.card.bad{border-left:6px solid var(--bad)}
.card.warn{border-left:6px solid var(--warn-edge)}
.card.info{border-left:6px solid var(--info)}
.card.ok{border-left:6px solid var(--ok)}
.compare{margin:0.5rem 0;padding:0.5rem 0.75rem;border-radius:6px;background:var(--bad-bg)}
.warn .compare{background:var(--warn-bg)}
.info .compare{background:var(--info-bg)}
.why{color:var(--muted)}
.deadline{font-weight:600;color:var(--warn)}
.steps ol,.steps ul{padding-left:1.4rem;margin:0.35rem 0}
.steps li{margin:0.2rem 0}
.badge{display:inline-block;font-size:0.8rem;font-weight:600;padding:0.1rem 0.55rem;border-radius:999px;
white-space:nowrap;border:1px solid transparent}
.badge.bad{background:var(--bad-bg);color:var(--bad);border-color:var(--bad-line)}
.badge.warn{background:var(--warn-bg);color:var(--warn);border-color:var(--warn-line)}
.badge.info{background:var(--info-bg);color:var(--info);border-color:var(--info-line)}
.badge.ok{background:var(--ok-bg);color:var(--ok);border-color:var(--ok-line)}
.badge.muted{background:var(--soft);color:var(--muted);border-color:var(--line)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:0.3rem 1.25rem;margin:0}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;overflow-wrap:anywhere}
form{margin:0}
form .actions{margin-top:1rem}
fieldset{border:0;padding:0;margin:0 0 0.5rem;display:flex;flex-wrap:wrap;gap:0 1.5rem}
legend{font-weight:600;padding:0;margin-bottom:0.25rem}
label.check{display:flex;gap:0.45rem;align-items:center;font-weight:400;margin:0.25rem 0}
input[type=checkbox]{width:1.1rem;height:1.1rem;accent-color:var(--accent)}
.actions{display:flex;flex-wrap:wrap;gap:0.75rem;align-items:center}
button,.button{font:inherit;font-weight:600;border-radius:8px;padding:0.6rem 1.1rem;cursor:pointer;
border:1px solid var(--accent);background:var(--accent);color:var(--on-accent);text-decoration:none;display:inline-block}
button.secondary,.button.secondary{background:var(--card);color:var(--accent)}
label{display:block;font-weight:600;margin:0.75rem 0 0.25rem}
.hint{font-size:0.9rem;color:var(--muted);margin:0.2rem 0}
textarea,select,input[type=text],input[type=search]{font:inherit;width:100%;padding:0.5rem 0.6rem;
border:1px solid var(--field-line);border-radius:6px;background:var(--field);color:var(--fg)}
textarea{min-height:6rem;resize:vertical}
form select{max-width:22rem}
.filters select{max-width:none}
.filters{display:grid;grid-template-columns:repeat(auto-fill,minmax(11rem,1fr));gap:0 1rem;align-items:end}
.table-wrap{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:10px}
table{border-collapse:collapse;width:100%;font-size:0.92rem}
th,td{text-align:left;padding:0.55rem 0.75rem;border-bottom:1px solid var(--line);vertical-align:top}
thead th{background:var(--soft);font-size:0.85rem;color:var(--head);white-space:nowrap}
tbody tr:last-child>*{border-bottom:0}
tbody th{font-weight:400}
td ul,ul.plain{margin:0;padding:0;list-style:none}
td li{margin:0 0 0.2rem}
td code,th code{white-space:nowrap}
.col-main{width:34%}
details{margin-top:0.75rem}
summary{cursor:pointer;font-weight:600;color:var(--accent)}
details ul{margin:0.5rem 0 0;padding-left:1.2rem}
.muted{color:var(--muted)}
.small{font-size:0.88rem}
footer.foot{max-width:60rem;margin:0 auto;padding:0 1.25rem 2rem;color:var(--muted);font-size:0.85rem}
footer.foot.wide{max-width:90rem}
@media (max-width:40rem){
body{font-size:15px}
h1{font-size:1.4rem}
main{padding:1rem 0.85rem 2rem}
.card{padding:0.85rem 0.9rem}
dl.facts{grid-template-columns:1fr;gap:0}
dl.facts dd{margin-bottom:0.45rem}
header.bar nav a{margin-left:0;margin-right:1rem}
.actions button,.actions .button{width:100%;text-align:center}
table.stack,table.stack tbody,table.stack tr,table.stack th,table.stack td{display:block;width:auto}
table.stack thead{position:absolute;left:-9999px}
table.stack tr{padding:0.5rem 0;border-bottom:1px solid var(--line)}
table.stack tbody tr:last-child{border-bottom:0}
table.stack th,table.stack td{border:0;padding:0.2rem 0.75rem}
table.stack td[data-label]::before{content:attr(data-label);display:block;font-size:0.8rem;color:var(--muted)}
}
""".strip()

STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLESHEET.encode()).digest()).decode()
"""CSP source for the inline stylesheet; nothing else may style the page."""

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src '{STYLE_HASH}'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

BASE_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }
)
"""Headers every response from these renderers carries, whatever its content type."""

PLATFORM_NAMES: Mapping[OsFamily, str] = MappingProxyType(
    {
        OsFamily.DARWIN: "macOS",
        OsFamily.WINDOWS: "Windows",
        OsFamily.LINUX: "Linux",
        OsFamily.UNKNOWN: "an unknown platform",
    }
)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A finished response as plain data: status, headers (including Content-Type) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        """The media type without parameters."""
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    def response(self) -> web.Response:
        """The aiohttp response for a handler to return."""
        from aiohttp import web

        return web.Response(status=self.status, headers=dict(self.headers), body=self.body)


def respond(status: int, content_type: str, body: str | bytes, extra: Mapping[str, str] | None = None) -> Rendered:
    """A Rendered with the security headers, the content type (UTF-8) and any extra headers."""
    headers = dict(BASE_HEADERS)
    headers["Content-Type"] = f"{content_type}; charset=utf-8"
    if extra:
        headers.update(extra)
    data = body.encode("utf-8") if isinstance(body, str) else body
    return Rendered(status=status, headers=MappingProxyType(headers), body=data)


def _media_ranges(accept: str) -> list[tuple[str, str, float]]:
    ranges: list[tuple[str, str, float]] = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if "/" not in media:
            continue
        kind, _, sub = media.partition("/")
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = max(0.0, min(1.0, float(value)))
                except ValueError:
                    q = 0.0
        ranges.append((kind, sub, q))
    return ranges


def negotiate(accept: str | None, offers: Sequence[str], *, aliases: Mapping[str, str] | None = None) -> str:
    """Pick the offer the Accept header prefers; ties go to the earlier offer.

    An exact match beats ``type/*``, which beats ``*/*`` at the same quality, so a browser
    (``text/html,...,*/*;q=0.8``) gets HTML even when JSON is offered first, while ``*/*``
    alone (curl's default) or no header gets the first offer. ``aliases`` lets an offer also
    match another media type (``application/json`` for ``application/problem+json``). When
    nothing is acceptable the first offer is returned: a denial is never turned into a 406.
    """
    ranges = _media_ranges(accept or "*/*") or [("*", "*", 1.0)]
    extra = aliases or {}
    best: tuple[float, int, int] | None = None
    chosen = offers[0]
    for index, offer in enumerate(offers):
        names = [offer] + [alias for alias, target in extra.items() if target == offer]
        quality, specificity = -1.0, -1
        for name in names:
            kind, _, sub = name.partition("/")
            for r_kind, r_sub, q in ranges:
                if r_kind == kind and r_sub == sub:
                    spec = 3
                elif r_kind == kind and r_sub == "*":
                    spec = 2
                elif r_kind == "*" and r_sub == "*":
                    spec = 1
                else:
                    continue
                if spec > specificity:
                    quality, specificity = q, spec
        if quality <= 0:
            continue
        key = (quality, specificity, -index)
        if best is None or key > best:
            best, chosen = key, offer
    return chosen


NAV = (("/.gatehouse/", "Your devices"), ("/.gatehouse/privacy", "Privacy"))


def page(title: str, body: Child, *, wide: bool = False, nav: Sequence[tuple[str, str]] = NAV,
         footer: Child = None) -> Markup:
    """A whole HTML document: one shell, the inline stylesheet, no scripts, no external assets."""
    links = [el("a", label, href=href) for href, label in nav]
    return join(
        Markup("<!doctype html>"),
        el(
            "html",
            el(
                "head",
                el("meta", charset="utf-8"),
                el("meta", name="viewport", content="width=device-width, initial-scale=1"),
                el("meta", name="referrer", content="no-referrer"),
                el("meta", name="robots", content="noindex, nofollow"),
                el("link", rel="icon", href="data:,"),
                el("title", f"{title} · Gatehouse"),
                el("style", Markup(STYLESHEET)),
            ),
            el(
                "body",
                el("a", "Skip to content", href="#main", class_="skip"),
                el(
                    "header",
                    el(
                        "div",
                        el("a", "Gatehouse", href="/.gatehouse/", class_="brand"),
                        el("nav", links, aria_label="Gatehouse") if links else None,
                        class_="in",
                    ),
                    class_="bar wide" if wide else "bar",
                ),
                el("main", body, id="main", class_="wide" if wide else None),
                el("footer", footer, class_="foot wide" if wide else "foot") if footer else None,
            ),
            lang="en",
        ),
    )


def html_response(status: int, title: str, body: Child, *, wide: bool = False,
                  footer: Child = None, extra: Mapping[str, str] | None = None) -> Rendered:
    """A full page as a Rendered with every security header."""
    return respond(status, HTML, page(title, body, wide=wide, footer=footer), extra)


# --- formatting -----------------------------------------------------------------------------


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC (naive values are taken to be UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_when(moment: datetime, *, now: datetime | None = None) -> str:
    """``24 Nov 15:00 UTC``; the year is added when it differs from ``now``'s (or always without ``now``)."""
    m = as_utc(moment)
    text = f"{m.day} {m:%b}"
    if now is None or as_utc(now).year != m.year:
        text += f" {m.year}"
    return f"{text} {m:%H:%M} UTC"


def time_el(moment: datetime, *, now: datetime | None = None) -> Markup:
    """A ``<time>`` element with the machine-readable instant and the human text."""
    return el("time", format_when(moment, now=now), datetime=as_utc(moment).isoformat())


def _unit(value: int, unit: str) -> str:
    return f"{value} {unit}" if value == 1 else f"{value} {unit}s"


def format_seconds(seconds: float) -> str:
    """A duration in words, largest sensible unit: ``45 seconds``, ``15 minutes``, ``2 hours 30 minutes``, ``3 days``."""
    total = int(round(abs(seconds)))
    if total < 60:
        return _unit(total, "second")
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return _unit(minutes, "minute") + (f" {_unit(secs, 'second')}" if secs and minutes < 5 else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return _unit(hours, "hour") + (f" {_unit(minutes, 'minute')}" if minutes else "")
    days, hours = divmod(hours, 24)
    return _unit(days, "day") + (f" {_unit(hours, 'hour')}" if hours and days < 7 else "")


def format_duration(value: timedelta) -> str:
    """A timedelta in words (see ``format_seconds``)."""
    return format_seconds(value.total_seconds())


def format_relative(moment: datetime, *, now: datetime) -> str:
    """``3 hours ago`` / ``in 2 days`` / ``just now`` relative to ``now``."""
    delta = (as_utc(moment) - as_utc(now)).total_seconds()
    if abs(delta) < 30:
        return "just now"
    words = format_seconds(delta)
    return f"in {words}" if delta > 0 else f"{words} ago"


def platform_name(platform: OsFamily | str) -> str:
    """``macOS`` / ``Windows`` / ``Linux`` for a platform value."""
    try:
        return PLATFORM_NAMES[OsFamily(platform)]
    except ValueError:
        return str(platform)
