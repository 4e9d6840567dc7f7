"""The request target, validated and canonicalised once, from the raw request line.

Owns: Target, canonicalise, canonical_path.
Must not import: aiohttp, app, gateway.gate.admission (pure functions over strings; raises BadRequestTarget).

Routing decides on one canonical path, and anything an upstream could read differently from
Gatehouse is REFUSED with 400 (never guessed at, never "routed as most sensitive": refusing is the
simplest rule that cannot send a request on as a less sensitive tier). The input is the raw target
(``request.raw_path``), never aiohttp's decoded ``request.path``.

Refused (400 ``bad-request-target``):

- a target that is not origin-form (``/path?query``) or absolute-form ``http(s)://authority/path``;
  asterisk-form and authority-form (CONNECT) included;
- absolute-form whose authority differs from ``Host`` (case-insensitively), or carries userinfo;
- ``Host`` missing, repeated, empty, carrying userinfo (``@``), a trailing dot, or any character
  that is not a letter, digit, ``-``, ``_``, ``.`` (or an ``[IPv6]`` literal), with an optional port;
- any byte outside printable ASCII anywhere in the target (control characters, NUL, space, DEL,
  raw UTF-8); a fragment (``#``);
- in the path: a backslash, a ``;`` (path parameters: Tomcat/Spring read ``/a;x/b`` as ``/a/b``),
  and the characters RFC 3986 does not allow in a path (``"<>[]^`{|}``);
- in the path: an encoded ``/``, ``\\`` or ``.`` (``%2F``, ``%5C``, ``%2E``); an encoded control
  character (``%00``–``%1F``, ``%7F``); a ``%`` not followed by two hex digits; double encoding (``%25``
  followed by two hex digits, also when those digits were themselves encoded); percent-encoded bytes
  that are not valid UTF-8 (overlong forms, surrogates, truncated sequences); encoded characters whose
  Unicode compatibility form contains ASCII (``%EF%BC%8F``, the fullwidth solidus, reads as ``/`` to
  an upstream that applies NFKC).
- in a path segment, spellings that Windows, IIS and .NET read as another name: a trailing dot or
  space (``/secure./x`` and ``/secure%20/x`` are ``/secure/x`` there), an NTFS stream suffix
  (``:$``, as in ``::$DATA`` or ``::$INDEX_ALLOCATION``, also encoded), and an 8.3 short name (up to
  six characters, ``~`` and a digit: ``SECURE~1``), checked before dot segments are removed.

Letter case is the route table's concern: a path that matches a longer prefix only when case is
ignored is refused there (``routing.RouteTable.match``).

Canonical form (``Target.path``, used for routing): percent-encoded *unreserved* characters
(``A-Z a-z 0-9 - . _ ~``) are decoded, the hex digits of every remaining escape are upper-cased,
dot segments (``.``, ``..``) are removed as in RFC 3986 §5.2.4 (``..`` above the root stays at the
root), and repeated slashes collapse to one. A trailing slash is kept (``/a/`` stays ``/a/``).

What the upstream receives (``Target.forward_target``): for a target that is already in canonical
structure (no dot segments, no repeated slashes: every browser and curl request) this is the raw path
byte for byte, not re-encoded, and the raw query untouched, which is what RFC 9112 §3.2 asks of a
proxy. A target WITH dot segments or repeated slashes is forwarded with the structure Gatehouse routed
on (each surviving segment still spelled exactly as the client sent it), because forwarding
``/public/../admin`` literally would let an upstream that does not normalise read a path that
Gatehouse did not route on. The query string is never parsed, decoded or logged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from gateway.errors import BadRequestTarget

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_CHARS = _UNRESERVED | frozenset("!$&'()*+,=:@/%")
_HEX = frozenset("0123456789abcdefABCDEF")
_REFUSED_ESCAPES = {0x2F: "an encoded slash (`%2F`)", 0x5C: "an encoded backslash (`%5C`)", 0x2E: "an encoded dot (`%2E`)"}
_HOST = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")
_PORT = re.compile(r":[0-9]{1,5}$")
_SCHEME = re.compile(r"(?i)(https?)://")
_DOUBLE_ENCODED = re.compile(r"%25[0-9A-Fa-f]{2}")
_MAX_TARGET = 8192
# Fast path: an origin-form target whose path is already canonical and needs no decoding: segments
# of unescaped path characters other than `~` and `:`, none empty and none starting or ending with a
# dot (so no `.`/`..` segment, no trailing dot), an optional trailing slash, and a query of printable
# ASCII without `#`. Anything else takes the full checks below, which give the same answer for these targets.
_PLAIN_TARGET = re.compile(
    r"((?:/[A-Za-z0-9_!$&'()*+,=@-](?:[A-Za-z0-9._!$&'()*+,=@-]*[A-Za-z0-9_!$&'()*+,=@-])?)*/?)(?:\?([\x21\x22\x24-\x7e]*))?"
)
_SHORT_NAME = re.compile(r"[^.~]{0,6}~[0-9]")


@dataclass(frozen=True, slots=True)
class Target:
    """A validated request target: host, canonical path for routing, and what goes upstream."""

    host: str
    """The Host header, lower-cased, with its port if one was sent."""
    path: str
    """Canonical path, used for routing and logs."""
    forward_path: str
    """Path sent upstream: raw as sent when the structure was canonical already."""
    query: str | None
    """Raw query after ``?`` (None when the target had no ``?``); never decoded."""

    @property
    def hostname(self) -> str:
        """The host without its port."""
        if self.host.startswith("["):
            return self.host.partition("]")[0] + "]"
        return self.host.rpartition(":")[0] if ":" in self.host else self.host

    @property
    def forward_target(self) -> str:
        """Path and query exactly as sent to the upstream."""
        return self.forward_path if self.query is None else f"{self.forward_path}?{self.query}"


def _refuse(what: str) -> BadRequestTarget:
    return BadRequestTarget(f"the request target has {what}; send a plain, canonical path")


@lru_cache(maxsize=1024)  # a pure function of the header value; refusals raise and are not kept
def _check_host(value: str) -> str:
    host = value.strip().lower()
    if not host:
        raise BadRequestTarget("the `Host` header is empty; send the name of the service")
    if "@" in host:
        raise BadRequestTarget("the `Host` header carries user information (`@`); send only the host name")
    name = host if host.endswith("]") else _PORT.sub("", host)
    if name.endswith("."):
        raise BadRequestTarget("the `Host` header ends with a dot; send the host name without the trailing dot")
    if not _HOST.fullmatch(host):
        raise BadRequestTarget("the `Host` header is not a host name; send e.g. `wiki.corp.example`")
    return host


def _split_target(raw: str, host: str) -> tuple[str, str | None]:
    """Split a raw target into (raw path, raw query) after form and character checks."""
    if len(raw) > _MAX_TARGET:
        raise _refuse("more than 8192 characters")
    for ch in raw:
        if not "\x21" <= ch <= "\x7e":
            raise _refuse("a control, space or non-ASCII character")
    if "#" in raw:
        raise _refuse("a fragment (`#`)")
    if not raw.startswith("/"):
        scheme = _SCHEME.match(raw)
        if scheme is None:
            raise _refuse("neither an absolute path nor an http(s) URL")
        rest = raw[scheme.end():]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        authority, raw = rest[:cut], rest[cut:]
        if "@" in authority:
            raise _refuse("user information (`@`) in its authority")
        if authority.lower() != host:
            raise _refuse("an authority that differs from the `Host` header")
        if not raw.startswith("/"):
            raw = "/" + raw
    path, sep, query = raw.partition("?")
    return path, (query if sep else None)


def _decode_segment(raw_segment: str) -> str:
    """Canonical spelling of one raw path segment (no ``/`` inside).

    Raises:
        BadRequestTarget: the segment is ambiguous (see the module docstring).
    """
    out: list[str] = []
    pending: bytearray = bytearray()  # a run of escaped non-ASCII bytes, validated as UTF-8

    def flush() -> None:
        if not pending:
            return
        try:
            text = pending.decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise _refuse("percent-encoded bytes that are not valid UTF-8") from None
        for ch in text:
            folded = unicodedata.normalize("NFKC", ch)
            if folded != ch and any(c < "\x80" for c in folded):
                raise _refuse("an encoded character that some servers read as ASCII")
        out.append("".join(f"%{b:02X}" for b in pending))
        pending.clear()

    i, n = 0, len(raw_segment)
    while i < n:
        ch = raw_segment[i]
        if ch == "%":
            hex2 = raw_segment[i + 1:i + 3]
            if len(hex2) != 2 or not set(hex2) <= _HEX:
                raise _refuse("a `%` that is not followed by two hex digits")
            byte = int(hex2, 16)
            i += 3
            if byte >= 0x80:
                pending.append(byte)
                continue
            flush()
            if byte in _REFUSED_ESCAPES:
                raise _refuse(_REFUSED_ESCAPES[byte])
            if byte < 0x20 or byte == 0x7F:
                raise _refuse("an encoded control character")
            decoded = chr(byte)
            out.append(decoded if decoded in _UNRESERVED else f"%{byte:02X}")
            continue
        flush()
        if ch == "\\":
            raise _refuse("a backslash")
        if ch == ";":
            raise _refuse("a `;` path parameter")
        if ch not in _PATH_CHARS:
            raise _refuse(f"a `{ch}` in its path")
        out.append(ch)
        i += 1
    flush()
    segment = "".join(out)
    if _DOUBLE_ENCODED.search(segment):
        raise _refuse("a double-encoded character (`%25` followed by hex digits)")
    return segment


def _refuse_windows_spellings(segment: str) -> None:
    """Refuse a canonical segment that Windows, IIS or .NET read as another name (see the module docstring).

    Raises:
        BadRequestTarget: the segment ends in a dot or space, names an NTFS stream or is an 8.3 short name.
    """
    plain = segment.replace("%20", " ").replace("%3A", ":").replace("%24", "$") if "%" in segment else segment
    if plain.endswith((".", " ")):
        raise _refuse("a path segment ending in a dot or space (Windows servers drop it: `/secure./` reads as `/secure/`)")
    if ":$" in plain:
        raise _refuse("an NTFS stream name in a segment (`::$DATA`)")
    if _SHORT_NAME.match(plain):
        raise _refuse("a segment shaped like an 8.3 short name (`SECURE~1`)")


def _canonical(raw_path: str) -> tuple[str, str]:
    """Return (canonical path, forward path) for a raw absolute path."""
    if not raw_path.startswith("/"):
        raise _refuse("a path that does not start with `/`")
    raw_segments = raw_path[1:].split("/")
    kept: list[tuple[str, str]] = []
    trailing = False
    restructured = False
    last = len(raw_segments) - 1
    for index, raw_segment in enumerate(raw_segments):
        segment = _decode_segment(raw_segment)
        trailing = index == last and segment in ("", ".", "..")
        if segment in ("", ".", ".."):
            if index != last or segment != "":
                restructured = True
            if segment == ".." and kept:
                kept.pop()
            continue
        _refuse_windows_spellings(segment)
        kept.append((segment, raw_segment))
    path = "/" + "/".join(s for s, _ in kept)
    forward = "/" + "/".join(r for _, r in kept)
    if trailing and kept:
        path += "/"
        forward += "/"
    if not restructured:
        forward = raw_path
    return path, forward


def canonical_path(raw_path: str) -> str:
    """The canonical form of a raw absolute path (no query).

    Raises:
        BadRequestTarget: the path is ambiguous or malformed.
    """
    for ch in raw_path:
        if not "\x21" <= ch <= "\x7e":
            raise _refuse("a control, space or non-ASCII character")
    return _canonical(raw_path)[0]


def canonicalise(raw_target: str, host_headers: Sequence[str]) -> Target:
    """Validate the raw request target and Host header(s) and canonicalise the path.

    Raises:
        BadRequestTarget: the target or host is ambiguous or malformed (see the module docstring).
    """
    if len(host_headers) != 1:
        if not host_headers:
            raise BadRequestTarget("the request has no `Host` header; send the name of the service")
        raise BadRequestTarget("the request has more than one `Host` header; send exactly one")
    host = _check_host(host_headers[0])
    if len(raw_target) <= _MAX_TARGET and (plain := _PLAIN_TARGET.fullmatch(raw_target)) is not None and plain.group(1):
        path = plain.group(1)
        return Target(host=host, path=path, forward_path=path, query=plain.group(2))
    raw_path, query = _split_target(raw_target, host)
    path, forward = _canonical(raw_path)
    return Target(host=host, path=path, forward_path=forward, query=query)
