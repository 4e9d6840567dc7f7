"""The proxy's rules, written once: request header rules, upstream error kinds and their texts.

Owns: header rules (hop-by-hop, X-Forwarded-*/Forwarded, identity-header stripping and injection:
``upstream_header_lines``), the request id rule (``choose_request_id``, ``new_request_id``), SERVER_NAME, HOP_BY_HOP (also what the lane drops from responses), upstream_error
(the one text per upstream failure kind), CLIENT_CLOSED_REQUEST, peer_is_trusted, Exchange (the
accounting of a request to Gatehouse's own endpoints).
Must not import: app, gateway.gate.admission, the lane (the lane applies these rules; see ``gateway.proxy.lane``
for framing and timeouts, ``gateway.proxy.limits`` for the limits on upstream responses).

Headers sent upstream (every incoming name is compared *folded*: lower-cased, with ``_`` and ``.``
read as ``-``, because CGI/WSGI, PHP and several Node and Ruby servers fold them together, so
``X_Gatehouse_User`` or ``x.forwarded.for`` must be treated as the header they alias):

- hop-by-hop headers (Connection, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade) and
  every header named in Connection are removed, in both directions; ``Expect`` is answered by
  Gatehouse and not forwarded;
- every ``X-Gatehouse-*`` header from the client, every name Gatehouse injects, and every name in
  ``strip`` (configured assertion headers, and the user's credential header unless
  ``identity.forward_credentials``) is removed, also when named in Connection; then ``inject`` is added;
- headers that make an upstream read another URL or method than the one Gatehouse routed and
  decided on are removed from every client, trusted proxies included: ``X-Original-URL``,
  ``X-Original-URI``, ``X-Rewrite-URL``, ``X-Override-URL``, ``X-HTTP-Method-Override``,
  ``X-HTTP-Method``, ``X-Method-Override``; so are ``X-Real-IP`` and ``X-Request-Id``;
- the forwarding family (``Forwarded``, every ``X-Forwarded-*``, ``Front-End-Https``,
  ``X-Url-Scheme``) is removed unless the peer address is in ``server.trusted_proxies``; from a
  trusted proxy it is kept only in its canonical spelling (no proxy writes ``X_Forwarded_For``);
- the cookies named in ``drop_cookies`` (Gatehouse's session and login cookies; token cookies unless
  ``identity.forward_credentials``) are removed from ``Cookie``, the header dropped when none is left;
- ``Host`` is the client's (so upstreams build correct links); ``X-Forwarded-For``/``-Proto``/``-Host``
  and ``Forwarded`` (RFC 7239) are set by Gatehouse: a trusted proxy's values are kept and appended
  to, anyone else's replaced;
- ``X-Request-Id`` is the request's id (the middleware keeps a trusted caller's, else generates one).

Upstream failures have three kinds, each with one status and one text (``upstream_error``):
``connect`` (502: no connection within the route's ``connect_timeout_s``, or refused), ``timeout``
(504: no upstream progress for ``read_timeout_s`` while Gatehouse could read) and ``protocol`` (502:
a malformed or over-limit response, or the connection broke off). A client that goes away before its
response is complete is logged and counted as 499 (``CLIENT_CLOSED_REQUEST``), never as an upstream
error or a 5xx.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import structlog
from aiohttp import web

from gateway.errors import UpstreamError
from gateway.metrics import RequestTimer
from gateway.proxy.routing import Route
from gateway.proxy.limits import HeadTooLarge

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
_MERGED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"})
"""Forwarding headers Gatehouse sets itself: a trusted proxy's values are appended to, anyone else's replaced."""
_FORWARDING_FAMILY = _MERGED | {"front-end-https", "x-url-scheme"}
_FORWARDING_PREFIX = "x-forwarded-"
"""With _FORWARDING_FAMILY: what a client may say about the hops before Gatehouse; believed from trusted proxies only."""
_NEVER_FROM_CLIENTS = frozenset({
    "x-request-id", "x-real-ip", "x-original-url", "x-original-uri", "x-rewrite-url", "x-override-url",
    "x-http-method-override", "x-http-method", "x-method-override",
})
"""Removed from every client, trusted proxies included: Gatehouse sets the request id, and routes and
decides on the request line, so nothing may make the upstream read another URL or method."""
IDENTITY_PREFIX = "x-gatehouse-"

_log = structlog.get_logger("gateway.proxy")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class Exchange:
    """What one request did: its route and tier once known, bytes moved, the upstream's status, its timing points."""

    timer: RequestTimer = field(default_factory=RequestTimer)
    """Started when the request reaches the middleware (its head has been read)."""
    route: str | None = None
    tier: str | None = None
    upstream_status: int | None = None
    bytes_in: int = 0
    bytes_out: int = 0


def peer_is_trusted(remote: str | None, networks: Collection[Network]) -> bool:
    """True when the peer address lies in one of the trusted proxy networks."""
    if not remote or not networks:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    return any(address in net for net in networks)


