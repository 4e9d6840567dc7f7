"""Forwarding one admitted request to its upstream, streaming both ways; WebSockets too.

Owns: header rules (hop-by-hop, X-Forwarded-*/Forwarded, identity-header stripping and injection),
forward(), forward_websocket(), upstream_error (the one text per upstream failure, for both lanes) and
the mapping of client errors to it.
Must not import: app, handlers (receives the pooled session, route, target and headers to inject).

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

The exchange itself goes through ``gateway.upstream.send`` (the pooled session's connections without
ClientSession's per-request machinery); WebSockets go through ``ClientSession.ws_connect``.

Bodies stream chunk by chunk; nothing holds a whole body. The request body is counted while it
streams, so a chunked upload over the route's limit fails with 413 even without Content-Length.

A client that goes away (a write to it fails, or its upload breaks off) ends the exchange with
``ConnectionResetError``, whatever the upstream was doing: the request is 499
(``CLIENT_CLOSED_REQUEST``), never an upstream error or a 5xx.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import aiohttp
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.errors import BodyTooLarge, UpstreamError
from gateway.metrics import Metrics, RequestTimer
from gateway.routing import Route
from gateway.target import Target
from gateway.upstream import send
from gateway.upstream_limits import HeadTooLarge

CHUNK_SIZE = 64 * 1024
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
_WS_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol", "sec-websocket-accept"})
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


def connection_named(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Lower-cased header names listed in every Connection header."""
    names: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            names.update(token.strip().lower() for token in value.split(",") if token.strip())
    return frozenset(names)


