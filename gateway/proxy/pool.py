"""The one upstream HTTP/1.1 client: keep-alive connections per upstream, and the response parsing on them.

Owns: UpstreamPool (idle connections per upstream, connecting, expiry; one per worker and listener),
UpstreamConnection (one connection: sends a request head and its body as it streams, parses the
response with httptools, then tunnels bytes after a ``101``), upstream_address.
Must not import: app, gateway.serve, gateway.gate.admission (the lane drives these; they report back to their owner).

An UpstreamConnection serves one owner at a time (the lane's client connection whose request it
carries). It does no I/O decisions of its own: parser callbacks only record what arrived (the head,
body pieces, the end), and after each read the owner's ``upstream_progress`` acts on it, so nothing
re-enters the parser. Interim responses (1xx but 101) are kept in ``interim`` for the owner to pass
on; a ``101 Switching Protocols`` makes the connection a tunnel: the bytes after its head, and all
later ones, go to the owner's ``upstream_tunnel``. The response to a HEAD request ends with its head
(its ``Content-Length`` describes the body a GET would get), and such a connection is not reused.
The owner learns when writing to the upstream should pause (``upstream_writable``), so that a
request body streams no faster than the upstream reads it. A response head is measured against ``gateway.proxy.limits`` before the parser sees it. A connection goes back to the pool only when its response ended cleanly and
the upstream allows keep-alive; one that receives bytes while idle, or is idle longer than
``idle_timeout_s``, is closed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol
from urllib.parse import urlsplit

import httptools

from gateway.proxy.limits import HeadMeter, HeadTooLarge

IDLE_TIMEOUT_S = 15.0
"""How long an idle upstream connection is kept (aiohttp's connector keeps them as long)."""
MAX_IDLE_PER_UPSTREAM = 100
_NO_BODY_STATUSES = frozenset({204, 304})


class Owner(Protocol):
    """What an UpstreamConnection reports to (the lane's client connection)."""

    def upstream_progress(self, conn: UpstreamConnection) -> None:
        """Something arrived: a head, body pieces and/or the end (see the connection's fields)."""

    def upstream_lost(self, conn: UpstreamConnection, error: str) -> None:
        """The exchange broke off: ``error`` is ``protocol`` (a malformed response, or ``conn.refused``) or ``closed``."""

    def upstream_writable(self, conn: UpstreamConnection, writable: bool) -> None:
        """Writing to the upstream should pause (False) or may go on (True)."""

    def upstream_tunnel(self, conn: UpstreamConnection, data: bytes) -> None:
        """Bytes from the upstream after its ``101`` (``b""``: the upstream closed the tunnel)."""


@lru_cache(maxsize=256)
def upstream_address(upstream: str) -> tuple[tuple[str, str, int], bytes]:
    """((scheme, host, port), base path as bytes) of a route's upstream URL (validated by the settings)."""
    parts = urlsplit(upstream)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme, parts.hostname or "", port), parts.path.encode("utf-8", "surrogateescape")