def _quote_node(address: str) -> str:
    return f'"[{address}]"' if ":" in address else address


_FOLD = bytes.maketrans(b"_.", b"--")
"""Header-name folding (after lower-casing): ``_`` and ``.`` read as ``-``, as many upstream stacks do."""


def _fold(name: bytes) -> bytes:
    return name.lower().translate(_FOLD)


_DROPPED_B = frozenset(name.encode() for name in HOP_BY_HOP | _NEVER_FROM_CLIENTS | {"expect"})
_DROPPED_PREFIXES_B = (b"proxy-", IDENTITY_PREFIX.encode())
_FORWARDING_B = frozenset(name.encode() for name in _FORWARDING_FAMILY)
_FORWARDING_PREFIX_B = _FORWARDING_PREFIX.encode()
_MERGED_B = frozenset(name.encode() for name in _MERGED)


@lru_cache(maxsize=64)
def _lowered(names: frozenset[str]) -> frozenset[bytes]:
    return frozenset(name.lower().encode() for name in names)


@lru_cache(maxsize=64)
def _folded(names: frozenset[str] | tuple[str, ...]) -> frozenset[bytes]:
    return frozenset(_fold(name.encode("utf-8", "surrogateescape")) for name in names)


_PLAIN, _DROP, _FORWARDING, _FORWARDING_MISSPELT, _MERGED_KIND, _COOKIE = range(6)
"""What a header name is to the rules, whatever the request (``_name_kind``)."""
_NAMES_MAX = 4096
"""Header names whose folding and kind are kept (``_NAMES``) before the memo starts over."""
_NAME_KEPT_BYTES = 64
"""Longer names are classified every time, never kept (the memo stays under 4096 x 64 bytes of names)."""
_NAMES: dict[bytes, tuple[bytes, int]] = {}
"""Header name as sent -> (folded name, kind): clients send the same few dozen names on every request."""


def _name_kind(name: bytes) -> tuple[bytes, int]:
    """(folded name, kind) of a header name as sent, remembered in ``_NAMES``."""
    lower = name.lower()
    folded = lower.translate(_FOLD)
    if folded in _DROPPED_B or folded.startswith(_DROPPED_PREFIXES_B):
        kind = _DROP
    elif folded in _FORWARDING_B or folded.startswith(_FORWARDING_PREFIX_B):
        kind = _FORWARDING_MISSPELT if folded != lower else _MERGED_KIND if folded in _MERGED_B else _FORWARDING
    elif lower == b"cookie":
        kind = _COOKIE
    else:
        kind = _PLAIN
    found = (folded, kind)
    if len(name) <= _NAME_KEPT_BYTES:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[name] = found
    return found


@lru_cache(maxsize=64)
def _injected_outside_prefixes(names: tuple[str, ...]) -> frozenset[bytes]:
    """The folded injected names that the reserved prefixes do not already drop (usually none)."""
    return frozenset(name for name in _folded(names) if not name.startswith(_DROPPED_PREFIXES_B))


@lru_cache(maxsize=1024)
def _forwarding_block(node: str, scheme: str, host: str) -> bytes:
    """Gatehouse's own forwarding headers for a request from an untrusted peer (nothing of the client's kept)."""
    return (
        f"X-Forwarded-For: {node}\r\nX-Forwarded-Proto: {scheme}\r\nX-Forwarded-Host: {host}\r\n"
        f"Forwarded: for={_quote_node(node)};proto={scheme};host=\"{host}\"\r\n"
    ).encode("utf-8", "surrogateescape")


