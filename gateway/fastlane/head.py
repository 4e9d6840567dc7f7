"""One request head, parsed for the fast lane: what it asks for, and whether the fast lane may serve it.

Owns: HeadParser (httptools over one connection's request heads), RequestHead (the parsed head, read
by the identity code as it reads an aiohttp request), Peer (the connection's address, scheme and
client certificate, read once per connection), the eligibility rules.
Must not import: app, server, handlers (pure parsing; the lane decides what to do with the result).

The fast lane serves a request only when nothing about it is unusual: a complete ``GET`` head in
HTTP/1.1 with no body (no ``Transfer-Encoding``, no ``Content-Length`` but ``0``), no ``Upgrade``,
no ``Expect``, an origin-form target, and every line within the configured header limits (with a
margin, so that the lane never accepts a head aiohttp would refuse). ``parse`` returns None for
anything else and the connection is handed to aiohttp, which applies every rule of the full path
(including its 400 and 431 answers) to the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from types import MappingProxyType

import httptools
from aiohttp._cookie_helpers import parse_cookie_header
from multidict import CIMultiDict

_LIMIT_MARGIN = 16
"""Bytes kept below aiohttp's limits, so a head at the edge goes to aiohttp to be judged."""


class Peer:
    """What one connection's transport says about its client, read once for all its requests."""

    __slots__ = ("transport", "remote", "scheme", "_peercert", "_fingerprint", "_read")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.remote: str | None = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None
        """The client's address (an aiohttp request's ``remote``)."""
        self.scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        self._peercert: dict[str, object] | None = None
        self._fingerprint: str | None = None
        self._read = False

    @property
    def peercert(self) -> dict[str, object] | None:
        """The verified client certificate (``SSLObject.getpeercert()``), decoded on first use only."""
        if not self._read:
            self._read = True
            ssl_object = self.transport.get_extra_info("ssl_object")
            self._peercert = (ssl_object.getpeercert() or None) if ssl_object is not None else None
            der = ssl_object.getpeercert(binary_form=True) if self._peercert is not None else None
            self._fingerprint = hashlib.sha256(der).hexdigest() if der else None
        return self._peercert

    @property
    def fingerprint(self) -> str | None:
        """SHA-256 of the client certificate's DER (lowercase hex), read with ``peercert``."""
        _ = self.peercert
        return self._fingerprint


class RequestHead:
    """A parsed request head, with the attributes the identity code reads of an aiohttp request."""

    __slots__ = ("method", "raw_path", "headers", "raw_headers", "peer", "keep_alive", "_cookies")

    def __init__(
        self, method: str, raw_path: str, headers: CIMultiDict[str], raw_headers: list[tuple[bytes, bytes]],
        peer: Peer, keep_alive: bool,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.raw_headers = raw_headers
        """The header lines as received (name and value bytes), as aiohttp's ``request.raw_headers``."""
        self.peer = peer
        self.keep_alive = keep_alive
        self._cookies: Mapping[str, str] | None = None

    @property
    def transport(self) -> asyncio.BaseTransport:
        return self.peer.transport

    @property
    def cookies(self) -> Mapping[str, str]:
        """The request's cookies, parsed as aiohttp parses them."""
        if self._cookies is None:
            parsed = parse_cookie_header(self.headers.get("Cookie", ""))
            self._cookies = MappingProxyType({name: morsel.value for name, morsel in parsed})
        return self._cookies


class HeadParser:
    """Parses the request heads of one connection, one complete head (ending in CRLF CRLF) at a time."""

    __slots__ = ("_parser", "_url", "_pairs", "_complete", "_plain", "_keep_alive", "_max_line", "_max_field", "_max_headers")

    def __init__(self, *, max_line: int, max_field: int, max_headers: int) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._pairs: list[tuple[bytes, bytes]] = []
        self._complete = False
        self._plain = False
        self._keep_alive = False
        self._max_line = max_line - _LIMIT_MARGIN
        self._max_field = max_field - _LIMIT_MARGIN
        self._max_headers = max_headers - 1

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._pairs.append((name, value))

    def on_headers_complete(self) -> None:
        # Read here: once the message is complete the parser starts over for the next one.
        parser = self._parser
        self._plain = parser.get_method() == b"GET" and parser.get_http_version() == "1.1" and not parser.should_upgrade()
        self._keep_alive = parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self._complete = True

    def parse(self, head: bytes, peer: Peer) -> RequestHead | None:
        """The head as a RequestHead when the fast lane may serve it, else None.

        After None the parser is in an unknown state: the caller hands the connection over and
        drops this parser.
        """
        self._url = b""
        pairs: list[tuple[bytes, bytes]] = []
        self._pairs = pairs
        self._complete = self._plain = False
        try:
            self._parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # an upgrade is not an error to httptools
            return None
        if not (self._complete and self._plain):
            return None
        url = self._url
        if not url.startswith(b"/") or len(url) > self._max_line or len(pairs) > self._max_headers:
            return None
        if len(head) > self._max_field:  # only then can one header line be over the limit
            for name, value in pairs:
                if len(name) + len(value) + 2 > self._max_field:
                    return None
        headers: CIMultiDict[str] = CIMultiDict(
            [(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")) for name, value in pairs]
        )
        if "Transfer-Encoding" in headers or "Upgrade" in headers or "Expect" in headers:
            return None
        lengths = headers.getall("Content-Length", ())
        if lengths and (len(lengths) > 1 or lengths[0] != "0"):
            return None
        return RequestHead("GET", url.decode("utf-8", "surrogateescape"), headers, pairs, peer, self._keep_alive)