def _named_in(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """connection_named for a multidict: nothing to scan when it has no Connection header."""
    values = headers.getall("Connection", ())
    return connection_named(("connection", v) for v in values) if values else frozenset()


def _is_hop(name: str, named: frozenset[str]) -> bool:
    return name in HOP_BY_HOP or name.startswith("proxy-") or name in named


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
_WS_HANDSHAKE_B = frozenset(name.encode() for name in _WS_HANDSHAKE)


@lru_cache(maxsize=64)
def _lowered(names: frozenset[str]) -> frozenset[bytes]:
    return frozenset(name.lower().encode() for name in names)


@lru_cache(maxsize=64)
def _folded(names: frozenset[str] | tuple[str, ...]) -> frozenset[bytes]:
    return frozenset(_fold(name.encode("utf-8", "surrogateescape")) for name in names)


_PLAIN, _DROP, _FORWARDING, _FORWARDING_MISSPELT, _MERGED_KIND, _WS, _COOKIE = range(7)
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
    elif folded in _WS_HANDSHAKE_B:
        kind = _WS
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
    websocket: bool = False,
) -> list[bytes]:
    """The header lines to send upstream for a request's raw headers (see the module docstring), in pieces of whole lines (``b"Name: value\\r\\n"``).

    The one implementation of the rules: ``upstream_headers`` wraps it for aiohttp's header
    mapping; the fast lane writes its lines as they are. What a header name is to the rules
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
        elif kind == _WS:
            if websocket:
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


def upstream_headers(
    incoming: CIMultiDictProxy[str] | CIMultiDict[str],
    *,
    peer: str | None,
    trusted: bool,
    scheme: str,
    host: str,
    request_id: str,
    inject: Mapping[str, str] | None = None,
    strip: Collection[str] = (),
    drop_cookies: Collection[str] = (),
    websocket: bool = False,
) -> CIMultiDict[str]:
    """``upstream_header_lines`` for aiohttp's header mapping (the full path and WebSockets)."""
    raw = [(name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape")) for name, value in incoming.items()]
    lines = upstream_header_lines(
        raw, peer=peer, trusted=trusted, scheme=scheme, host=host, request_id=request_id, inject=inject, strip=strip,
        drop_cookies=drop_cookies, websocket=websocket,
    )
    out: CIMultiDict[str] = CIMultiDict()
    for line in b"".join(lines).decode("utf-8", "surrogateescape").split("\r\n"):
        if line:
            name, _, value = line.partition(": ")
            out.add(name, value)
    return out


def _without_cookies(header: bytes, names: frozenset[bytes]) -> bytes:
    kept = [part.strip() for part in header.split(b";") if part.strip() and part.strip().partition(b"=")[0].strip() not in names]
    return b"; ".join(kept)


def without_cookies(header: str, names: Collection[str]) -> str:
    """A `Cookie` header value without the cookies called ``names`` (the others kept in order)."""
    encoded = _without_cookies(header.encode("utf-8", "surrogateescape"), frozenset(n.encode() for n in names))
    return encoded.decode("utf-8", "surrogateescape")


def downstream_headers(incoming: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones, for the client."""
    out: CIMultiDict[str] = CIMultiDict()
    _copy_downstream(incoming, out)
    return out


def _copy_downstream(incoming: CIMultiDictProxy[str] | CIMultiDict[str], out: CIMultiDict[str]) -> None:
    named = _named_in(incoming)
    for name, value in incoming.items():
        lower = name.lower()
        if not (lower in HOP_BY_HOP or lower.startswith("proxy-") or lower in named):
            out.add(name, value)


def is_websocket_upgrade(request: web.Request) -> bool:
    """True for a GET asking to upgrade to WebSocket."""
    if request.method != "GET" or request.headers.get("Upgrade", "").lower() != "websocket":
        return False
    return "upgrade" in connection_named(request.headers.items())


CLIENT_CLOSED_REQUEST = 499
"""The status logged and counted (class ``4xx``) for a request whose client went away before its response was complete."""


def client_left(request: web.BaseRequest) -> bool:
    """True when the client's connection is gone or closing: whatever its request still does is 499."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _upstream_url(route: Route, target: Target) -> URL:
    return URL(route.upstream + target.forward_target, encoded=True)


class _WholeBodyResponse(web.StreamResponse):
    """A streamed response whose head waits for the first body write (or the end), sent with it in one write.

    Only for an upstream response that had fully arrived with its head: a body still streaming
    gets its head sent at once, as StreamResponse does.
    """

    _send_headers_immediately = False


def upstream_error(kind: str, route: Route, refused: HeadTooLarge | None = None) -> UpstreamError:
    """The error (502, or 504 for ``timeout``) for an upstream failure of ``kind`` (connect, timeout, protocol), on either lane.

    ``refused``: the response head passed one of ``gateway.upstream_limits`` (a ``protocol`` failure);
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


def _classify(exc: BaseException, route: Route) -> UpstreamError:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return upstream_error("timeout", route)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return upstream_error("connect", route)
    return upstream_error("protocol", route, exc if isinstance(exc, HeadTooLarge) else None)


async def forward(
    request: web.Request,
    route: Route,
    target: Target,
    *,
    session: aiohttp.ClientSession,
    headers: CIMultiDict[str],
    request_id: str,
    counts: Exchange,
    metrics: Metrics,
) -> web.StreamResponse:
    """Stream the request to the route's upstream and its answer back to the client.

    Raises:
        BodyTooLarge: the body is over the route's limit (by Content-Length, or counted while streaming).
        UpstreamError: connect failure (502), timeout (504) or a broken exchange (502) before the
            response head was sent to the client.
    """
    limit = route.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"route `{route.id}` accepts at most {limit} bytes")
    over_limit = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal over_limit
        async for chunk in request.content.iter_chunked(CHUNK_SIZE):
            counts.bytes_in += len(chunk)
            if counts.bytes_in > limit:
                over_limit = True
                raise BodyTooLarge(f"route `{route.id}` accepts at most {limit} bytes")
            yield chunk

    data = body() if request.body_exists else None
    counts.timer.upstream_begins()
    try:
        upstream = await send(
            session, request.method, route.upstream, target.forward_target, headers, data,
            connect_timeout=route.connect_timeout_s, read_timeout=route.read_timeout_s,
        )
    except BodyTooLarge:
        raise
    except (aiohttp.ClientError, HttpProcessingError, HeadTooLarge, asyncio.TimeoutError, OSError) as exc:
        if over_limit:
            raise BodyTooLarge(f"route `{route.id}` accepts at most {limit} bytes") from None
        if client_left(request):  # e.g. its upload broke off: nothing the upstream did wrong
            raise ConnectionResetError("the client closed the connection") from None
        error = _classify(exc, route)
        metrics.upstream_errors.labels(route=route.id, kind=error.kind).inc()
        raise error from None
    try:
        metrics.child(metrics.upstream_duration, route.id).observe(counts.timer.upstream_took())
        counts.upstream_status = upstream.status
        if over_limit:
            raise BodyTooLarge(f"route `{route.id}` accepts at most {limit} bytes")
        whole = upstream.content.is_eof()  # the whole body is here: head and body leave in one write
        response = (_WholeBodyResponse if whole else web.StreamResponse)(status=upstream.status, reason=upstream.reason)
        _copy_downstream(upstream.headers, response.headers)
        response.headers["X-Request-Id"] = request_id
        await response.prepare(request)
        try:
            if whole:  # already buffered: one read, and head + body + end leave in one write
                buffered = upstream.content.read_nowait()
                counts.bytes_out += len(buffered)
                upstream.release()
                await response.write_eof(buffered)
                return response
            async for chunk in upstream.content.iter_chunked(CHUNK_SIZE):
                counts.bytes_out += len(chunk)
                await response.write(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
            if client_left(request):  # a write to the client failed, or its upload broke off
                raise ConnectionResetError("the client closed the connection") from None
            if over_limit:
                return response
            error = _classify(exc, route)
            metrics.upstream_errors.labels(route=route.id, kind=error.kind).inc()
            _log.warning("upstream.aborted", route=route.id, kind=error.kind)
            if request.transport is not None:
                request.transport.close()  # the client sees a truncated response, never a clean end
            return response
        upstream.release()  # the upstream's part is done: its connection goes back to the pool
        await response.write_eof()
        return response
    finally:
        upstream.close()  # a no-op after release; otherwise the connection is not reusable


async def forward_websocket(
    request: web.Request,
    route: Route,
    target: Target,
    *,
    session: aiohttp.ClientSession,
    headers: CIMultiDict[str],
    counts: Exchange,
    metrics: Metrics,
) -> web.StreamResponse:
    """Open the WebSocket upstream, accept the client's, and relay frames both ways until one closes.

    Raises:
        UpstreamError: the upstream could not be reached or refused the upgrade.
    """
    offered = [p.strip() for v in request.headers.getall("Sec-WebSocket-Protocol", []) for p in v.split(",") if p.strip()]
    try:
        upstream = await session.ws_connect(
            _upstream_url(route, target), headers=headers, protocols=offered, autoping=False, autoclose=True,
            compress=0, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=route.read_timeout_s),
            max_msg_size=16 * 1024 * 1024,
        )
    except aiohttp.WSServerHandshakeError as exc:
        metrics.upstream_errors.labels(route=route.id, kind="protocol").inc()
        raise UpstreamError("protocol", f"route `{route.id}`: the upstream refused the WebSocket upgrade ({exc.status})", status=502) from None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        error = _classify(exc, route)
        metrics.upstream_errors.labels(route=route.id, kind=error.kind).inc()
        raise error from None
    counts.upstream_status = 101
    client = web.WebSocketResponse(
        protocols=(upstream.protocol,) if upstream.protocol else (), autoping=False, autoclose=True,
        compress=False, max_msg_size=16 * 1024 * 1024,
    )
    await client.prepare(request)
    relays = (
        asyncio.create_task(_relay(client, upstream, counts, inbound=True)),
        asyncio.create_task(_relay(upstream, client, counts, inbound=False)),
    )
    try:
        _, pending = await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        if pending:  # one side closed; give the close handshake a moment to cross
            await asyncio.wait(pending, timeout=_WS_CLOSE_GRACE_S)
    finally:
        # Shielded: when the client vanishes and the handler is cancelled, the upstream still gets closed.
        await asyncio.shield(_teardown(relays, upstream, client))
    return client


async def _teardown(relays: tuple[asyncio.Task[None], ...], upstream: aiohttp.ClientWebSocketResponse, client: web.WebSocketResponse) -> None:
    for task in relays:
        task.cancel()
    await asyncio.gather(*relays, return_exceptions=True)
    for end in (upstream, client):
        if not end.closed:
            try:
                async with asyncio.timeout(_WS_CLOSE_GRACE_S):
                    await end.close(code=1001)
            except (asyncio.TimeoutError, ConnectionError, RuntimeError):
                pass


_WS_CLOSE_GRACE_S = 5.0
_WsEnd = aiohttp.ClientWebSocketResponse | web.WebSocketResponse


def _close_code(code: object) -> int:
    if isinstance(code, int) and (code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code <= 4999):
        return code
    return 1000


async def _relay(source: _WsEnd, sink: _WsEnd, counts: Exchange, *, inbound: bool) -> None:
    while True:
        msg = await source.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            size = len(msg.data.encode())
            await sink.send_str(msg.data)
        elif msg.type is aiohttp.WSMsgType.BINARY:
            size = len(msg.data)
            await sink.send_bytes(msg.data)
        elif msg.type is aiohttp.WSMsgType.PING:
            size = 0
            await sink.ping(msg.data)
        elif msg.type is aiohttp.WSMsgType.PONG:
            size = 0
            await sink.pong(msg.data)
        elif msg.type is aiohttp.WSMsgType.CLOSE:
            await sink.close(code=_close_code(msg.data), message=(msg.extra or "").encode()[:123])
            return
        else:  # CLOSING, CLOSED, ERROR
            if not sink.closed:
                await sink.close(code=1011 if msg.type is aiohttp.WSMsgType.ERROR else 1000)
            return
        if inbound:
            counts.bytes_in += size
        else:
            counts.bytes_out += size