def upstream_header_lines(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    peer: str | None,
    trusted: bool,
    scheme: str,
    host: str,
    request_id: str,
    inject: Mapping[str, str] | None = None,
    strip: Collection[str] = (),
    drop_cookies: Collection[str] = (),
) -> list[bytes]:
    """The header lines to send upstream for a request's raw headers (see the module docstring), in pieces of whole lines (``b"Name: value\\r\\n"``).

    The one implementation of the rules; the lane writes the lines as they are. What a header name is to the rules
    (``_name_kind``) and an untrusted peer's forwarding lines are remembered, not worked out again
    for every request.
    """
    stripped = _folded(strip if isinstance(strip, frozenset) else frozenset(strip)) if strip else ()
    injected = _injected_outside_prefixes(tuple(inject)) if inject else ()
    cookies = _lowered(drop_cookies if isinstance(drop_cookies, frozenset) else frozenset(drop_cookies)) if drop_cookies else ()
    names = _NAMES
    prior: dict[bytes, list[bytes]] = {}
    out: list[bytes] = []
    kept: list[bytes] = []
    """The folded name of each line in ``out``, for the names listed in Connection."""
    connection: list[bytes] = []
    for name, value in raw:
        folded, kind = names.get(name) or _name_kind(name)
        if kind == _DROP:
            if folded == b"connection":
                connection.append(value)
            continue
        if folded in stripped or (injected and folded in injected):
            continue
        if kind == _PLAIN:
            pass
        elif kind == _COOKIE:
            if cookies:
                value = _without_cookies(value, cookies)
                if not value:
                    continue
        elif not trusted or kind == _FORWARDING_MISSPELT:
            continue
        elif kind == _MERGED_KIND:
            prior.setdefault(folded, []).append(value)
            continue
        out.append(name + b": " + value + b"\r\n")
        kept.append(folded)
    if connection:
        named = frozenset(_fold(t.strip()) for v in connection for t in v.split(b",")) - {b""}
        if named:
            out = [line for line, folded in zip(out, kept) if folded not in named]
            prior = {folded: values for folded, values in prior.items() if folded not in named}
    node = peer or "unknown"
    if trusted:
        ours = f"for={_quote_node(node)};proto={scheme};host=\"{host}\""
        prior_for = ", ".join(v.decode("utf-8", "surrogateescape") for v in prior.get(b"x-forwarded-for", ()))
        prior_fwd = ", ".join(v.decode("utf-8", "surrogateescape") for v in prior.get(b"forwarded", ()))
        proto = prior[b"x-forwarded-proto"][0].decode("utf-8", "surrogateescape") if b"x-forwarded-proto" in prior else scheme
        fwd_host = prior[b"x-forwarded-host"][0].decode("utf-8", "surrogateescape") if b"x-forwarded-host" in prior else host
        forwarded_for = f"{prior_for}, {node}" if prior_for else node
        forwarded = f"{prior_fwd}, {ours}" if prior_fwd else ours
        out.append((
            f"X-Forwarded-For: {forwarded_for}\r\nX-Forwarded-Proto: {proto}\r\nX-Forwarded-Host: {fwd_host}\r\n"
            f"Forwarded: {forwarded}\r\n"
        ).encode("utf-8", "surrogateescape"))
    else:
        out.append(_forwarding_block(node, scheme, host))
    tail = f"X-Request-Id: {request_id}\r\n"
    if inject:
        tail += "".join([f"{name}: {value}\r\n" for name, value in inject.items()])
    out.append(tail.encode("utf-8", "surrogateescape"))
    return out


def _without_cookies(header: bytes, names: frozenset[bytes]) -> bytes:
    kept = [part.strip() for part in header.split(b";") if part.strip() and part.strip().partition(b"=")[0].strip() not in names]
    return b"; ".join(kept)


def without_cookies(header: str, names: Collection[str]) -> str:
    """A `Cookie` header value without the cookies called ``names`` (the others kept in order)."""
    encoded = _without_cookies(header.encode("utf-8", "surrogateescape"), frozenset(n.encode() for n in names))
    return encoded.decode("utf-8", "surrogateescape")


_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_ID_BATCH = 256
_ids: list[str] = []


def new_request_id() -> str:
    """A fresh random request id (32 hex characters, 128 random bits from ``os.urandom``).

    Drawn 256 at a time: one ``getrandom`` call per 256 requests instead of one each (on some
    virtual machines the call alone cost more than the rest of a proxied request's identity work).
    """
    if not _ids:
        blob = os.urandom(16 * _ID_BATCH).hex()
        _ids.extend(blob[i:i + 32] for i in range(0, len(blob), 32))
    return _ids.pop()


os.register_at_fork(after_in_child=_ids.clear)  # a forked child never repeats its parent's ids


def choose_request_id(incoming: str | None, *, trusted: bool) -> str:
    """The caller's id when the peer is trusted and the id is short and safe, else a new one."""
    if trusted and incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return new_request_id()


SERVER_NAME = "Gatehouse"
"""The ``Server`` header of every response that has none from an upstream: no software or version is named."""


CLIENT_CLOSED_REQUEST = 499
"""The status logged and counted (class ``4xx``) for a request whose client went away before its response was complete."""


def client_left(request: web.BaseRequest) -> bool:
    """True when the client's connection is gone or closing: whatever its request still does is 499."""
    transport = request.transport
    return transport is None or transport.is_closing()


def upstream_error(kind: str, route: Route, refused: HeadTooLarge | None = None) -> UpstreamError:
    """The error (502, or 504 for ``timeout``) for an upstream failure of ``kind`` (connect, timeout, protocol).

    ``refused``: the response head passed one of ``gateway.proxy.limits`` (a ``protocol`` failure);
    logged as ``upstream.refused`` with the limit's text, since only the operator can act on it.
    """
    if kind == "timeout":
        return UpstreamError("timeout", f"route `{route.id}`: the upstream did not answer in time", status=504)
    if kind == "connect":
        return UpstreamError("connect", f"route `{route.id}`: cannot connect to the upstream", status=502)
    if refused is not None:
        _log.warning("upstream.refused", route=route.id, limit=refused.limit, detail=str(refused))
        return UpstreamError("protocol", f"route `{route.id}`: {refused}", status=502)
    return UpstreamError("protocol", f"route `{route.id}`: the upstream broke off the exchange", status=502)