class UpstreamConnection(asyncio.Protocol):
    """One connection to an upstream; carries one exchange at a time."""

    __slots__ = (
        "pool", "key", "transport", "owner", "reused", "received", "status", "reason", "headers", "keep_alive",
        "head_ready", "chunks", "complete", "until_close", "has_length", "has_date", "has_server", "connection_named",
        "refused", "interim", "switched", "head_only", "_framed", "_meter", "_parser", "_interim", "_idle_since", "_closed",
    )

    def __init__(self, pool: UpstreamPool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.owner: Owner | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._idle_since = 0.0
        self._closed = False
        self._reset()

    def _reset(self) -> None:
        self.reused = False
        self.received = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        """(name, value, lower-cased name) as received."""
        self.has_length = False
        self.has_date = False
        self.has_server = False
        self.connection_named: frozenset[bytes] = frozenset()
        """Lower-cased header names listed in the response's Connection headers."""
        self.refused: HeadTooLarge | None = None
        """The response limit the head passed, when the exchange was given up for it."""
        self._framed = False
        self._meter = HeadMeter()
        self.keep_alive = False
        self.head_ready = False
        self.chunks: list[bytes] = []
        self.complete = False
        self.until_close = False
        self._interim = False
        self.interim: list[tuple[int, bytes, list[tuple[bytes, bytes, bytes]]]] = []
        """Interim responses (status, reason, headers) not passed on yet; 100 and 101 are never here."""
        self.switched = False
        """The upstream answered 101: the connection is a tunnel now."""
        self.head_only = False

    # --- the exchange ----------------------------------------------------------------------------
    def send(self, owner: Owner, data: bytes, *, reused: bool, head_only: bool = False) -> None:
        """Send one request head (and whatever of its body is at hand) for ``owner``; ``head_only`` for HEAD."""
        self._reset()
        self.owner = owner
        self.reused = reused
        self.head_only = head_only
        assert self.transport is not None  # INVARIANT: only connected connections are handed out
        self.transport.write(data)

    def write(self, data: bytes) -> None:
        """More of the request (body pieces, or tunnelled bytes after a 101)."""
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def write_eof(self) -> None:
        """The client closed its side of a tunnel: half-close ours, when the transport can."""
        transport = self.transport
        if transport is not None and not self._closed and transport.can_write_eof():
            transport.write_eof()

    def release(self) -> None:
        """The owner is done: back to the pool when the response ended cleanly and keep-alive holds, else closed."""
        self.owner = None
        if self.complete and self.keep_alive and not self.until_close and not self._closed:
            self.pool.give_back(self)
        else:
            self.close()

    def close(self) -> None:
        """Close the connection at once (an abandoned exchange leaves it unusable)."""
        self.owner = None
        if not self._closed:
            self._closed = True
            if self.transport is not None:
                self.transport.abort()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- asyncio callbacks -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if self.switched and owner is not None:
            owner.upstream_tunnel(self, data)
            return
        if owner is None or self.complete:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            self.pool.forget(self)
            return
        self.received = True
        if not self._meter.done:
            try:
                self._meter.feed(data)
            except HeadTooLarge as exc:
                self.refused = exc
                self.close()
                owner.upstream_lost(self, "protocol")
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if not self.switched:  # an upgrade we did not ask for, or CONNECT-like framing
                self.close()
                owner.upstream_lost(self, "protocol")
                return
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            owner.upstream_progress(self)
            if data[offset:] and self.owner is owner:
                owner.upstream_tunnel(self, data[offset:])
            return
        except httptools.HttpParserError:
            if not self.complete:
                self.close()
                owner.upstream_lost(self, "protocol")
                return
            self.keep_alive = False  # bytes after the end of the response: never reuse this connection
        owner.upstream_progress(self)

    def eof_received(self) -> bool | None:
        if self.switched and self.owner is not None:
            self.owner.upstream_tunnel(self, b"")
            return True  # a tunnel may still carry the client's bytes the other way
        return None  # close the transport; connection_lost reports

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True
        self.pool.forget(self)
        owner = self.owner
        if owner is None:
            return
        if self.switched:
            self.owner = None
            owner.upstream_tunnel(self, b"")
            return
        if self.head_ready and self.until_close and not self.complete:
            self.complete = True  # a body delimited by the end of the connection has ended
            owner.upstream_progress(self)
            return
        if not self.complete:
            owner.upstream_lost(self, "closed")

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_writable(self, False)

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_writable(self, True)

    # --- httptools callbacks (record only) -------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        self.headers.append((name, value, lower))
        if lower == b"content-length":
            self.has_length = self._framed = True
        elif lower == b"date":
            self.has_date = True
        elif lower == b"server":
            self.has_server = True
        elif lower == b"transfer-encoding":
            self._framed = True
        elif lower == b"connection":
            self.connection_named |= frozenset(t.strip().lower() for t in value.split(b",")) - {b""}

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101:
            self.switched = True
        elif 100 <= status < 200:  # interim: 100 is Gatehouse's to send (it answers Expect), others are passed on
            self._interim = True
            if status != 100:
                self.interim.append((status, self.reason, self.headers))
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive() and not self.head_only and not self.switched
        if status not in _NO_BODY_STATUSES and not self.head_only and not self.switched:
            self.until_close = not self._framed
        self.head_ready = True
        if self.head_only:
            self.complete = True  # a HEAD response has no body, whatever its Content-Length says

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self.reason = b""
            self.headers = []
            self.has_length = self.has_date = self.has_server = self._framed = False
            self.connection_named = frozenset()
            return
        if not self.switched:
            self.complete = True


class UpstreamPool:
    """Idle keep-alive connections per upstream (scheme, host, port), most recently used first."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self._loop = loop
        self._idle: dict[tuple[str, str, int], list[UpstreamConnection]] = {}
        self._idle_timeout = idle_timeout_s
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    def take(self, key: tuple[str, str, int]) -> UpstreamConnection | None:
        """An idle connection to ``key``, or None when there is none."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def give_back(self, conn: UpstreamConnection) -> None:
        """Keep ``conn`` for the next request to its upstream (or close it when the pool is full or closed)."""
        idle = self._idle.setdefault(conn.key, [])
        if self._closed or len(idle) >= MAX_IDLE_PER_UPSTREAM:
            conn.close()
            return
        conn._idle_since = self._loop.time()
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """Drop a closed connection from the idle list."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def connect(self, key: tuple[str, str, int]) -> UpstreamConnection:
        """A new connection to ``key``.

        Raises:
            OSError, ssl.SSLError: the upstream cannot be reached or its TLS handshake failed.
        """
        scheme, host, port = key
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        factory: Callable[[], UpstreamConnection] = lambda: UpstreamConnection(self, key)  # noqa: E731
        _, conn = await self._loop.create_connection(factory, host, port, ssl=tls)
        return conn

    def expire(self, now: float) -> None:
        """Close connections idle for longer than the idle timeout."""
        horizon = now - self._idle_timeout
        for idle in self._idle.values():
            while idle and idle[0]._idle_since < horizon:
                idle.pop(0).close()

    def close(self) -> None:
        """Close every idle connection; connections given back later are closed too."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
            idle.clear()
